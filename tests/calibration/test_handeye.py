"""Hand-eye calibration: synthetic poses with a known answer, both mountings, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.handeye import (
    HandEyeMode,
    calibrate_handeye,
    load_handeye_transform,
    opencv_has_handeye,
    save_handeye_result,
    target_poses_from_images,
)
from cellinspect.calibration.handeye_sim import simulate_handeye, write_handeye_example
from cellinspect.calibration.poses import Transform, load_robot_poses, rotation_angle_deg
from cellinspect.calibration.render import HANDEYE_BOARD
from cellinspect.errors import CalibrationError


def _noisy(poses: tuple[Transform, ...], seed: int, mm: float, deg: float) -> list[Transform]:
    rng = np.random.default_rng(seed)
    return [
        Transform.from_rvec(np.radians(rng.normal(0, deg, 3)), rng.normal(0, mm, 3)) @ p
        for p in poses
    ]


def _errors(found: Transform, truth: Transform) -> tuple[float, float]:
    dt = float(np.linalg.norm(found.translation - truth.translation))
    return dt, rotation_angle_deg(found.rotation.T @ truth.rotation)


@pytest.mark.parametrize("mode", list(HandEyeMode))
@pytest.mark.parametrize("method", ["park", "tsai"])
def test_recovers_the_mounting(mode: HandEyeMode, method: str) -> None:
    scene = simulate_handeye(mode, HANDEYE_BOARD, 12, seed=3)
    targets = _noisy(scene.target_to_camera, 1, mm=0.05, deg=0.03)
    result = calibrate_handeye(scene.gripper_to_base, targets, mode, method, backend="builtin")
    dt, dr = _errors(result.camera_to_robot, scene.camera_to_robot)
    assert dt < 1.0 and dr < 0.2
    ft, fr = _errors(result.fixed_target, scene.fixed_target)
    assert ft < 1.0 and fr < 0.2
    c = result.consistency
    assert 0 < c.translation_rms_mm <= c.translation_max_mm < 1.0
    assert 0 < c.rotation_rms_deg <= c.rotation_max_deg < 0.3
    assert result.frame == ("gripper" if mode is HandEyeMode.EYE_IN_HAND else "base")


def test_wrong_mode_shows_in_the_consistency_error() -> None:
    """Solving an eye-to-hand cell as eye-in-hand cannot be consistent."""
    scene = simulate_handeye(HandEyeMode.EYE_TO_HAND, HANDEYE_BOARD, 10, seed=4)
    wrong = calibrate_handeye(
        scene.gripper_to_base, scene.target_to_camera, "eye_in_hand", backend="builtin"
    )
    assert wrong.consistency.translation_rms_mm > 5.0


@pytest.mark.skipif(not opencv_has_handeye(), reason="cv2 lacks calibrateHandEye (opencv#29565)")
def test_opencv_backend_agrees() -> None:
    scene = simulate_handeye(HandEyeMode.EYE_IN_HAND, HANDEYE_BOARD, 10, seed=5)
    ours = calibrate_handeye(scene.gripper_to_base, scene.target_to_camera, backend="builtin")
    theirs = calibrate_handeye(scene.gripper_to_base, scene.target_to_camera, backend="opencv")
    dt, dr = _errors(ours.camera_to_robot, theirs.camera_to_robot)
    assert dt < 0.5 and dr < 0.1


def test_missing_opencv_backend_is_a_clear_error() -> None:
    scene = simulate_handeye(HandEyeMode.EYE_IN_HAND, HANDEYE_BOARD, 4, seed=0)
    if opencv_has_handeye():
        pytest.skip("this OpenCV has calibrateHandEye")
    with pytest.raises(CalibrationError, match="no calibrateHandEye"):
        calibrate_handeye(scene.gripper_to_base, scene.target_to_camera, backend="opencv")
    with pytest.raises(CalibrationError, match="method 'horaud' needs OpenCV"):
        calibrate_handeye(scene.gripper_to_base, scene.target_to_camera, method="horaud")


def test_bad_input() -> None:
    scene = simulate_handeye(HandEyeMode.EYE_IN_HAND, HANDEYE_BOARD, 4, seed=0)
    g, t = scene.gripper_to_base, scene.target_to_camera
    with pytest.raises(CalibrationError, match="4 robot poses but 3 board poses"):
        calibrate_handeye(g, t[:3])
    with pytest.raises(CalibrationError, match="too few pose pairs: 2"):
        calibrate_handeye(g[:2], t[:2])
    shifted = [
        Transform(g[0].rotation, g[0].translation + np.array([i, 0.0, 0.0])) for i in range(4)
    ]
    with pytest.raises(CalibrationError, match="barely rotate"):
        calibrate_handeye(shifted, t, backend="builtin")
    with pytest.raises(CalibrationError, match="unknown backend"):
        calibrate_handeye(g, t, backend="magic")
    with pytest.raises(ValueError, match="sideways"):
        calibrate_handeye(g, t, mode="sideways")


def test_from_rendered_pictures_and_files(tmp_path: Path, true_camera: CameraCalibration) -> None:
    scene = simulate_handeye(HandEyeMode.EYE_TO_HAND, HANDEYE_BOARD, 6, seed=8)
    csv_path = write_handeye_example(scene, HANDEYE_BOARD, tmp_path, seed=8)
    robot = load_robot_poses(csv_path)
    images = [p.image for p in robot if p.image is not None]
    (tmp_path / "blank.png").write_bytes(b"")
    targets, problems = target_poses_from_images(
        [*images, tmp_path / "blank.png"], true_camera, HANDEYE_BOARD
    )
    assert problems == ["blank.png: cannot be read as an image"] and targets[-1] is None
    found = [t for t in targets if t is not None]
    result = calibrate_handeye([p.gripper_to_base for p in robot], found, "eye_to_hand")
    dt, dr = _errors(result.camera_to_robot, scene.camera_to_robot)
    assert dt < 1.0 and dr < 0.2
    path = save_handeye_result(result, tmp_path / "handeye.yaml")
    mode, x = load_handeye_transform(path)
    assert mode is HandEyeMode.EYE_TO_HAND
    np.testing.assert_allclose(x.matrix, result.camera_to_robot.matrix, atol=1e-9)
    assert "camera_to_base" in path.read_text()
