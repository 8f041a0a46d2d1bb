"""Conveyor plane: pixels -> mm against the rendered truth, files, and refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from cellinspect.calibration.board import BoardKind, BoardSpec
from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.plane import (
    PlaneCalibration,
    calibrate_plane,
    load_plane_calibration,
    mm_per_px,
    mm_to_pixel,
    pixel_to_mm,
    plane_for_camera_matrix,
    raw_pixel_to_mm,
    save_plane_calibration,
    undistort_points,
)
from cellinspect.calibration.render import (
    BELT_DISTANCE_MM,
    PLANE_BOARD,
    BoardPose,
    Look,
    conveyor_pose,
    render_board,
)
from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.errors import CalibrationError

F64 = npt.NDArray[np.float64]
POSE = conveyor_pose(PLANE_BOARD, rotation_deg=2.0, centre_offset_px=(4.0, -3.0))


def truth_mm(undistorted_px: F64, pose: BoardPose, height_mm: float = 0.0) -> F64:
    """Where the ray of each (truly) undistorted pixel meets the plane `height_mm` above it."""
    k = DEFAULT_CAMERA.camera_matrix
    rays = np.c_[(undistorted_px - k[:2, 2]) / [k[0, 0], k[1, 1]], np.ones(len(undistorted_px))]
    rot = pose.rotation
    centre = -rot.T @ pose.tvec
    dirs = rays @ rot
    lam = (-height_mm - centre[2]) / dirs[:, 2]  # board z points into the belt
    return np.asarray(centre[:2] + lam[:, None] * dirs[:, :2])


@pytest.fixture(scope="module")
def plane_image() -> np.ndarray:
    return render_board(PLANE_BOARD, POSE, look=Look(), rng=np.random.default_rng(0), margin_mm=4)


@pytest.fixture(scope="module")
def plane(plane_image: np.ndarray, true_camera: CameraCalibration) -> PlaneCalibration:
    return calibrate_plane(plane_image, true_camera, PLANE_BOARD, "plane-test")


GRID = np.mgrid[10:311:20, 10:311:20].reshape(2, -1).T.astype(np.float64)


def test_residual_and_mapping_match_the_truth(plane: PlaneCalibration) -> None:
    assert plane.residual_rms_mm < 0.05 and plane.residual_max_mm < 0.1
    err = np.linalg.norm(pixel_to_mm(GRID, plane) - truth_mm(GRID, POSE), axis=1)
    assert err.max() < 0.1
    assert mm_per_px(plane) == pytest.approx(BELT_DISTANCE_MM / DEFAULT_CAMERA.fx, rel=0.002)
    assert plane.camera_position_mm[2] == pytest.approx(BELT_DISTANCE_MM, abs=0.5)
    back = mm_to_pixel(pixel_to_mm(GRID, plane), plane)
    np.testing.assert_allclose(back, GRID, atol=1e-6)


def test_heights_above_the_belt_follow_the_rays(plane: PlaneCalibration) -> None:
    err = np.linalg.norm(pixel_to_mm(GRID, plane, 8.0) - truth_mm(GRID, POSE, 8.0), axis=1)
    assert err.max() < 0.1
    flat = np.linalg.norm(pixel_to_mm(GRID, plane) - truth_mm(GRID, POSE, 8.0), axis=1)
    assert flat.max() > 2.0  # ignoring the height would be millimetres off at the edges
    with pytest.raises(CalibrationError, match="not below the camera"):
        pixel_to_mm(GRID, plane, 200.0)


def test_board_origin_shifts_the_plane(
    plane_image: np.ndarray, true_camera: CameraCalibration, plane: PlaneCalibration
) -> None:
    moved = calibrate_plane(plane_image, true_camera, PLANE_BOARD, "p2", board_origin_mm=(100, -5))
    np.testing.assert_allclose(
        pixel_to_mm(GRID, moved), pixel_to_mm(GRID, plane) + np.array([100.0, -5.0]), atol=1e-3
    )


def test_raw_pixels_are_undistorted_first(
    plane: PlaneCalibration, true_camera: CameraCalibration
) -> None:
    raw = np.array([[5.0, 5.0], [160.0, 160.0], [300.0, 40.0]])
    np.testing.assert_allclose(
        raw_pixel_to_mm(raw, plane, true_camera),
        pixel_to_mm(undistort_points(raw, true_camera), plane),
    )
    # at the image corner, skipping undistortion would be a large error
    assert (
        np.linalg.norm(raw_pixel_to_mm(raw, plane, true_camera)[0] - pixel_to_mm(raw, plane)[0]) > 1
    )


def test_other_undistorted_camera_matrix(
    plane: PlaneCalibration, true_camera: CameraCalibration
) -> None:
    """A zooming undistort (alpha 0) has other pixels; the adapted plane maps them right."""
    k = true_camera.camera_matrix
    new_k, _ = cv2.getOptimalNewCameraMatrix(k, true_camera.dist_coeffs, (320, 320), 0.0)
    zoomed = plane_for_camera_matrix(plane, true_camera, new_k)
    raw = GRID
    own = cv2.undistortPoints(raw.reshape(-1, 1, 2), k, true_camera.dist_coeffs, P=new_k)
    np.testing.assert_allclose(
        pixel_to_mm(own.reshape(-1, 2), zoomed), raw_pixel_to_mm(raw, plane, true_camera), atol=1e-3
    )
    # without the adaptation the zoomed pixels land elsewhere
    assert (
        np.abs(
            pixel_to_mm(own.reshape(-1, 2), plane) - pixel_to_mm(own.reshape(-1, 2), zoomed)
        ).max()
        > 1
    )


def test_save_and_load(plane: PlaneCalibration, tmp_path: Path) -> None:
    path = save_plane_calibration(plane, tmp_path / "plane.yaml")
    again = load_plane_calibration(path)
    np.testing.assert_allclose(again.homography, plane.homography)
    assert again.calibration_id == "plane-test"
    assert again.camera_calibration_id == "truth"
    assert again.residual_rms_mm == pytest.approx(plane.residual_rms_mm)
    assert len(again.sha256) == 64 and again.path == path
    text = path.read_text()
    assert "homography" in text and "camera_sha256" in text


def test_load_errors_name_file_and_key(plane: PlaneCalibration, tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not found"):
        load_plane_calibration(tmp_path / "missing.yaml")
    path = save_plane_calibration(plane, tmp_path / "plane.yaml")
    cut = "\n".join(line for line in path.read_text().splitlines() if "residual_max" not in line)
    path.write_text(cut + "\n")
    with pytest.raises(CalibrationError, match=r"plane\.yaml: missing key 'residual_max_mm'"):
        load_plane_calibration(path)
    (tmp_path / "junk.yaml").write_text("just: [text")
    with pytest.raises(CalibrationError, match=r"junk\.yaml"):
        load_plane_calibration(tmp_path / "junk.yaml")


def test_check_fits(plane: PlaneCalibration, true_camera: CameraCalibration) -> None:
    plane.check_fits(true_camera)
    with pytest.raises(CalibrationError, match="made with camera calibration 'truth'"):
        plane.check_fits(replace(true_camera, calibration_id="other"))
    with pytest.raises(CalibrationError, match="640x480"):
        plane.check_fits(replace(true_camera, image_size=(640, 480)))
    signed = replace(plane, camera_sha256="a" * 64)
    with pytest.raises(CalibrationError, match="has changed since"):
        signed.check_fits(replace(true_camera, sha256="b" * 64))


def test_refusals(true_camera: CameraCalibration, plane_image: np.ndarray) -> None:
    symmetric = BoardSpec(BoardKind.CHESSBOARD, 10, 8, 6.0)
    with pytest.raises(CalibrationError, match="ambiguous"):
        calibrate_plane(plane_image, true_camera, symmetric, "p")
    with pytest.raises(CalibrationError, match="not found"):
        calibrate_plane(np.zeros((320, 320, 3), np.uint8), true_camera, PLANE_BOARD, "p")
    with pytest.raises(CalibrationError, match="gives 640x480"):
        calibrate_plane(np.zeros((480, 640, 3), np.uint8), true_camera, PLANE_BOARD, "p")
    with pytest.raises(CalibrationError, match="homography must be 3x3"):
        PlaneCalibration("x", np.eye(2), (320, 320), "c", "", 0, 0, np.zeros(3))


def test_charuco_plane(true_camera: CameraCalibration) -> None:
    board = BoardSpec(BoardKind.CHARUCO, 9, 7, 8.0)
    pose = conveyor_pose(board, rotation_deg=-3.0)
    img = render_board(board, pose, look=Look(), rng=np.random.default_rng(2), margin_mm=4)
    plane = calibrate_plane(img, true_camera, board, "charuco-plane")
    assert plane.residual_rms_mm < 0.1
    err = np.linalg.norm(pixel_to_mm(GRID, plane) - truth_mm(GRID, pose), axis=1)
    assert err.max() < 0.15
