"""Where the robot should pick a part: image -> conveyor plane (mm) -> robot base (mm, deg).

The plane calibration maps undistorted pixels to millimetres on the belt; its homography also
fixes the board's pose in the camera frame (H⁻¹ = K [r1 r2 t] up to scale), so a point on
the plane, lifted to the part's height, can be expressed in the camera frame and, with an
eye-to-hand calibration (camera -> robot base), in the robot's base frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.plane import PlaneCalibration, pixel_to_mm
from cellinspect.entities import ImageU8
from cellinspect.errors import CalibrationError

F64 = npt.NDArray[np.float64]


def board_to_camera(plane: PlaneCalibration, camera: CameraCalibration) -> F64:
    """4x4 pose of the plane's (board) frame in the camera frame, from the homography.

    The homography maps the calibration's own undistorted pixels (camera matrix K) to board
    mm, so K⁻¹ H⁻¹ = λ [r1 r2 t]; the rotation is made orthonormal by SVD.
    """
    plane.check_fits(camera)
    m = np.linalg.inv(camera.camera_matrix) @ np.linalg.inv(plane.homography)
    scale = 1.0 / np.linalg.norm(m[:, 0])
    r1, r2, t = m[:, 0] * scale, m[:, 1] * scale, m[:, 2] * scale
    if t[2] < 0:  # the board lies in front of the camera
        r1, r2, t = -r1, -r2, -t
    u, _, vt = np.linalg.svd(np.column_stack([r1, r2, np.cross(r1, r2)]))
    rot = u @ vt
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = t
    return pose


def plane_to_camera(pose: F64, x_mm: float, y_mm: float, height_mm: float) -> F64:
    """A point of the plane frame, `height_mm` above the belt towards the camera, in camera mm."""
    camera_in_board = -pose[:3, :3].T @ pose[:3, 3]
    towards_camera = math.copysign(1.0, float(camera_in_board[2]))
    point = np.array([x_mm, y_mm, towards_camera * height_mm, 1.0])
    return np.asarray((pose @ point)[:3], dtype=np.float64)


@dataclass(frozen=True)
class PickPose:
    x_mm: float
    y_mm: float
    angle_deg: float
    frame: str  # "plane" (conveyor plane of the plane calibration) or "robot_base"


def largest_blob_moments(image: ImageU8) -> dict[str, float] | None:
    """Image moments of the largest bright region (Otsu); None if there is none."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    _, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    moments: dict[str, float] = cv2.moments(max(contours, key=cv2.contourArea))
    return moments if moments["m00"] > 0 else None


def largest_blob_centre(image: ImageU8) -> tuple[float, float] | None:
    """Centroid of the largest bright region (Otsu); None if there is none."""
    m = largest_blob_moments(image)
    if m is None:
        return None
    return m["m10"] / m["m00"], m["m01"] / m["m00"]


@dataclass(frozen=True)
class PickLocator:
    """Turns a part's centre in the station's undistorted frame into a pick pose.

    `plane` must already be expressed for the station's undistorted pixel grid (see
    `plane_for_camera_matrix`); `pose` is `board_to_camera` of the original plane.
    """

    plane: PlaneCalibration
    pose: F64
    camera_to_base: F64 | None
    height_mm: float

    def from_plane_mm(self, x_mm: float, y_mm: float, angle_deg: float = 0.0) -> PickPose:
        if self.camera_to_base is None:
            return PickPose(x_mm, y_mm, angle_deg, "plane")
        in_camera = plane_to_camera(self.pose, x_mm, y_mm, self.height_mm)
        in_base = self.camera_to_base @ np.append(in_camera, 1.0)
        # the plane's x axis seen from the base gives the angle offset between the frames
        axes = self.camera_to_base[:3, :3] @ self.pose[:3, :3]
        offset = math.degrees(math.atan2(axes[1, 0], axes[0, 0]))
        return PickPose(float(in_base[0]), float(in_base[1]), angle_deg + offset, "robot_base")

    def locate(self, undistorted: ImageU8) -> PickPose | None:
        """Pick pose of the largest bright part in the undistorted frame (None: no part)."""
        centre = largest_blob_centre(undistorted)
        if centre is None:
            return None
        ((x, y),) = pixel_to_mm(np.array([centre]), self.plane, self.height_mm)
        return self.from_plane_mm(float(x), float(y))


def check_eye_to_hand(mode: str, path: object) -> None:
    if mode != "eye_to_hand":
        raise CalibrationError(
            f"{path}: pick poses need an eye-to-hand calibration (fixed camera -> robot base), "
            f"this file is {mode}"
        )
