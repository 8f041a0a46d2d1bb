"""Camera calibration from rendered views: recovery of the true intrinsics and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.calibration.camera import (
    calibrate_camera,
    report_image,
    save_camera_report,
    undistort_image,
)
from cellinspect.calibration.camera_file import CameraCalibration, load_camera_calibration
from cellinspect.calibration.render import CAMERA_BOARD
from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.errors import CalibrationError

from .conftest import imread


def undistortion_error_px(cal: CameraCalibration, margin: int = 0) -> float:
    """Largest distance between undistorted pixels (each with its own K) and the truth's."""
    lo, hi = margin, DEFAULT_CAMERA.width - 1 - margin
    grid = np.mgrid[lo : hi + 1 : 8, lo : hi + 1 : 8].reshape(2, -1).T.astype(np.float64)
    pts = grid.reshape(-1, 1, 2)
    k_true = DEFAULT_CAMERA.camera_matrix
    truth = cv2.undistortPoints(pts, k_true, DEFAULT_CAMERA.dist_coeffs, P=k_true)
    est = cv2.undistortPoints(pts, cal.camera_matrix, cal.dist_coeffs, P=cal.camera_matrix)
    return float(np.linalg.norm((truth - est).reshape(-1, 2), axis=1).max())


def test_recovers_known_intrinsics(view_files: list[Path]) -> None:
    report = calibrate_camera(view_files, CAMERA_BOARD, "test-cam")
    cal = report.calibration
    k = cal.camera_matrix
    assert k[0, 0] == pytest.approx(DEFAULT_CAMERA.fx, rel=0.01)
    assert k[1, 1] == pytest.approx(DEFAULT_CAMERA.fy, rel=0.01)
    assert k[0, 2] == pytest.approx(DEFAULT_CAMERA.cx, abs=2.0)
    assert k[1, 2] == pytest.approx(DEFAULT_CAMERA.cy, abs=2.0)
    assert undistortion_error_px(cal, margin=10) < 0.6
    assert cal.rms_error < 0.2
    assert len(cal.per_image_errors) == len(view_files)
    assert report.rejected == ()
    assert cal.image_size == (DEFAULT_CAMERA.width, DEFAULT_CAMERA.height)
    assert "chessboard 10x7" in cal.board


def test_without_calibration_undistortion_is_off(view_files: list[Path]) -> None:
    """The mapping check above can fail: zero distortion is far from the truth."""
    plain = CameraCalibration("none", (320, 320), DEFAULT_CAMERA.camera_matrix, np.zeros(5))
    assert undistortion_error_px(plain, margin=10) > 3.0


def _copy(files: list[Path], folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, folder / f.name)) for f in files[:count]]


def _belt_only(path: Path) -> Path:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(60, 140, (320, 320), dtype=np.uint8), (0, 0), 3)
    cv2.imwrite(str(path), img)
    return path


def test_board_less_image_is_rejected_by_name(view_files: list[Path], tmp_path: Path) -> None:
    files = [*_copy(view_files, tmp_path, 6), _belt_only(tmp_path / "no_board.png")]
    report = calibrate_camera(files, CAMERA_BOARD, "cam")
    assert [r.name for r in report.rejected] == ["no_board.png"]
    assert "board not found" in report.rejected[0].reason
    assert len(report.used) == 6


def test_blurry_image_is_rejected_by_name(view_files: list[Path], tmp_path: Path) -> None:
    files = _copy(view_files, tmp_path, 6)
    blurred = tmp_path / "blurred.png"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(imread(files[0]), (0, 0), 2.5))
    report = calibrate_camera([*files, blurred], CAMERA_BOARD, "cam")
    assert [r.name for r in report.rejected] == ["blurred.png"]
    assert "blurry" in report.rejected[0].reason


def test_too_few_views_names_the_rejected(view_files: list[Path], tmp_path: Path) -> None:
    files = [*_copy(view_files, tmp_path, 3), _belt_only(tmp_path / "empty.png")]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    files.append(tmp_path / "broken.png")
    with pytest.raises(CalibrationError) as info:
        calibrate_camera(files, CAMERA_BOARD, "cam")
    msg = str(info.value)
    assert "too few views: 3 usable of 5" in msg
    assert "empty.png: board not found" in msg
    assert "broken.png: cannot be read" in msg


def test_mixed_image_sizes_name_the_files(view_files: list[Path], tmp_path: Path) -> None:
    files = _copy(view_files, tmp_path, 6)
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), cv2.resize(imread(files[0]), (400, 300)))
    with pytest.raises(CalibrationError, match=r"different sizes.*400x300: odd\.png"):
        calibrate_camera([*files, odd], CAMERA_BOARD, "cam")


@pytest.mark.parametrize("images", [[], [np.zeros((320, 320, 3), np.uint8)]])
def test_empty_or_boardless_input(images: list[np.ndarray]) -> None:
    with pytest.raises(CalibrationError, match=r"no images|too few views"):
        calibrate_camera(images, CAMERA_BOARD, "cam")


def test_arrays_are_accepted_and_named(view_files: list[Path]) -> None:
    arrays = [imread(f) for f in view_files[:5]]
    report = calibrate_camera(arrays, CAMERA_BOARD, "cam", min_views=5)
    assert [u.name for u in report.used] == [f"image[{i}]" for i in range(5)]


def test_save_load_and_report(view_files: list[Path], tmp_path: Path) -> None:
    report = calibrate_camera(view_files, CAMERA_BOARD, "cam-v1")
    cal = save_camera_report(report, tmp_path / "cam.yaml", tmp_path / "cam.png")
    again = load_camera_calibration(tmp_path / "cam.yaml")
    assert again.calibration_id == "cam-v1"
    np.testing.assert_allclose(again.camera_matrix, report.calibration.camera_matrix)
    assert cal.sha256 == again.sha256 and len(cal.sha256) == 64
    picture = imread(tmp_path / "cam.png")
    assert picture.shape == report_image(report).shape
    assert picture.shape[1] > 2 * 320


def test_calibration_for_another_resolution_is_refused(
    view_files: list[Path], tmp_path: Path
) -> None:
    report = calibrate_camera(view_files, CAMERA_BOARD, "cam-v1")
    cal = save_camera_report(report, tmp_path / "cam.yaml")
    cal.check_fits(320, 320)
    with pytest.raises(
        CalibrationError, match=r"calibrated for 320x320, but the camera gives 640x480"
    ):
        load_camera_calibration(tmp_path / "cam.yaml").check_fits(640, 480)
    with pytest.raises(CalibrationError, match="640x480"):
        undistort_image(np.zeros((480, 640, 3), np.uint8), cal)
