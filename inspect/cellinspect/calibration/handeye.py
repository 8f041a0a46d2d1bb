"""Hand-eye calibration: where the camera is relative to the robot.

- eye-in-hand: the camera rides on the gripper and looks at a board fixed in the cell;
  the result is camera -> gripper.
- eye-to-hand: the camera is fixed (the conveyor camera) and the gripper holds the board;
  the result is camera -> robot base.

Both solve A X = X B from pairs (robot pose, board pose seen by the camera), as OpenCV's
calibrateHandEye does; for eye-to-hand the robot poses are inverted first, as its
documentation says. The consistency error is the spread, over all pictures, of what should be
one fixed transform (board -> base for eye-in-hand, board -> gripper for eye-to-hand).

opencv-python 5.0.0 lacks calibrateHandEye in its Python bindings (opencv/opencv#29565,
fixed after that release), so the Park-Martin and Tsai-Lenz solvers are implemented here
too; `backend="auto"` uses OpenCV when it is there and these otherwise.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.calibration.board import BoardSpec, detect_board
from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.poses import Transform, rotation_angle_deg
from cellinspect.calibration.storage import open_for_reading
from cellinspect.entities import ImageU8
from cellinspect.errors import CalibrationError

F64 = npt.NDArray[np.float64]

MIN_PAIRS = 3


class HandEyeMode(enum.StrEnum):
    """Where the camera is mounted."""

    EYE_IN_HAND = "eye_in_hand"
    EYE_TO_HAND = "eye_to_hand"


class HandEyeMethod(enum.StrEnum):
    """Solvers, named as OpenCV's CALIB_HAND_EYE_* flags."""

    TSAI = "tsai"
    PARK = "park"
    HORAUD = "horaud"
    ANDREFF = "andreff"
    DANIILIDIS = "daniilidis"


_CV_FLAGS = {
    HandEyeMethod.TSAI: "CALIB_HAND_EYE_TSAI",
    HandEyeMethod.PARK: "CALIB_HAND_EYE_PARK",
    HandEyeMethod.HORAUD: "CALIB_HAND_EYE_HORAUD",
    HandEyeMethod.ANDREFF: "CALIB_HAND_EYE_ANDREFF",
    HandEyeMethod.DANIILIDIS: "CALIB_HAND_EYE_DANIILIDIS",
}


def opencv_has_handeye() -> bool:
    """True when this cv2 build exposes calibrateHandEye."""
    return hasattr(cv2, "calibrateHandEye")


@dataclass(frozen=True)
class Consistency:
    """Spread of the transform that should stay fixed, over all pictures."""

    translation_rms_mm: float
    translation_max_mm: float
    rotation_rms_deg: float
    rotation_max_deg: float


@dataclass(frozen=True)
class HandEyeResult:
    """camera -> gripper (eye-in-hand) or camera -> base (eye-to-hand), with its quality."""

    mode: HandEyeMode
    method: HandEyeMethod
    backend: str
    camera_to_robot: Transform
    fixed_target: Transform  # board -> base (eye-in-hand) or board -> gripper (eye-to-hand)
    consistency: Consistency
    pairs: int
    camera_calibration_id: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def frame(self) -> str:
        return "gripper" if self.mode is HandEyeMode.EYE_IN_HAND else "base"


# --------------------------------------------------------------------------- solvers


def _skew(v: F64) -> F64:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _motions(
    grippers: Sequence[Transform], targets: Sequence[Transform]
) -> list[tuple[Transform, Transform]]:
    """Relative motions A = G_j^-1 G_i (gripper) and B = T_j T_i^-1 (camera), all pairs."""
    pairs = []
    for i, j in itertools.combinations(range(len(grippers)), 2):
        a = grippers[j].inverse() @ grippers[i]
        b = targets[j] @ targets[i].inverse()
        if rotation_angle_deg(a.rotation) > 1.0:  # near-pure translations say nothing on R
            pairs.append((a, b))
    return pairs


def _translation(pairs: Sequence[tuple[Transform, Transform]], rot: F64) -> F64:
    """(R_A - I) t_X = R_X t_B - t_A, least squares over all motions."""
    lhs = np.concatenate([a.rotation - np.eye(3) for a, _ in pairs])
    rhs = np.concatenate([rot @ b.translation - a.translation for a, b in pairs])
    sol, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    return np.asarray(sol, dtype=np.float64)


def _solve_park(pairs: Sequence[tuple[Transform, Transform]]) -> Transform:
    """Park & Martin (1994): log-map rotation axes, alpha = R_X beta, fitted by Procrustes."""
    alphas = np.stack([cv2.Rodrigues(a.rotation)[0].ravel() for a, _ in pairs])
    betas = np.stack([cv2.Rodrigues(b.rotation)[0].ravel() for _, b in pairs])
    u, _, vt = np.linalg.svd(betas.T @ alphas)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return Transform(rot, _translation(pairs, rot))


