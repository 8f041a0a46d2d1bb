"""The project's virtual camera: known intrinsics and lens distortion.

Sample parts and calibration boards are rendered through this camera, so the shipped
calibration can be checked against the truth and undistortion has real work to do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.entities import ImageU8


@dataclass(frozen=True, slots=True)
class VirtualCamera:
    """A pinhole camera with OpenCV's (k1, k2, p1, p2, k3) distortion model."""

    width: int = 320
    height: int = 320
    fx: float = 420.0
    fy: float = 420.0
    cx: float = 161.5
    cy: float = 158.5
    dist: tuple[float, float, float, float, float] = field(
        default=(-0.18, 0.06, 0.0008, -0.0005, 0.0)
    )

    @property
    def camera_matrix(self) -> npt.NDArray[np.float64]:
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def dist_coeffs(self) -> npt.NDArray[np.float64]:
        return np.array(self.dist, dtype=np.float64)


DEFAULT_CAMERA = VirtualCamera()


@functools.cache
def _distortion_maps(
    camera: VirtualCamera,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """For each distorted output pixel, where it comes from in the ideal image (computed once)."""
    w, h = camera.width, camera.height
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
    k = camera.camera_matrix
    ideal_pts = cv2.undistortPoints(pts, k, camera.dist_coeffs, P=k).reshape(h, w, 2)
    map_x = np.ascontiguousarray(ideal_pts[..., 0], dtype=np.float32)
    map_y = np.ascontiguousarray(ideal_pts[..., 1], dtype=np.float32)
    map_x.setflags(write=False)
    map_y.setflags(write=False)
    return map_x, map_y


def distort_image(ideal: ImageU8, camera: VirtualCamera = DEFAULT_CAMERA) -> ImageU8:
    """Render what the real lens would show, given the ideal (pinhole) image of the same size.

    For every pixel of the distorted output we find where it comes from in the ideal image
    (undistortPoints with P=K maps distorted pixels to ideal pixels) and sample there.
    """
    h, w = ideal.shape[:2]
    if (w, h) != (camera.width, camera.height):
        raise ValueError(f"ideal image is {w}x{h}, camera is {camera.width}x{camera.height}")
    map_x, map_y = _distortion_maps(camera)
    out = cv2.remap(ideal, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.uint8)
