"""Where the part lies in the ideal image: per-pixel polar coordinates and feature positions.

Shared by the texture, the defects and the composition so they all agree to the sub-pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cellinspect.datagen.camera import DEFAULT_CAMERA, VirtualCamera
from cellinspect.datagen.part import (
    BOLT_HOLE_COUNT,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    THICKNESS_MM,
    WORKING_DISTANCE_MM,
    PartSpec,
)
from cellinspect.datagen.texture import pixel_grid

F32 = npt.NDArray[np.float32]


def disc_alpha(dist_px: F32, radius_px: float) -> F32:
    """Anti-aliased coverage of a disc, given each pixel's distance to its centre."""
    return np.asarray(np.clip(radius_px + 0.5 - dist_px, 0.0, 1.0), dtype=np.float32)


@dataclass(frozen=True)
class Geometry:
    """The part's pose on the ideal image grid, with fields every renderer needs."""

    spec: PartSpec
    ppm: float
    theta: float  # radians, counter-clockwise on screen
    dx: F32  # pixel offsets from the part's axis
    dy: F32
    r_mm: F32  # distance from the axis in mm
    cos_phi: F32  # direction of each pixel seen from the axis (on-screen angle)
    sin_phi: F32
    parallax: float  # how much smaller the underside of the part projects than its top face
    principal: tuple[float, float]

    @classmethod
    def of(cls, spec: PartSpec, camera: VirtualCamera = DEFAULT_CAMERA) -> Geometry:
        xs, ys = pixel_grid(IMAGE_WIDTH, IMAGE_HEIGHT)
        dx = xs - np.float32(spec.centre_x_px)
        dy = ys - np.float32(spec.centre_y_px)
        r_px = np.hypot(dx, dy)
        safe = np.maximum(r_px, np.float32(1e-3))
        distance = WORKING_DISTANCE_MM / spec.scale
        return cls(
            spec=spec,
            ppm=spec.px_per_mm,
            theta=math.radians(spec.angle_deg),
            dx=dx,
            dy=dy,
            r_mm=(r_px / np.float32(spec.px_per_mm)).astype(np.float32),
            cos_phi=(dx / safe).astype(np.float32),
            sin_phi=(-dy / safe).astype(np.float32),
            parallax=distance / (distance + THICKNESS_MM),
            principal=(camera.cx, camera.cy),
        )

    def px(self, rho_mm: float, alpha_rad: float) -> tuple[float, float]:
        """Ideal-image pixel of the point at radius `rho_mm`, angle `alpha_rad` from hole 0."""
        a = self.theta + alpha_rad
        return (
            self.spec.centre_x_px + self.ppm * rho_mm * math.cos(a),
            self.spec.centre_y_px - self.ppm * rho_mm * math.sin(a),
        )

    def hole_angle(self, k: int) -> float:
        """Angle of bolt hole `k` from hole 0 in the part frame (radians)."""
        return 2.0 * math.pi * k / BOLT_HOLE_COUNT

    def hole_centre(self, k: int) -> tuple[float, float]:
        return self.px(self.spec.bolt_circle_diameter_mm / 2.0, self.hole_angle(k))

    def underside(self, x: float, y: float) -> tuple[float, float]:
        """Where a point on the part's underside below (x, y) on the top face projects."""
        px, py = self.principal
        return px + (x - px) * self.parallax, py + (y - py) * self.parallax

    def distance_px(self, x: float, y: float) -> F32:
        """Every pixel's distance to the ideal-image point (x, y)."""
        xs, ys = pixel_grid(IMAGE_WIDTH, IMAGE_HEIGHT)
        return np.asarray(np.hypot(xs - np.float32(x), ys - np.float32(y)), dtype=np.float32)

    def radius_px(self, diameter_mm: float) -> float:
        return diameter_mm / 2.0 * self.ppm
