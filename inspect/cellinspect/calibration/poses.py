"""Rigid transforms and robot pose files.

A robot pose file lists the gripper (tool flange) pose in the robot base frame, one row per
board picture. CSV with a header, or JSON (a list of objects with the same keys):

    image,x,y,z,rx,ry,rz          x, y, z in mm; rx, ry, rz as set by `rotation`
    image,x,y,z,qw,qx,qy,qz       a unit quaternion (detected from the header)

`rotation` says how rx, ry, rz are meant, since every robot brand writes them differently:

- ``rpy_deg`` (default): degrees, R = Rz(rz) @ Ry(ry) @ Rx(rx), i.e. rotate about the fixed
  X, then Y, then Z axis (FANUC W,P,R; KUKA A,B,C map to rz,ry,rx).
- ``rotvec``: rotation vector (axis * angle) in radians (Universal Robots).
- ``rotvec_deg``: rotation vector with the angle in degrees.

`image` is optional; when present it names the board picture taken at that pose, relative to
the pose file's folder.
"""

from __future__ import annotations

import csv
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from cellinspect.errors import CalibrationError

F64 = npt.NDArray[np.float64]


class RotationFormat(enum.StrEnum):
    """How the rx, ry, rz columns of a pose file encode a rotation."""

    RPY_DEG = "rpy_deg"
    ROTVEC = "rotvec"
    ROTVEC_DEG = "rotvec_deg"


@dataclass(frozen=True)
class Transform:
    """A rigid transform a -> b: p_b = rotation @ p_a + translation (mm)."""

    rotation: F64
    translation: F64

    def __post_init__(self) -> None:
        rot = np.asarray(self.rotation, dtype=np.float64)
        if rot.shape != (3, 3) or np.asarray(self.translation).size != 3:
            raise CalibrationError(
                f"transform needs a 3x3 rotation and 3 translations, got {rot.shape} and "
                f"{np.asarray(self.translation).size}"
            )
        if abs(np.linalg.det(rot) - 1.0) > 1e-3 or not np.allclose(
            rot.T @ rot, np.eye(3), atol=1e-3
        ):
            raise CalibrationError("transform rotation is not a proper rotation matrix")

    @classmethod
    def from_rvec(cls, rvec: npt.ArrayLike, tvec: npt.ArrayLike) -> Transform:
        rot, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
        return cls(np.asarray(rot, dtype=np.float64), np.asarray(tvec, dtype=np.float64).ravel())

    @classmethod
    def from_matrix(cls, matrix: npt.ArrayLike) -> Transform:
        m = np.asarray(matrix, dtype=np.float64)
        return cls(m[:3, :3].copy(), m[:3, 3].copy())

    @property
    def matrix(self) -> F64:
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = np.asarray(self.translation).ravel()
        return m

    @property
    def rvec(self) -> F64:
        rvec, _ = cv2.Rodrigues(np.asarray(self.rotation, dtype=np.float64))
        return np.asarray(rvec, dtype=np.float64).ravel()

    def inverse(self) -> Transform:
        rot_t = self.rotation.T
        return Transform(rot_t, -rot_t @ np.asarray(self.translation).ravel())

    def __matmul__(self, other: Transform) -> Transform:
        return Transform(
            self.rotation @ other.rotation,
            self.rotation @ np.asarray(other.translation).ravel()
            + np.asarray(self.translation).ravel(),
        )


