"""Undistortion against the virtual camera's known lens: distort a known image, undo it.

A point at ideal pixel p (pinhole camera K) lands in the undistorted image at K' K^-1 p, where
K' is the Undistorter's new camera matrix; alpha changes K', so the checks go through K'.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.datagen.camera import distort_image
from cellinspect.entities import ImageU8
from cellinspect.errors import CalibrationError, PreprocessError
from cellinspect.preprocess.undistort import Undistorter

F64 = npt.NDArray[np.float64]
SIZE = 320
GRID = np.array([(x, y) for y in range(40, 281, 40) for x in range(40, 281, 40)], dtype=float)


def dot_grid() -> ImageU8:
    """Soft dots at the GRID positions of an ideal (pinhole) image."""
    gray = np.zeros((SIZE, SIZE), dtype=np.float32)
    for x, y in GRID.astype(int):
        gray[y, x] = 1.0
    blurred = np.asarray(cv2.GaussianBlur(gray, (9, 9), 1.5), dtype=np.float64)
    levels = (blurred / blurred.max() * 255).round().astype(np.uint8)
    return np.dstack([levels] * 3)


def line_grid() -> ImageU8:
    """Horizontal and vertical 1 px lines (horizontal ones only used for straightness)."""
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    for y in (30, 90, 160, 230, 290):
        image[y, 25:296] = 255
    return image


def blob_centroids(image: ImageU8) -> F64:
    """Intensity-weighted centre (x, y) of every blob."""
    gray = image[:, :, 0]
    count, labels = cv2.connectedComponents((gray > 20).astype(np.uint8))
    weights = gray.astype(np.float64)
    ys, xs = np.indices(gray.shape)
    centres = []
    for label in range(1, count):
        w = np.where(labels == label, weights, 0.0)
        centres.append(((xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()))
    return np.array(centres, dtype=np.float64).reshape(-1, 2)


def nearest_errors(expected: F64, found: F64) -> F64:
    distances = np.linalg.norm(expected[:, None, :] - found[None, :, :], axis=2)
    return np.asarray(distances.min(axis=1), dtype=np.float64)


def ideal_to_undistorted(points: F64, cal: CameraCalibration, new_k: F64) -> F64:
    homogeneous = np.column_stack([points, np.ones(len(points))])
    mapped = (new_k @ np.linalg.inv(cal.camera_matrix) @ homogeneous.T).T
    return np.asarray(mapped[:, :2] / mapped[:, 2:], dtype=np.float64)


def inside(points: F64, margin: float) -> F64:
    keep = ((points >= margin) & (points <= SIZE - 1 - margin)).all(axis=1)
    return points[keep]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_dots_land_back_on_their_ideal_positions(
    calibration: CameraCalibration, alpha: float
) -> None:
    distorted = distort_image(dot_grid())
    moved = nearest_errors(GRID, blob_centroids(distorted))
    assert moved.max() > 3.0, "the lens must move the outer dots, or this test proves nothing"

    undistort = Undistorter(calibration, alpha)
    found = blob_centroids(undistort(distorted))
    expected = inside(ideal_to_undistorted(GRID, calibration, undistort.new_camera_matrix), 8)
    assert len(expected) >= 25
    assert nearest_errors(expected, found).max() < 0.5


@pytest.mark.parametrize("scale", [0.5, 0.875, 1.5])
def test_scaled_undistort_resizes_in_the_same_remap(
    calibration: CameraCalibration, scale: float
) -> None:
    distorted = distort_image(dot_grid())
    undistort = Undistorter(calibration, 0.0, scale)
    out = undistort(distorted)
    assert out.shape[:2] == (round(SIZE * scale), round(SIZE * scale))
    assert undistort.output_size == (out.shape[1], out.shape[0])
    found = blob_centroids(out)
    expected = ideal_to_undistorted(GRID, calibration, undistort.new_camera_matrix)
    keep = ((expected >= 8 * scale) & (expected <= out.shape[0] - 1 - 8 * scale)).all(axis=1)
    assert keep.sum() >= 25
    assert nearest_errors(expected[keep], found).max() < 0.5 * max(1.0, scale)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), 5.0])
def test_refuses_bad_scale(calibration: CameraCalibration, scale: float) -> None:
    with pytest.raises(CalibrationError, match="scale"):
        Undistorter(calibration, 0.0, scale)


def test_undistort_points_matches_the_image_remap(calibration: CameraCalibration) -> None:
    undistort = Undistorter(calibration, 1.0)
    seen = blob_centroids(distort_image(dot_grid()))
    mapped = undistort.undistort_points(seen)
    expected = ideal_to_undistorted(GRID, calibration, undistort.new_camera_matrix)
    assert nearest_errors(expected, mapped).max() < 0.5


def straightness(image: ImageU8) -> list[float]:
    """Per horizontal line: largest distance of its per-column centre from a fitted line."""
    gray = image[:, :, 0]
    count, labels = cv2.connectedComponents((gray > 30).astype(np.uint8))
    ys = np.arange(gray.shape[0], dtype=np.float64)[:, None]
    residuals = []
    for label in range(1, count):
        w = np.where(labels == label, gray.astype(np.float64), 0.0)
        cols = np.nonzero(w.sum(axis=0) > 0)[0]
        cols = cols[3:-3]  # line ends are blurred by interpolation
        centre = (w[:, cols] * ys).sum(axis=0) / w[:, cols].sum(axis=0)
        fit = np.polyval(np.polyfit(cols, centre, 1), cols)
        residuals.append(float(np.abs(centre - fit).max()))
    return residuals


def test_straight_lines_come_out_straight(calibration: CameraCalibration) -> None:
    distorted = distort_image(line_grid())
    assert max(straightness(distorted)) > 1.0, "the lens must bend the outer lines"
    straightened = straightness(Undistorter(calibration, 1.0)(distorted))
    assert len(straightened) == 5
    assert max(straightened) < 0.35


def test_alpha_changes_the_new_camera_matrix(calibration: CameraCalibration) -> None:
    valid_only = Undistorter(calibration, 0.0).new_camera_matrix
    every_pixel = Undistorter(calibration, 1.0).new_camera_matrix
    assert valid_only.shape == every_pixel.shape == (3, 3)
    # Keeping every source pixel needs a wider view: a shorter focal length.
    assert valid_only[0, 0] > every_pixel[0, 0]
    assert not valid_only.flags.writeable


def test_alpha_zero_leaves_no_black_border(calibration: CameraCalibration) -> None:
    frame = np.full((SIZE, SIZE, 3), 200, dtype=np.uint8)
    out = Undistorter(calibration, 0.0)(frame)
    assert out.shape == frame.shape
    assert (out == 200).all()
    # Barrel distortion undone with every source pixel kept: the frame's edges bow inwards.
    wide = Undistorter(calibration, 1.0)(frame)
    assert (wide[0, SIZE // 2] == 0).all()
    assert (wide[SIZE // 2, 0] == 0).all()


@pytest.mark.parametrize(("h", "w"), [(240, 320), (320, 321), (640, 640)])
def test_refuses_frames_of_another_size(calibration: CameraCalibration, h: int, w: int) -> None:
    with pytest.raises(CalibrationError) as info:
        Undistorter(calibration)(np.zeros((h, w, 3), dtype=np.uint8))
    assert "calibrated for 320x320" in str(info.value)
    assert f"gives {w}x{h}" in str(info.value)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_refuses_alpha_outside_0_1(calibration: CameraCalibration, alpha: float) -> None:
    with pytest.raises(CalibrationError, match="alpha"):
        Undistorter(calibration, alpha)


@pytest.mark.parametrize(
    "image",
    [np.zeros((SIZE, SIZE), dtype=np.uint8), np.zeros((SIZE, SIZE, 3), dtype=np.uint16)],
    ids=["2-D", "uint16"],
)
def test_refuses_broken_images(calibration: CameraCalibration, image: ImageU8) -> None:
    with pytest.raises(PreprocessError, match="undistort"):
        Undistorter(calibration)(image)
