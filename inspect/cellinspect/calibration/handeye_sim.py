"""A simulated robot cell with a known camera mounting, for hand-eye tests and the example.

eye-to-hand: the conveyor camera hangs BELT_DISTANCE_MM above the belt (base z = 0 on the
belt, z up), and the robot holds a small board under it. eye-in-hand: the camera sits on the
gripper and looks down at a board lying on the table. Robot poses get a little noise, as a
real robot's repeatability gives; the board poses come from rendered pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cellinspect.calibration.board import BoardSpec
from cellinspect.calibration.handeye import HandEyeMode
from cellinspect.calibration.poses import RobotPose, Transform, save_robot_poses
from cellinspect.calibration.render import (
    BELT_DISTANCE_MM,
    BoardPose,
    Look,
    board_fits,
    render_board,
    rot_axis,
)
from cellinspect.datagen.camera import DEFAULT_CAMERA, VirtualCamera

_DOWN = np.diag([1.0, -1.0, -1.0])  # a frame whose z points down, x along base x


@dataclass(frozen=True)
class HandEyeScene:
    """Ground truth and the pose pairs a hand-eye calibration would collect."""

    mode: HandEyeMode
    camera_to_robot: Transform  # camera -> gripper (eye-in-hand) or camera -> base
    fixed_target: Transform  # board -> base (eye-in-hand) or board -> gripper (eye-to-hand)
    gripper_to_base: tuple[Transform, ...]  # as the robot reports them (with noise)
    target_to_camera: tuple[Transform, ...]  # the true board poses in the camera


def _small_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    return rot_axis(0, float(rng.uniform(-max_deg, max_deg))) @ rot_axis(
        1, float(rng.uniform(-max_deg, max_deg))
    )


def _board_centre(board: BoardSpec) -> np.ndarray:
    x0, y0, x1, y1 = board.outline_mm()
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])


def simulate_handeye(
    mode: HandEyeMode | str,
    board: BoardSpec,
    count: int,
    seed: int = 0,
    camera: VirtualCamera = DEFAULT_CAMERA,
    robot_noise_mm: float = 0.05,
    robot_noise_deg: float = 0.02,
) -> HandEyeScene:
    """`count` robot poses where the whole board is in view, with the truth behind them."""
    mode = HandEyeMode(mode)
    rng = np.random.default_rng(seed)
    centre = _board_centre(board)
    if mode is HandEyeMode.EYE_TO_HAND:
        cam_rot = _DOWN @ rot_axis(2, 2.0) @ rot_axis(0, 1.5)
        x = Transform(cam_rot, np.array([420.0, -35.0, BELT_DISTANCE_MM]))
        fixed = Transform(rot_axis(2, 4.0), np.array([3.0, -2.0, 25.0]))  # board -> gripper
    else:
        x = Transform(rot_axis(2, -90.0) @ rot_axis(0, 3.0), np.array([45.0, 5.0, 60.0]))
        fixed = Transform(_DOWN @ rot_axis(2, 10.0), np.array([520.0, 80.0, 0.0]))
    grippers: list[Transform] = []
    targets: list[Transform] = []
    attempts = 0
    while len(grippers) < count:
        attempts += 1
        if attempts > 500 * count:
            raise RuntimeError(f"could not place {count} hand-eye views")
        spin = rot_axis(2, float(rng.uniform(-40, 40)))
        if mode is HandEyeMode.EYE_TO_HAND:
            g_rot = _small_rotation(rng, 18.0) @ _DOWN @ spin
            board_rot = g_rot @ fixed.rotation
            dist = float(rng.uniform(62.0, 90.0))
            aim = x.translation + x.rotation @ np.array([*rng.uniform(-6, 6, 2), dist])
            g_t = aim - g_rot @ fixed.translation - board_rot @ centre
            gripper = Transform(g_rot, g_t)
            target = x.inverse() @ gripper @ fixed
        else:
            g_rot = _small_rotation(rng, 20.0) @ _DOWN @ spin
            cam_rot = g_rot @ x.rotation
            dist = float(rng.uniform(85.0, 130.0))
            aim = fixed.translation + fixed.rotation @ centre
            cam_centre = aim - dist * cam_rot[:, 2] + np.r_[rng.uniform(-6, 6, 2), 0.0]
            gripper = Transform(g_rot, cam_centre - g_rot @ x.translation)
            target = (gripper @ x).inverse() @ fixed
        pose = BoardPose(target.rvec, target.translation)
        if not board_fits(board, pose, camera, border_px=4.0):
            continue
        noise = Transform.from_rvec(
            np.radians(rng.normal(0, robot_noise_deg, 3)), rng.normal(0, robot_noise_mm, 3)
        )
        grippers.append(gripper @ noise)
        targets.append(target)
    return HandEyeScene(mode, x, fixed, tuple(grippers), tuple(targets))


def write_handeye_example(
    scene: HandEyeScene,
    board: BoardSpec,
    out_dir: Path | str,
    seed: int = 0,
    camera: VirtualCamera = DEFAULT_CAMERA,
) -> Path:
    """Render the board picture of every pose and write poses.csv and truth.yaml beside them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    poses = []
    for i, (gripper, target) in enumerate(
        zip(scene.gripper_to_base, scene.target_to_camera, strict=True)
    ):
        img = render_board(
            board,
            BoardPose(target.rvec, target.translation),
            camera,
            look=Look.random(rng),
            rng=rng,
            margin_mm=0.6 * board.square_mm,
        )
        path = out / f"pose_{i:02d}.png"
        cv2.imwrite(str(path), img[:, :, 0])  # the renders are grey: one channel is enough
        poses.append(RobotPose(gripper, path))
    csv_path = save_robot_poses(poses, out / "poses.csv")
    fs = cv2.FileStorage(str(out / "truth.yaml"), cv2.FILE_STORAGE_WRITE)
    try:
        fs.write("mode", scene.mode.value)
        frame = "gripper" if scene.mode is HandEyeMode.EYE_IN_HAND else "base"
        fs.write(f"camera_to_{frame}", scene.camera_to_robot.matrix)
        other = "base" if scene.mode is HandEyeMode.EYE_IN_HAND else "gripper"
        fs.write(f"board_to_{other}", scene.fixed_target.matrix)
    finally:
        fs.release()
    return csv_path
