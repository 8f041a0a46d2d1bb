"""A picture to eyeball a plane calibration: the undistorted frame with a 10 mm grid on it.

If the grid lines run along the board's square edges (every 10 mm) and stay straight, the
lens model and the homography agree with the scene.
"""

from __future__ import annotations

import cv2
import numpy as np

from cellinspect.calibration.camera import undistort_image
from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.plane import PlaneCalibration, mm_to_pixel, pixel_to_mm
from cellinspect.entities import ImageU8


def plane_report_image(
    image: ImageU8, camera: CameraCalibration, plane: PlaneCalibration, step_mm: float = 10.0
) -> ImageU8:
    """Undistorted `image` with plane grid lines every `step_mm` and the origin marked."""
    out = undistort_image(image, camera).copy()
    w, h = plane.image_size
    corners = pixel_to_mm([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], plane)
    lo = np.floor(corners.min(axis=0) / step_mm) * step_mm
    hi = np.ceil(corners.max(axis=0) / step_mm) * step_mm
    ts = np.linspace(0.0, 1.0, 60)
    for axis in (0, 1):
        for value in np.arange(lo[axis], hi[axis] + step_mm / 2, step_mm):
            line = np.zeros((ts.size, 2))
            line[:, axis] = value
            other = 1 - axis
            line[:, other] = lo[other] + ts * (hi[other] - lo[other])
            px = mm_to_pixel(line, plane)
            colour = (0, 0, 255) if abs(value) < 1e-9 else (0, 200, 255)
            cv2.polylines(out, [np.round(px).astype(np.int32)], False, colour, 1, cv2.LINE_AA)
    text = f"{plane.calibration_id}: rms {plane.residual_rms_mm:.3f} mm, grid {step_mm:g} mm"
    cv2.rectangle(out, (0, 0), (w, 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.asarray(out, dtype=np.uint8)
