"""The conveyor plane: a homography from undistorted pixels to millimetres on the belt.

Undistorted pixels are those of ``undistort_image`` (cv2.undistort with the calibration's own
camera matrix). After undistortion, a plane seen by a pinhole camera maps to the image by a
homography, so a board lying on the belt fixes the mapping for every point of the belt.

The plane frame is the board's frame shifted by ``board_origin_mm``: origin where the board's
first inner corner would be at ``(0, 0)``, x along the board's columns, y along its rows,
millimetres. The file also keeps the camera centre in that frame (x, y, height above the belt),
so a feature lying `h` mm above the belt (the top face of a part) can be measured correctly.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.calibration.board import BoardSpec, detect_board
from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.storage import open_for_reading
from cellinspect.entities import ImageU8
from cellinspect.errors import CalibrationError

F64 = npt.NDArray[np.float64]
# undistortPoints' default of 5 iterations is short for strong lenses; converge instead.
_POINT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)


@dataclass(frozen=True)
class PlaneCalibration:
    """Undistorted pixel -> plane millimetres, tied to the camera calibration it was made with."""

    calibration_id: str
    homography: F64  # 3x3, undistorted pixels -> mm
    image_size: tuple[int, int]  # (width, height)
    camera_calibration_id: str
    camera_sha256: str
    residual_rms_mm: float
    residual_max_mm: float
    camera_position_mm: F64  # (x, y, height above the plane)
    board: str = ""
    points: int = 0
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    sha256: str = ""
    path: Path | None = None

    def __post_init__(self) -> None:
        where = self.path or self.calibration_id
        if self.homography.shape != (3, 3):
            raise CalibrationError(f"{where}: homography must be 3x3, got {self.homography.shape}")
        if not np.all(np.isfinite(self.homography)) or abs(np.linalg.det(self.homography)) < 1e-15:
            raise CalibrationError(f"{where}: homography is singular or not finite")
        if self.camera_position_mm.shape != (3,):
            raise CalibrationError(
                f"{where}: camera_position_mm must have 3 values, "
                f"got {self.camera_position_mm.size}"
            )

    def check_fits(self, camera: CameraCalibration) -> None:
        """Refuse a plane made with another camera calibration or for another resolution."""
        where = self.path or self.calibration_id
        if camera.image_size != self.image_size:
            raise CalibrationError(
                f"{where}: plane calibrated at {self.image_size[0]}x{self.image_size[1]}, "
                f"camera calibration {camera.calibration_id} is "
                f"{camera.image_size[0]}x{camera.image_size[1]}"
            )
        if camera.calibration_id != self.camera_calibration_id:
            raise CalibrationError(
                f"{where}: made with camera calibration '{self.camera_calibration_id}', "
                f"but '{camera.calibration_id}' is in use"
            )
        if self.camera_sha256 and camera.sha256 and camera.sha256 != self.camera_sha256:
            raise CalibrationError(
                f"{where}: camera calibration '{camera.calibration_id}' has changed since the "
                f"plane was calibrated (sha256 {camera.sha256[:12]}, expected "
                f"{self.camera_sha256[:12]}); calibrate the plane again"
            )


def plane_for_camera_matrix(
    plane: PlaneCalibration, camera: CameraCalibration, new_camera_matrix: npt.ArrayLike
) -> PlaneCalibration:
    """The same plane for an undistorted image made with another camera matrix.

    The station's undistort step may zoom (getOptimalNewCameraMatrix); its pixels relate to
    the calibration's own undistorted pixels by K @ inv(K_new), both being pinhole images.
    """
    plane.check_fits(camera)
    new_k = np.asarray(new_camera_matrix, dtype=np.float64)
    if new_k.shape != (3, 3):
        raise CalibrationError(f"new camera matrix must be 3x3, got {new_k.shape}")
    h = plane.homography @ camera.camera_matrix @ np.linalg.inv(new_k)
    return dataclasses.replace(plane, homography=np.asarray(h / h[2, 2], dtype=np.float64))


def undistort_points(points_px: npt.ArrayLike, camera: CameraCalibration) -> F64:
    """Raw (distorted) pixels -> undistorted pixels of ``undistort_image`` (N x 2)."""
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 1, 2)
    k = camera.camera_matrix
    out = cv2.undistortPoints(pts, k, camera.dist_coeffs, P=k, criteria=_POINT_CRITERIA)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def _apply(h: F64, points: npt.ArrayLike) -> F64:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.size == 0:
        return np.zeros((0, 2))
    hom = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1) @ h.T
    return np.asarray(hom[:, :2] / hom[:, 2:3], dtype=np.float64)


def pixel_to_mm(points_px: npt.ArrayLike, plane: PlaneCalibration, height_mm: float = 0.0) -> F64:
    """UNDISTORTED pixels (N x 2) -> plane mm (N x 2).

    `height_mm` > 0: the points lie that far above the belt (towards the camera), e.g. the top
    face of a part; they are moved along their viewing rays onto that height.
    """
    on_belt = _apply(plane.homography, points_px)
    if height_mm == 0.0:
        return on_belt
    cam = plane.camera_position_mm
    if not height_mm < cam[2]:
        raise CalibrationError(
            f"height {height_mm} mm is not below the camera ({cam[2]:.1f} mm above the plane)"
        )
    return np.asarray(on_belt + (cam[:2] - on_belt) * (height_mm / cam[2]), dtype=np.float64)


def raw_pixel_to_mm(
    points_px: npt.ArrayLike,
    plane: PlaneCalibration,
    camera: CameraCalibration,
    height_mm: float = 0.0,
) -> F64:
    """Raw (distorted) camera pixels -> plane mm: undistort first, then the homography."""
    return pixel_to_mm(undistort_points(points_px, camera), plane, height_mm)


def mm_to_pixel(points_mm: npt.ArrayLike, plane: PlaneCalibration) -> F64:
    """Plane mm (N x 2) -> undistorted pixels (N x 2)."""
    return _apply(np.asarray(np.linalg.inv(plane.homography), dtype=np.float64), points_mm)


def mm_per_px(plane: PlaneCalibration, at_px: tuple[float, float] | None = None) -> float:
    """Local scale (mm per undistorted pixel) at a point, the image centre by default."""
    w, h = plane.image_size
    x, y = at_px if at_px is not None else ((w - 1) / 2, (h - 1) / 2)
    pts = _apply(plane.homography, [[x, y], [x + 1, y], [x, y + 1]])
    jac = np.stack([pts[1] - pts[0], pts[2] - pts[0]], axis=1)
    return float(np.sqrt(abs(np.linalg.det(jac))))


def calibrate_plane(
    image: ImageU8,
    camera: CameraCalibration,
    board: BoardSpec,
    calibration_id: str,
    board_origin_mm: tuple[float, float] = (0.0, 0.0),
) -> PlaneCalibration:
    """Homography from one image of `board` lying flat on the belt, with its residual in mm."""
    if not board.orientation_is_unique:
        raise CalibrationError(
            f"{board.describe()}: a chessboard whose square counts add up to an even number "
            "looks the same turned 180 degrees, so the plane's origin would be ambiguous; use "
            "e.g. 11x8 squares or a ChArUco board"
        )
    camera.check_fits(int(image.shape[1]), int(image.shape[0]), "plane image")
    det = detect_board(image, board)
    if det is None:
        raise CalibrationError(f"plane image: {board.describe()} not found")
    if det.count < 8:
        raise CalibrationError(f"plane image: only {det.count} board corners found, need 8")
    und = undistort_points(det.image_points, camera)
    mm = det.object_points[:, :2].astype(np.float64) + np.asarray(board_origin_mm, dtype=float)
    h, _ = cv2.findHomography(und, mm, 0)
    if h is None:
        raise CalibrationError("plane image: board corners do not define a homography")
    h = np.asarray(h, dtype=np.float64) / float(h[2, 2])
    resid = np.linalg.norm(_apply(h, und) - mm, axis=1)
    ok, rvec, tvec = cv2.solvePnP(
        det.object_points.astype(np.float64),
        det.image_points.astype(np.float64),
        camera.camera_matrix,
        camera.dist_coeffs,
    )
    if not ok:
        raise CalibrationError("plane image: cannot solve the camera pose over the board")
    rot, _ = cv2.Rodrigues(rvec)
    centre = (-rot.T @ np.asarray(tvec, dtype=np.float64)).ravel()  # camera in board frame
    position = np.array(
        [centre[0] + board_origin_mm[0], centre[1] + board_origin_mm[1], -centre[2]]
    )
    return PlaneCalibration(
        calibration_id=calibration_id,
        homography=h,
        image_size=camera.image_size,
        camera_calibration_id=camera.calibration_id,
        camera_sha256=camera.sha256,
        residual_rms_mm=float(np.sqrt(np.mean(resid**2))),
        residual_max_mm=float(resid.max()),
        camera_position_mm=position,
        board=board.describe(),
        points=det.count,
    )


_KEYS = (
    "calibration_id",
    "homography",
    "image_width",
    "image_height",
    "camera_calibration_id",
    "camera_sha256",
    "residual_rms_mm",
    "residual_max_mm",
    "camera_position_mm",
)


def save_plane_calibration(plane: PlaneCalibration, path: Path | str) -> Path:
    """Write the plane as OpenCV FileStorage YAML."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fs = cv2.FileStorage(str(file), cv2.FILE_STORAGE_WRITE)
    try:
        fs.write("calibration_id", plane.calibration_id)
        fs.write("created", plane.created)
        fs.write("board", plane.board)
        fs.write("image_width", plane.image_size[0])
        fs.write("image_height", plane.image_size[1])
        fs.write("camera_calibration_id", plane.camera_calibration_id)
        fs.write("camera_sha256", plane.camera_sha256)
        fs.write("homography", plane.homography)
        fs.write("residual_rms_mm", float(plane.residual_rms_mm))
        fs.write("residual_max_mm", float(plane.residual_max_mm))
        fs.write("points", int(plane.points))
        fs.write("camera_position_mm", plane.camera_position_mm.reshape(1, 3))
    finally:
        fs.release()
    return file


