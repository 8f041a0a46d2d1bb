"""Render one part: belt, turned flange, its defect, light, then the lens and the sensor.

The scene is drawn as the ideal pinhole image, passed through the virtual camera's lens
distortion (datagen.camera.distort_image), and only then gets vignetting and sensor noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.datagen.camera import DEFAULT_CAMERA, VirtualCamera, distort_image
from cellinspect.datagen.defects import MASK_BEYOND_FACE, PAINTERS, Layers
from cellinspect.datagen.geometry import F32, Geometry, disc_alpha
from cellinspect.datagen.part import (
    HUB_DIAMETER_MM,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    INDEX_MARK_DIAMETER_MM,
    INDEX_MARK_RADIUS_MM,
    STREAM_DEFECT,
    STREAM_NOISE,
    STREAM_TEXTURE,
    PartSpec,
    part_rng,
)
from cellinspect.datagen.texture import (
    LIGHT_DIRECTION_DEG,
    LIGHT_JITTER_DEG,
    belt,
    illumination,
    pixel_grid,
    ring_profile,
    sample_profiles,
    sensor,
    vignette,
)
from cellinspect.entities import ImageU8

CHAMFER_MM = 0.45
BELT_TINT = np.array([1.04, 1.0, 0.96], dtype=np.float32)  # BGR: black rubber, a hint of blue
STEEL_TINT = np.array([1.02, 1.0, 0.97], dtype=np.float32)


@dataclass(frozen=True)
class RenderedPart:
    """A rendered frame with its truth: where the defect is, in the distorted frame."""

    spec: PartSpec
    image: ImageU8
    defect_mask: npt.NDArray[np.uint8]  # HxW, 255 where the defect is; all 0 for good parts

    @property
    def defect_bbox(self) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) of the defect in the distorted frame, or None for a good part."""
        ys, xs = np.nonzero(self.defect_mask)
        if xs.size == 0:
            return None
        x0, y0 = int(xs.min()), int(ys.min())
        return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def _turned_face(rng: np.random.Generator, geom: Geometry, light: float) -> F32:
    """Grey level of the machined top face: tool rings, the turning sheen, hub step, chamfers."""
    spec = geom.spec
    r = geom.r_mm
    cos_l, sin_l = math.cos(light), math.sin(light)
    to_light = geom.cos_phi * np.float32(cos_l) + geom.sin_phi * np.float32(sin_l)
    # cos(2 (phi - light)): the bow-tie highlight every turned face shows under one light.
    sheen = 2.0 * to_light * to_light - 1.0
    outer, hub = spec.outer_diameter_mm / 2, HUB_DIAMETER_MM / 2
    base = 0.60 + rng.uniform(-0.03, 0.03)
    face = ring_profile(rng, outer + 1.0)
    hub_rings = ring_profile(rng, outer + 1.0)
    is_hub = (r < hub).astype(np.float32)
    rings = sample_profiles(face, hub_rings, r, hub)
    sheen_amp = rng.uniform(0.08, 0.13)
    metal = base + rings + sheen_amp * sheen * (1.0 - 0.35 * is_hub) + 0.04 * is_hub
    # Hub step: a thin highlight on the side toward the light, a shadow line on the other.
    step = np.exp(-0.5 * ((r - hub) * geom.ppm / 0.9) ** 2)
    metal += 0.22 * step * to_light
    # Chamfers: outer one faces outward, bore one faces the axis.
    w = CHAMFER_MM
    outer_ch = np.clip((r - (outer - w)) / w * 4.0, 0.0, 1.0)
    metal = metal * (1 - outer_ch) + (0.66 + 0.22 * to_light) * outer_ch
    mark_x, mark_y = geom.px(INDEX_MARK_RADIUS_MM, 0.0)
    mark_r = INDEX_MARK_DIAMETER_MM / 2 * geom.ppm
    x0, y0 = int(mark_x - mark_r - 2), int(mark_y - mark_r - 2)
    x1, y1 = int(mark_x + mark_r + 3), int(mark_y + mark_r + 3)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    mark = disc_alpha(np.hypot(xx - np.float32(mark_x), yy - np.float32(mark_y)), mark_r)
    metal[y0:y1, x0:x1] *= 1.0 - 0.45 * mark
    contrast = rng.uniform(0.9, 1.1)
    brightness = rng.uniform(-0.03, 0.03)
    metal = (metal - 0.6) * contrast + 0.6 + brightness
    return np.asarray(metal, dtype=np.float32)


