"""Transforms and robot pose files in the formats robots write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cellinspect.calibration.poses import (
    RobotPose,
    RotationFormat,
    Transform,
    load_robot_poses,
    rotation_angle_deg,
    rotation_from,
    rotation_to,
    save_robot_poses,
)
from cellinspect.errors import CalibrationError


@pytest.mark.parametrize("fmt", list(RotationFormat))
@pytest.mark.parametrize("values", [(10.0, -20.0, 30.0), (0.0, 0.0, 0.0), (170.0, 5.0, -95.0)])
def test_rotation_round_trip(fmt: RotationFormat, values: tuple[float, float, float]) -> None:
    vals = np.radians(values) if fmt is RotationFormat.ROTVEC else np.asarray(values) / 2
    rot = rotation_from(tuple(vals), fmt)
    np.testing.assert_allclose(rotation_from(rotation_to(rot, fmt), fmt), rot, atol=1e-9)


def test_rpy_is_fixed_axis_xyz() -> None:
    """rpy_deg (90, 0, 0) turns y into z; (0, 0, 90) turns x into y (FANUC W, P, R)."""
    np.testing.assert_allclose(
        rotation_from((90, 0, 0), RotationFormat.RPY_DEG) @ [0, 1, 0], [0, 0, 1], atol=1e-12
    )
    np.testing.assert_allclose(
        rotation_from((0, 0, 90), RotationFormat.RPY_DEG) @ [1, 0, 0], [0, 1, 0], atol=1e-12
    )
    both = rotation_from((30, 0, 40), RotationFormat.RPY_DEG)
    expected = rotation_from((0, 0, 40), RotationFormat.RPY_DEG) @ rotation_from(
        (30, 0, 0), RotationFormat.RPY_DEG
    )
    np.testing.assert_allclose(both, expected, atol=1e-12)


def test_transform_algebra() -> None:
    a = Transform(rotation_from((10, 20, 30), RotationFormat.RPY_DEG), np.array([1.0, 2, 3]))
    ident = a @ a.inverse()
    np.testing.assert_allclose(ident.matrix, np.eye(4), atol=1e-12)
    assert rotation_angle_deg(rotation_from((0, 0, 25), RotationFormat.RPY_DEG)) == pytest.approx(
        25
    )
    with pytest.raises(CalibrationError, match="not a proper rotation"):
        Transform(np.diag([1.0, 1.0, -1.0]), np.zeros(3))
    with pytest.raises(CalibrationError, match="3x3 rotation"):
        Transform(np.eye(2), np.zeros(3))


def test_csv_round_trip(tmp_path: Path) -> None:
    poses = [
        RobotPose(
            Transform(
                rotation_from((i * 10.0, -5.0, 90.0 - i), RotationFormat.RPY_DEG),
                np.array([400.0 + i, -20, 300]),
            ),
            tmp_path / f"pose_{i}.png",
        )
        for i in range(3)
    ]
    path = save_robot_poses(poses, tmp_path / "poses.csv")
    back = load_robot_poses(path)
    assert [p.image for p in back] == [p.image for p in poses]
    for a, b in zip(poses, back, strict=True):
        np.testing.assert_allclose(b.gripper_to_base.matrix, a.gripper_to_base.matrix, atol=1e-4)


def test_json_with_quaternions_and_rotvec(tmp_path: Path) -> None:
    half = np.sqrt(0.5)
    (tmp_path / "q.json").write_text(
        json.dumps([{"x": 1, "y": 2, "z": 3, "qw": half, "qx": 0, "qy": 0, "qz": half}])
    )
    (pose,) = load_robot_poses(tmp_path / "q.json")
    np.testing.assert_allclose(pose.gripper_to_base.rotation @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    assert pose.image is None
    (tmp_path / "ur.csv").write_text("x,y,z,rx,ry,rz\n0,0,0,0,0,1.5707963267948966\n")
    (ur,) = load_robot_poses(tmp_path / "ur.csv", RotationFormat.ROTVEC)
    np.testing.assert_allclose(ur.gripper_to_base.rotation @ [1, 0, 0], [0, 1, 0], atol=1e-12)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("a.csv", "", "header needs columns"),
        ("b.csv", "x,y,z,rx,ry\n1,2,3,4,5\n", "header needs columns"),
        ("c.csv", "x,y,z,rx,ry,rz\n", "no poses"),
        ("d.csv", "x,y,z,rx,ry,rz\n1,2,three,0,0,0\n", r"row 1: 'z' = 'three' is not a number"),
        ("e.csv", "x,y,z,rx,ry,rz\n1,2,3,0,0,\n", r"row 1: missing 'rz'"),
        ("f.json", "{not json", "not valid JSON"),
        ("g.json", '{"x": 1}', "expected a JSON list"),
        ("h.json", '[{"x":0,"y":0,"z":0,"qw":2,"qx":0,"qy":0,"qz":0}]', "quaternion norm"),
    ],
)
def test_bad_pose_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(CalibrationError, match=match):
        load_robot_poses(tmp_path / name)


def test_missing_pose_file(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="robot pose file not found"):
        load_robot_poses(tmp_path / "nope.csv")