def rotation_angle_deg(rot: F64) -> float:
    """Angle of a rotation matrix in degrees (0 for identity)."""
    cos = (np.trace(rot) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _axis_rot(axis: int, rad: float) -> F64:
    c, s = np.cos(rad), np.sin(rad)
    m = np.eye(3)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def rotation_from(values: Sequence[float], fmt: RotationFormat) -> F64:
    """rx, ry, rz in the given format -> rotation matrix."""
    rx, ry, rz = (float(v) for v in values)
    if fmt is RotationFormat.RPY_DEG:
        a, b, c = np.radians([rx, ry, rz])
        return _axis_rot(2, c) @ _axis_rot(1, b) @ _axis_rot(0, a)
    vec = np.array([rx, ry, rz], dtype=np.float64)
    if fmt is RotationFormat.ROTVEC_DEG:
        vec = np.radians(vec)
    rot, _ = cv2.Rodrigues(vec.reshape(3, 1))
    return np.asarray(rot, dtype=np.float64)


def rotation_to(rot: F64, fmt: RotationFormat) -> tuple[float, float, float]:
    """Rotation matrix -> rx, ry, rz in the given format (inverse of `rotation_from`)."""
    if fmt is RotationFormat.RPY_DEG:
        ry = np.arcsin(-np.clip(rot[2, 0], -1.0, 1.0))
        if abs(np.cos(ry)) > 1e-9:
            rx = np.arctan2(rot[2, 1], rot[2, 2])
            rz = np.arctan2(rot[1, 0], rot[0, 0])
        else:  # gimbal lock: put everything in rz
            rx, rz = 0.0, np.arctan2(-rot[0, 1], rot[1, 1])
        deg = np.degrees([rx, ry, rz])
        return float(deg[0]), float(deg[1]), float(deg[2])
    rvec, _ = cv2.Rodrigues(np.asarray(rot, dtype=np.float64))
    vec = np.asarray(rvec, dtype=np.float64).ravel()
    if fmt is RotationFormat.ROTVEC_DEG:
        vec = np.degrees(vec)
    return float(vec[0]), float(vec[1]), float(vec[2])


def _quat_to_rot(qw: float, qx: float, qy: float, qz: float) -> F64:
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not 0.9 < norm < 1.1:
        raise ValueError(f"quaternion norm {norm:.3f} is not 1")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


@dataclass(frozen=True)
class RobotPose:
    """One row of a pose file: the gripper in the base frame, and its picture if named."""

    gripper_to_base: Transform
    image: Path | None = None


def _row_to_pose(row: Mapping[str, Any], fmt: RotationFormat, base: Path, where: str) -> RobotPose:
    def num(key: str) -> float:
        if key not in row or row[key] in (None, ""):
            raise CalibrationError(f"{where}: missing '{key}'")
        try:
            return float(row[key])
        except (TypeError, ValueError) as err:
            raise CalibrationError(f"{where}: '{key}' = {row[key]!r} is not a number") from err

    translation = np.array([num("x"), num("y"), num("z")])
    try:
        if "qw" in row:
            rot = _quat_to_rot(num("qw"), num("qx"), num("qy"), num("qz"))
        else:
            rot = rotation_from((num("rx"), num("ry"), num("rz")), fmt)
    except ValueError as err:
        raise CalibrationError(f"{where}: {err}") from err
    image = row.get("image")
    return RobotPose(Transform(rot, translation), base / str(image) if image else None)


def load_robot_poses(
    path: Path | str, rotation: RotationFormat | str = RotationFormat.RPY_DEG
) -> list[RobotPose]:
    """Read a CSV or JSON pose file (see the module docstring for the columns)."""
    file = Path(path)
    fmt = RotationFormat(rotation)
    if not file.is_file():
        raise CalibrationError(f"{file}: robot pose file not found")
    text = file.read_text(encoding="utf-8")
    rows: list[Mapping[str, Any]]
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CalibrationError(f"{file}: not valid JSON: {err}") from err
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise CalibrationError(f"{file}: expected a JSON list of pose objects")
        rows = data
        label = "item"
    else:
        reader = csv.DictReader(line for line in text.splitlines() if line.strip())
        fields = set(reader.fieldnames or ())
        need = {"x", "y", "z"} | (
            {"qw", "qx", "qy", "qz"} if "qw" in fields else {"rx", "ry", "rz"}
        )
        if not need <= fields:
            raise CalibrationError(
                f"{file}: header needs columns {sorted(need)}, has {sorted(fields)}"
            )
        rows = [
            {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k}
            for r in reader
        ]
        label = "row"
    poses = [
        _row_to_pose(row, fmt, file.parent, f"{file}: {label} {i + 1}")
        for i, row in enumerate(rows)
    ]
    if not poses:
        raise CalibrationError(f"{file}: no poses")
    return poses


def save_robot_poses(
    poses: Sequence[RobotPose],
    path: Path | str,
    rotation: RotationFormat | str = RotationFormat.RPY_DEG,
) -> Path:
    """Write poses as CSV in the format `load_robot_poses` reads (image names relative)."""
    file = Path(path)
    fmt = RotationFormat(rotation)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "x", "y", "z", "rx", "ry", "rz"])
        for pose in poses:
            t = pose.gripper_to_base.translation
            r = rotation_to(pose.gripper_to_base.rotation, fmt)
            name = pose.image.name if pose.image is not None else ""
            writer.writerow([name, *(f"{v:.4f}" for v in (*t, *r))])
    return file
