"""Board specs and detection: sizes, validation, sub-pixel corners, a fixed corner order."""

from __future__ import annotations

import numpy as np
import pytest

from cellinspect.calibration.board import BoardKind, BoardSpec, detect_board, parse_size
from cellinspect.calibration.render import (
    CAMERA_BOARD,
    Look,
    calibration_poses,
    conveyor_pose,
    project_board,
    render_board,
)
from cellinspect.errors import CalibrationError


@pytest.mark.parametrize(
    ("text", "expected"), [("10x7", (10, 7)), (" 11 X 8 ", (11, 8)), ("3*3", (3, 3))]
)
def test_parse_size(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "10", "10x", "ax7", "10x7x2", "-3x4"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(CalibrationError, match="COLSxROWS"):
        parse_size(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cols": 2, "rows": 7, "square_mm": 5.0}, "at least 3x3"),
        ({"cols": 10, "rows": 7, "square_mm": 0.0}, "must be > 0"),
        ({"cols": 10, "rows": 7, "square_mm": -1.0}, "must be > 0"),
    ],
)
def test_bad_chessboard_specs(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        BoardSpec(BoardKind.CHESSBOARD, **kwargs)  # type: ignore[arg-type]


def test_bad_charuco_specs() -> None:
    with pytest.raises(CalibrationError, match="marker size"):
        BoardSpec(BoardKind.CHARUCO, 7, 5, 10.0, marker_mm=10.0)
    with pytest.raises(CalibrationError, match="unknown ArUco dictionary"):
        BoardSpec(BoardKind.CHARUCO, 7, 5, 10.0, dictionary="DICT_NOPE")
    with pytest.raises(CalibrationError, match="board kind 'circles'"):
        BoardSpec.parse("circles", "7x5", 10.0)


def test_spec_geometry() -> None:
    board = BoardSpec.parse("chessboard", "10x7", 8.0)
    assert board.inner == (9, 6)
    pts = board.object_points()
    assert pts.shape == (54, 3)
    np.testing.assert_allclose(pts[1], [8.0, 0.0, 0.0])
    np.testing.assert_allclose(pts[9], [0.0, 8.0, 0.0])
    assert board.describe() == "chessboard 10x7 squares, 8 mm"
    assert board.orientation_is_unique
    assert not BoardSpec(BoardKind.CHESSBOARD, 10, 8, 8.0).orientation_is_unique
    assert BoardSpec(BoardKind.CHARUCO, 10, 8, 8.0).orientation_is_unique


def test_corners_are_sub_pixel_accurate_and_in_board_order() -> None:
    pose = calibration_poses(CAMERA_BOARD, 2, seed=3)[1]
    img = render_board(CAMERA_BOARD, pose, look=Look(), rng=np.random.default_rng(0))
    det = detect_board(img, CAMERA_BOARD)
    assert det is not None
    truth = project_board(CAMERA_BOARD, pose)
    err = np.linalg.norm(det.image_points - truth, axis=1)
    assert err.mean() < 0.15 and err.max() < 0.4
    np.testing.assert_array_equal(det.ids, np.arange(54))


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_corner_order_follows_the_board_not_the_image(turns: int) -> None:
    """Turn the picture: corner 0 stays at the same physical corner of the board."""
    pose = conveyor_pose(CAMERA_BOARD, distance_mm=200.0, rotation_deg=8.0)
    img = render_board(CAMERA_BOARD, pose, look=Look(), rng=np.random.default_rng(0))
    turned = np.ascontiguousarray(np.rot90(img, turns))
    det = detect_board(turned, CAMERA_BOARD)
    assert det is not None
    truth = project_board(CAMERA_BOARD, pose)
    w = img.shape[1] - 1
    for _ in range(turns):  # np.rot90 turns counter-clockwise: (x, y) -> (y, w - x)
        truth = np.stack([truth[:, 1], w - truth[:, 0]], axis=1)
    assert np.linalg.norm(det.image_points - truth, axis=1).max() < 0.5


@pytest.mark.parametrize(
    "image", [np.zeros((320, 320, 3), np.uint8), np.full((50, 60), 200, np.uint8)]
)
def test_no_board_gives_none(image: np.ndarray) -> None:
    assert detect_board(image, CAMERA_BOARD) is None


def test_wrong_channel_count_is_an_error() -> None:
    with pytest.raises(CalibrationError, match="grey or BGR"):
        detect_board(np.zeros((10, 10, 4), np.uint8), CAMERA_BOARD)


def test_charuco_detection_gives_ids_and_accurate_corners() -> None:
    board = BoardSpec(BoardKind.CHARUCO, 7, 5, 12.0)
    pose = conveyor_pose(board, distance_mm=150.0, rotation_deg=-5.0)
    img = render_board(board, pose, look=Look(), rng=np.random.default_rng(1))
    det = detect_board(img, board)
    assert det is not None
    assert det.count == board.corner_count
    truth = project_board(board, pose)[det.ids]
    assert np.linalg.norm(det.image_points - truth, axis=1).mean() < 0.2
