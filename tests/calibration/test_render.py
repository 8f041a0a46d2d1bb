"""The board renderer: deterministic, exact geometry, and views that fit the image."""

from __future__ import annotations

import cv2
import numpy as np

from cellinspect.calibration.render import (
    BELT_DISTANCE_MM,
    CAMERA_BOARD,
    PLANE_BOARD,
    Look,
    board_fits,
    calibration_poses,
    conveyor_pose,
    project_board,
    render_board,
)
from cellinspect.datagen.camera import DEFAULT_CAMERA


def test_render_is_deterministic_bgr() -> None:
    pose = calibration_poses(CAMERA_BOARD, 1, seed=0)[0]
    a = render_board(CAMERA_BOARD, pose, rng=np.random.default_rng(5))
    b = render_board(CAMERA_BOARD, pose, rng=np.random.default_rng(5))
    c = render_board(CAMERA_BOARD, pose, rng=np.random.default_rng(6))
    assert a.shape == (320, 320, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_black_and_white_squares_where_the_geometry_says() -> None:
    """Sample the centre of two neighbouring squares: the outside-corner-0 one is black."""
    pose = conveyor_pose(CAMERA_BOARD, distance_mm=220.0)
    img = render_board(CAMERA_BOARD, pose, look=Look(noise_sigma=0), rng=np.random.default_rng(0))
    s = CAMERA_BOARD.square_mm
    centres = np.array([[-s / 2, -s / 2, 0.0], [s / 2, -s / 2, 0.0]])
    px, _ = cv2.projectPoints(
        centres, pose.rvec, pose.tvec, DEFAULT_CAMERA.camera_matrix, DEFAULT_CAMERA.dist_coeffs
    )
    (bx, by), (wx, wy) = np.rint(px.reshape(-1, 2)).astype(int)
    assert img[by, bx, 0] < 80 < 150 < img[wy, wx, 0]


def test_calibration_poses_fit_and_vary() -> None:
    poses = calibration_poses(CAMERA_BOARD, 9, seed=1)
    assert all(board_fits(CAMERA_BOARD, p) for p in poses)
    corners = np.concatenate([project_board(CAMERA_BOARD, p) for p in poses])
    # together the views reach every quarter of the image and near its edges
    assert corners[:, 0].min() < 50 and corners[:, 0].max() > 270
    assert corners[:, 1].min() < 50 and corners[:, 1].max() > 270


def test_conveyor_pose_has_the_belt_scale() -> None:
    pose = conveyor_pose(PLANE_BOARD)
    assert pose.tvec[2] == BELT_DISTANCE_MM
    # near the principal point one square spans fx * square / distance pixels
    centre = project_board(PLANE_BOARD, pose)
    w, h = PLANE_BOARD.inner
    grid = centre.reshape(h, w, 2)
    spacing = np.linalg.norm(grid[h // 2, w // 2 + 1] - grid[h // 2, w // 2])
    expected = DEFAULT_CAMERA.fx * PLANE_BOARD.square_mm / BELT_DISTANCE_MM
    assert abs(spacing - expected) / expected < 0.01