def _opening(
    geom: Geometry,
    centre: tuple[float, float],
    radius: float,
    light: float,
    layers: Layers,
    out: tuple[F32, F32],
) -> None:
    """Cut a through hole at `centre`: add its coverage to out[0], the belt-visible part to out[1].

    The rest of the hole shows its wall (the underside projects smaller, toward the principal
    point). The chamfer around the hole is shaded into the metal in place. Work stays inside
    the hole's bounding box, which keeps a render fast.
    """
    x, y = centre
    reach = radius + CHAMFER_MM * geom.ppm + 2.0
    h, w = layers.metal.shape
    x0, x1 = max(0, int(x - reach)), min(w, int(x + reach) + 2)
    y0, y1 = max(0, int(y - reach)), min(h, int(y + reach) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ox, oy = xx - np.float32(x), yy - np.float32(y)
    dist = np.hypot(ox, oy)
    hole = disc_alpha(dist, radius)
    ux, uy = geom.underside(x, y)
    through = hole * disc_alpha(
        np.hypot(xx - np.float32(ux), yy - np.float32(uy)), radius * geom.parallax
    )
    band = CHAMFER_MM * geom.ppm
    rim = np.clip((radius + band - dist) / band, 0.0, 1.0) * (1.0 - hole)
    # A hole's chamfer faces its axis: bright on the side away from the light.
    safe = np.maximum(dist, np.float32(1e-3))
    facing = (-ox * np.float32(math.cos(light)) + oy * np.float32(math.sin(light))) / safe
    metal = layers.metal[y0:y1, x0:x1]
    metal[...] = metal * (1 - rim) + (0.50 + 0.28 * facing) * rim
    out[0][y0:y1, x0:x1] += hole
    out[1][y0:y1, x0:x1] += through


@functools.cache
def _beyond_ideal(camera: VirtualCamera = DEFAULT_CAMERA) -> F32:
    """Weight of frame pixels whose ray leaves the ideal image (the lens sees wider than it).

    distort_image repeats the ideal image's border there; the renderer lays fresh belt over
    those pixels instead, so the frame edges show texture and not smeared rows.
    """
    w, h = camera.width, camera.height
    xs, ys = pixel_grid(w, h)
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
    k = camera.camera_matrix
    src = cv2.undistortPoints(pts, k, camera.dist_coeffs, P=k).reshape(h, w, 2)
    outside = (src[..., 0] < 0) | (src[..., 0] > w - 1) | (src[..., 1] < 0) | (src[..., 1] > h - 1)
    grown = cv2.dilate(outside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    weight = np.asarray(cv2.GaussianBlur(grown, (0, 0), 1.0), dtype=np.float32)[..., None]
    weight.setflags(write=False)
    return weight


def _shadow(part_alpha: F32, light: float) -> F32:
    """Soft shadow the part casts on the belt, offset away from the light."""
    shift = np.array(
        [[1, 0, -2.5 * math.cos(light)], [0, 1, 2.5 * math.sin(light)]], dtype=np.float32
    )
    h, w = part_alpha.shape
    moved = cv2.warpAffine(part_alpha, shift, (w, h), borderValue=0.0)
    return np.asarray(cv2.GaussianBlur(moved, (0, 0), 3.5), dtype=np.float32)


def _compose(
    spec: PartSpec, rng: np.random.Generator, geom: Geometry, layers: Layers, belt_grey: F32
) -> tuple[ImageU8, F32, F32]:
    """Lay the part with its openings over the belt, under the station's uneven light.

    Returns the ideal BGR image, the coverage of the top face (where a defect can be seen) and
    belt texture for the rim of the frame that lies beyond the ideal image.
    """
    light = math.atan2(-layers.light[1], layers.light[0])
    hole = np.zeros_like(layers.metal)
    through = np.zeros_like(layers.metal)
    spots = [(spec.centre_x_px, spec.centre_y_px, geom.radius_px(spec.bore_diameter_mm))]
    hole_r = geom.radius_px(spec.hole_diameter_mm)
    spots += [(*geom.hole_centre(k), hole_r) for k in sorted(layers.drilled)]
    for x, y, radius in spots:
        _opening(geom, (x, y), radius, light, layers, (hole, through))
    wall_grey = np.float32(0.30 + rng.uniform(-0.03, 0.03))
    lit = illumination(rng, IMAGE_WIDTH, IMAGE_HEIGHT)
    pa = layers.part_alpha
    # Grey layers, weighted by coverage and lit, then tinted per channel: steel and belt.
    face = pa * (1.0 - hole)
    steel_top = np.clip(layers.metal, 0.0, 1.2) * face * lit
    steel_wall = wall_grey * pa * (hole - through) * lit
    shadowed = belt_grey * (1.0 - 0.45 * _shadow(pa, light))
    rubber = (shadowed * (1.0 - pa) + belt_grey * 0.35 * pa * through) * lit
    channels = []
    for c in range(3):
        top = steel_top
        if layers.stain_alpha is not None:
            top = steel_top * (1.0 - layers.stain_alpha * (1.0 - layers.stain_transmission[c]))
        value = STEEL_TINT[c] * (top + steel_wall) + BELT_TINT[c] * rubber
        channels.append(np.clip(value * 255.0 + 0.5, 0, 255).astype(np.uint8))
    ideal = np.dstack(channels)
    # Belt for the frame's rim beyond the ideal image: the same texture turned half round.
    far = (belt_grey[::-1, ::-1] * lit)[..., None] * BELT_TINT * 255.0
    return ideal, face, far.astype(np.float32)


def _render(spec: PartSpec, with_truth: bool) -> tuple[ImageU8, npt.NDArray[np.uint8]]:
    geom = Geometry.of(spec)
    tex = part_rng(spec.seed, spec.index, STREAM_TEXTURE)
    belt_grey = belt(tex, IMAGE_WIDTH, IMAGE_HEIGHT)
    light = math.radians(LIGHT_DIRECTION_DEG + tex.uniform(-LIGHT_JITTER_DEG, LIGHT_JITTER_DEG))
    metal = _turned_face(tex, geom, light)
    outline = geom.radius_px(spec.outer_diameter_mm)
    part_alpha = disc_alpha(geom.r_mm * np.float32(geom.ppm), outline)
    layers = Layers(metal=metal, part_alpha=part_alpha, light=(math.cos(light), -math.sin(light)))
    mask = np.zeros_like(metal)
    if not spec.is_good:
        mask = PAINTERS[spec.label](part_rng(spec.seed, spec.index, STREAM_DEFECT), geom, layers)
    ideal, face, far = _compose(spec, tex, geom, layers, belt_grey)
    beyond = _beyond_ideal()
    lens = distort_image(ideal).astype(np.float32) * (1.0 - beyond) + far * beyond
    cam = DEFAULT_CAMERA
    noise = part_rng(spec.seed, spec.index, STREAM_NOISE)
    image = sensor(noise, lens, vignette(cam.width, cam.height, cam.cx, cam.cy))
    truth = np.zeros(image.shape[:2], dtype=np.uint8)
    if with_truth and not spec.is_good:
        if spec.label not in MASK_BEYOND_FACE:
            mask *= face
        warped = distort_image(((mask > 0.5) * 255).astype(np.uint8))
        truth = ((warped > 127) * 255).astype(np.uint8)
    return image, truth


def render_part_truth(spec: PartSpec) -> RenderedPart:
    """Render a part and the mask of its defect, both as the distorted camera frame shows them."""
    image, truth = _render(spec, with_truth=True)
    return RenderedPart(spec=spec, image=image, defect_mask=truth)


def render_part(spec: PartSpec) -> ImageU8:
    """The camera frame of one part: BGR, HxWx3 uint8, with the virtual lens's distortion."""
    return _render(spec, with_truth=False)[0]