def _solve_tsai(pairs: Sequence[tuple[Transform, Transform]]) -> Transform:
    """Tsai & Lenz (1989): modified Rodrigues parameters, linear least squares."""
    lhs, rhs = [], []
    for a, b in pairs:
        ra = cv2.Rodrigues(a.rotation)[0].ravel()
        rb = cv2.Rodrigues(b.rotation)[0].ravel()
        pa = 2.0 * np.sin(np.linalg.norm(ra) / 2.0) * ra / np.linalg.norm(ra)
        pb = 2.0 * np.sin(np.linalg.norm(rb) / 2.0) * rb / np.linalg.norm(rb)
        lhs.append(_skew(pa + pb))
        rhs.append(pb - pa)
    prime, *_ = np.linalg.lstsq(np.concatenate(lhs), np.concatenate(rhs), rcond=None)
    p = 2.0 * prime / np.sqrt(1.0 + prime @ prime)
    n2 = p @ p
    rot = (1 - n2 / 2) * np.eye(3) + 0.5 * (np.outer(p, p) + np.sqrt(4 - n2) * _skew(p))
    u, _, vt = np.linalg.svd(rot)  # re-orthonormalise
    rot = u @ vt
    return Transform(rot, _translation(pairs, rot))


_BUILTIN = {HandEyeMethod.PARK: _solve_park, HandEyeMethod.TSAI: _solve_tsai}


def _solve_opencv(
    grippers: Sequence[Transform], targets: Sequence[Transform], method: HandEyeMethod
) -> Transform:
    rot, trans = cv2.calibrateHandEye(  # type: ignore[attr-defined,unused-ignore]
        [g.rotation for g in grippers],
        [g.translation.reshape(3, 1) for g in grippers],
        [t.rotation for t in targets],
        [t.translation.reshape(3, 1) for t in targets],
        method=getattr(cv2, _CV_FLAGS[method]),
    )
    return Transform(np.asarray(rot, dtype=np.float64), np.asarray(trans, dtype=np.float64).ravel())


def _mean_rotation(rots: Sequence[F64]) -> F64:
    u, _, vt = np.linalg.svd(np.sum(rots, axis=0))
    d = np.sign(np.linalg.det(u @ vt))
    return np.asarray(u @ np.diag([1.0, 1.0, d]) @ vt, dtype=np.float64)


def consistency(
    grippers: Sequence[Transform], targets: Sequence[Transform], x: Transform
) -> tuple[Transform, Consistency]:
    """The fixed transform G_i X T_i per picture: its mean and how far each one strays."""
    fixed = [g @ x @ t for g, t in zip(grippers, targets, strict=True)]
    mean_t = np.mean([f.translation for f in fixed], axis=0)
    mean_r = _mean_rotation([f.rotation for f in fixed])
    dt = np.array([np.linalg.norm(f.translation - mean_t) for f in fixed])
    dr = np.array([rotation_angle_deg(mean_r.T @ f.rotation) for f in fixed])
    return Transform(mean_r, mean_t), Consistency(
        translation_rms_mm=float(np.sqrt(np.mean(dt**2))),
        translation_max_mm=float(dt.max()),
        rotation_rms_deg=float(np.sqrt(np.mean(dr**2))),
        rotation_max_deg=float(dr.max()),
    )


def calibrate_handeye(
    gripper_to_base: Sequence[Transform],
    target_to_camera: Sequence[Transform],
    mode: HandEyeMode | str = HandEyeMode.EYE_IN_HAND,
    method: HandEyeMethod | str = HandEyeMethod.PARK,
    backend: str = "auto",
    camera_calibration_id: str = "",
) -> HandEyeResult:
    """Camera -> gripper (eye-in-hand) or camera -> base (eye-to-hand) from pose pairs.

    `gripper_to_base` are the robot's reported poses; `target_to_camera` the board poses the
    camera saw at the same moments (see `target_poses_from_images`). backend: "auto",
    "opencv" (cv2.calibrateHandEye, all five methods) or "builtin" (park, tsai).
    """
    mode = HandEyeMode(mode)
    method = HandEyeMethod(method)
    if len(gripper_to_base) != len(target_to_camera):
        raise CalibrationError(
            f"hand-eye: {len(gripper_to_base)} robot poses but {len(target_to_camera)} board poses"
        )
    if len(gripper_to_base) < MIN_PAIRS:
        raise CalibrationError(
            f"hand-eye: too few pose pairs: {len(gripper_to_base)}, need at least {MIN_PAIRS}"
        )
    robot = (
        list(gripper_to_base)
        if mode is HandEyeMode.EYE_IN_HAND
        else [g.inverse() for g in gripper_to_base]
    )
    if backend == "auto":
        backend = "opencv" if opencv_has_handeye() else "builtin"
    if backend == "opencv":
        if not opencv_has_handeye():
            raise CalibrationError(
                f"hand-eye: this OpenCV ({cv2.__version__}) has no calibrateHandEye in its "
                "Python bindings (opencv/opencv#29565); use backend 'builtin'"
            )
        x = _solve_opencv(robot, target_to_camera, method)
    elif backend == "builtin":
        if method not in _BUILTIN:
            raise CalibrationError(
                f"hand-eye: method '{method.value}' needs OpenCV's calibrateHandEye; the builtin "
                f"backend offers {', '.join(m.value for m in _BUILTIN)}"
            )
        pairs = _motions(robot, target_to_camera)
        if len(pairs) < 2:
            raise CalibrationError(
                "hand-eye: the robot poses barely rotate; move the robot through rotations "
                "about at least two different axes"
            )
        x = _BUILTIN[method](pairs)
    else:
        raise CalibrationError(f"hand-eye: unknown backend {backend!r} (auto, opencv, builtin)")
    fixed, spread = consistency(robot, target_to_camera, x)
    return HandEyeResult(
        mode=mode,
        method=method,
        backend=backend,
        camera_to_robot=x,
        fixed_target=fixed,
        consistency=spread,
        pairs=len(robot),
        camera_calibration_id=camera_calibration_id,
    )


