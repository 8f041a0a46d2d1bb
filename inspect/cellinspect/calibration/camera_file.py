"""Camera calibration files: OpenCV FileStorage YAML, read and written in one place.

Keys: calibration_id, image_width, image_height, camera_matrix, distortion_coefficients,
rms_reprojection_error, per_image_errors, board, created. The file's sha256 and id are
recorded in every inspection result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.errors import CalibrationError

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CameraCalibration:
    """Intrinsics and distortion of one camera at one resolution."""

    calibration_id: str
    image_size: tuple[int, int]  # (width, height)
    camera_matrix: F64
    dist_coeffs: F64
    rms_error: float = 0.0
    per_image_errors: tuple[float, ...] = ()
    board: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    sha256: str = ""
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.camera_matrix.shape != (3, 3):
            raise CalibrationError(
                f"{self.path or self.calibration_id}: camera_matrix must be 3x3, "
                f"got {self.camera_matrix.shape}"
            )
        if self.dist_coeffs.size not in (4, 5, 8, 12, 14):
            raise CalibrationError(
                f"{self.path or self.calibration_id}: distortion_coefficients must have "
                f"4, 5, 8, 12 or 14 values, got {self.dist_coeffs.size}"
            )
        if self.image_size[0] <= 0 or self.image_size[1] <= 0:
            raise CalibrationError(
                f"{self.path or self.calibration_id}: bad image size {self.image_size}"
            )

    def check_fits(self, width: int, height: int, what: str = "camera") -> None:
        """Refuse a calibration made for another resolution than the frames have."""
        if (width, height) != self.image_size:
            raise CalibrationError(
                f"{self.path or self.calibration_id}: calibrated for "
                f"{self.image_size[0]}x{self.image_size[1]}, but the {what} gives {width}x{height}"
            )


def _read_mat(fs: cv2.FileStorage, key: str, path: Path) -> F64:
    node = fs.getNode(key)
    if node.empty():
        raise CalibrationError(f"{path}: missing key '{key}'")
    mat = node.mat()
    if mat is None:
        raise CalibrationError(f"{path}: key '{key}' is not a matrix")
    return np.asarray(mat, dtype=np.float64)


def load_camera_calibration(path: Path | str) -> CameraCalibration:
    """Read a calibration file; every problem names the file and the key."""
    file = Path(path)
    if not file.is_file():
        raise CalibrationError(f"{file}: calibration file not found")
    data = file.read_bytes()
    try:
        fs = cv2.FileStorage(str(file), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as err:  # some broken YAML surfaces as SystemError
        raise CalibrationError(f"{file}: not an OpenCV calibration file: {err}") from err
    try:
        if not fs.isOpened():
            raise CalibrationError(f"{file}: cannot open as OpenCV FileStorage")
        width = int(fs.getNode("image_width").real())
        height = int(fs.getNode("image_height").real())
        k = _read_mat(fs, "camera_matrix", file)
        dist = _read_mat(fs, "distortion_coefficients", file).ravel()
        cal_id = fs.getNode("calibration_id").string() or file.stem
        per_image_node = fs.getNode("per_image_errors")
        per_image = (
            tuple(float(v) for v in per_image_node.mat().ravel())
            if not per_image_node.empty() and per_image_node.mat() is not None
            else ()
        )
        return CameraCalibration(
            calibration_id=cal_id,
            image_size=(width, height),
            camera_matrix=k,
            dist_coeffs=dist,
            rms_error=float(fs.getNode("rms_reprojection_error").real()),
            per_image_errors=per_image,
            board=fs.getNode("board").string(),
            created=fs.getNode("created").string(),
            sha256=hashlib.sha256(data).hexdigest(),
            path=file,
        )
    finally:
        fs.release()


def save_camera_calibration(cal: CameraCalibration, path: Path | str) -> Path:
    """Write a calibration file that OpenCV (and load_camera_calibration) can read back."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fs = cv2.FileStorage(str(file), cv2.FILE_STORAGE_WRITE)
    try:
        fs.write("calibration_id", cal.calibration_id)
        fs.write("created", cal.created)
        fs.write("board", cal.board)
        fs.write("image_width", cal.image_size[0])
        fs.write("image_height", cal.image_size[1])
        fs.write("camera_matrix", cal.camera_matrix)
        fs.write("distortion_coefficients", cal.dist_coeffs.reshape(1, -1))
        fs.write("rms_reprojection_error", float(cal.rms_error))
        if cal.per_image_errors:
            fs.write("per_image_errors", np.asarray(cal.per_image_errors, dtype=np.float64))
    finally:
        fs.release()
    return file