def _node(fs: cv2.FileStorage, key: str, file: Path) -> cv2.FileNode:
    node = fs.getNode(key)
    if node.empty():
        raise CalibrationError(f"{file}: missing key '{key}'")
    return node


def _mat(fs: cv2.FileStorage, key: str, file: Path, size: int) -> F64:
    mat = _node(fs, key, file).mat()
    if mat is None or mat.size != size:
        raise CalibrationError(f"{file}: key '{key}' must be a matrix of {size} numbers")
    return np.asarray(mat, dtype=np.float64)


def load_plane_calibration(path: Path | str) -> PlaneCalibration:
    """Read a plane file; every problem names the file and the key."""
    file = Path(path)
    data = file.read_bytes() if file.is_file() else b""
    fs = open_for_reading(file, "plane calibration")
    try:
        for key in _KEYS:
            _node(fs, key, file)
        return PlaneCalibration(
            calibration_id=fs.getNode("calibration_id").string(),
            homography=_mat(fs, "homography", file, 9).reshape(3, 3),
            image_size=(
                int(fs.getNode("image_width").real()),
                int(fs.getNode("image_height").real()),
            ),
            camera_calibration_id=fs.getNode("camera_calibration_id").string(),
            camera_sha256=fs.getNode("camera_sha256").string(),
            residual_rms_mm=float(fs.getNode("residual_rms_mm").real()),
            residual_max_mm=float(fs.getNode("residual_max_mm").real()),
            camera_position_mm=_mat(fs, "camera_position_mm", file, 3).ravel(),
            board=fs.getNode("board").string(),
            points=int(fs.getNode("points").real()),
            created=fs.getNode("created").string(),
            sha256=hashlib.sha256(data).hexdigest(),
            path=file,
        )
    finally:
        fs.release()