def board_pose(image: ImageU8, camera: CameraCalibration, board: BoardSpec) -> Transform | None:
    """Board -> camera from one picture (solvePnP on the detected corners); None if not seen."""
    camera.check_fits(int(image.shape[1]), int(image.shape[0]), "board image")
    det = detect_board(image, board)
    if det is None:
        return None
    ok, rvec, tvec = cv2.solvePnP(
        det.object_points.astype(np.float64),
        det.image_points.astype(np.float64),
        camera.camera_matrix,
        camera.dist_coeffs,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return None
    return Transform.from_rvec(rvec, tvec)


def target_poses_from_images(
    images: Sequence[Path], camera: CameraCalibration, board: BoardSpec
) -> tuple[list[Transform | None], list[str]]:
    """Board pose per picture (None where the board was not found) and the problems, by name."""
    if not board.orientation_is_unique:
        raise CalibrationError(
            f"{board.describe()}: this chessboard looks the same turned 180 degrees, so its "
            "pose is ambiguous; use e.g. 7x6 squares or a ChArUco board for hand-eye"
        )
    poses: list[Transform | None] = []
    problems: list[str] = []
    for path in images:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            poses.append(None)
            problems.append(f"{path.name}: cannot be read as an image")
            continue
        pose = board_pose(np.asarray(img, dtype=np.uint8), camera, board)
        if pose is None:
            problems.append(f"{path.name}: board not found")
        poses.append(pose)
    return poses, problems


# --------------------------------------------------------------------------- files


def save_handeye_result(result: HandEyeResult, path: Path | str) -> Path:
    """Write the result as OpenCV FileStorage YAML (4x4 matrices in mm)."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fs = cv2.FileStorage(str(file), cv2.FILE_STORAGE_WRITE)
    try:
        fs.write("created", result.created)
        fs.write("mode", result.mode.value)
        fs.write("method", result.method.value)
        fs.write("backend", result.backend)
        fs.write("camera_calibration_id", result.camera_calibration_id)
        fs.write("pairs", result.pairs)
        fs.write(f"camera_to_{result.frame}", result.camera_to_robot.matrix)
        target_frame = "base" if result.mode is HandEyeMode.EYE_IN_HAND else "gripper"
        fs.write(f"board_to_{target_frame}", result.fixed_target.matrix)
        fs.write("translation_rms_mm", result.consistency.translation_rms_mm)
        fs.write("translation_max_mm", result.consistency.translation_max_mm)
        fs.write("rotation_rms_deg", result.consistency.rotation_rms_deg)
        fs.write("rotation_max_deg", result.consistency.rotation_max_deg)
    finally:
        fs.release()
    return file


def load_handeye_transform(path: Path | str) -> tuple[HandEyeMode, Transform]:
    """Read back the mode and the camera -> gripper/base transform of a saved result."""
    file = Path(path)
    fs = open_for_reading(file, "hand-eye")
    try:
        try:
            mode = HandEyeMode(fs.getNode("mode").string())
        except ValueError as err:
            raise CalibrationError(
                f"{file}: key 'mode' must be eye_in_hand or eye_to_hand"
            ) from err
        key = "camera_to_gripper" if mode is HandEyeMode.EYE_IN_HAND else "camera_to_base"
        mat = fs.getNode(key).mat()
        if mat is None or mat.shape != (4, 4):
            raise CalibrationError(f"{file}: key '{key}' must be a 4x4 matrix")
        return mode, Transform.from_matrix(mat)
    finally:
        fs.release()
