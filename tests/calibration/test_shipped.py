"""The calibration files in calibration/ against the virtual camera's known truth."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.calibration.camera import undistort_image
from cellinspect.calibration.camera_file import load_camera_calibration
from cellinspect.calibration.handeye import HandEyeMode, load_handeye_transform
from cellinspect.calibration.measure import measure_circle_features
from cellinspect.calibration.measure_config import MeasurementSpec
from cellinspect.calibration.plane import load_plane_calibration, pixel_to_mm
from cellinspect.calibration.poses import Transform, rotation_angle_deg
from cellinspect.calibration.render import (
    CAMERA_BOARD,
    PLANE_BOARD,
    Look,
    calibration_poses,
    conveyor_pose,
    render_board,
)
from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.datagen.flange import THICKNESS_MM, make_spec, render_part

from .conftest import SHIPPED
from .test_camera import undistortion_error_px
from .test_plane import truth_mm


def test_shipped_camera_matches_the_virtual_camera() -> None:
    cal = load_camera_calibration(SHIPPED / "camera.yaml")
    assert cal.calibration_id == "virtualcam-320-v1"
    assert cal.image_size == (320, 320)
    k = cal.camera_matrix
    assert k[0, 0] == pytest.approx(DEFAULT_CAMERA.fx, rel=0.01)
    assert k[1, 1] == pytest.approx(DEFAULT_CAMERA.fy, rel=0.01)
    assert k[0, 2] == pytest.approx(DEFAULT_CAMERA.cx, abs=2.0)
    assert k[1, 2] == pytest.approx(DEFAULT_CAMERA.cy, abs=2.0)
    assert undistortion_error_px(cal) < 0.5  # over the whole image, corners included
    assert cal.rms_error < 0.2
    assert len(cal.per_image_errors) == len(list((SHIPPED / "images/camera").glob("*.png")))


def test_shipped_plane_maps_pixels_to_mm() -> None:
    cam = load_camera_calibration(SHIPPED / "camera.yaml")
    plane = load_plane_calibration(SHIPPED / "plane.yaml")
    plane.check_fits(cam)
    assert plane.residual_rms_mm < 0.2 and plane.residual_max_mm < 0.2
    # the shipped image: the board turned 1.5 degrees on the belt (render-plane's default)
    pose = conveyor_pose(PLANE_BOARD, rotation_deg=1.5)
    grid = np.mgrid[20:301:20, 20:301:20].reshape(2, -1).T.astype(np.float64)
    err = np.linalg.norm(pixel_to_mm(grid, plane) - truth_mm(grid, pose), axis=1)
    assert err.max() < 0.2


def test_shipped_calibration_measures_a_flange() -> None:
    cam = load_camera_calibration(SHIPPED / "camera.yaml")
    plane = load_plane_calibration(SHIPPED / "plane.yaml")
    spec = replace(make_spec(4, 0, "good"), scale=1.0)
    m = measure_circle_features(
        undistort_image(render_part(spec), cam), plane, MeasurementSpec(part_height_mm=THICKNESS_MM)
    )
    assert m.outer_diameter_mm == pytest.approx(spec.outer_diameter_mm, abs=0.2)
    assert m.bolt_circle_diameter_mm == pytest.approx(spec.bolt_circle_diameter_mm, abs=0.2)


def test_shipped_handeye_matches_the_simulated_cell() -> None:
    mode, found = load_handeye_transform(SHIPPED / "handeye.yaml")
    assert mode is HandEyeMode.EYE_TO_HAND
    fs = cv2.FileStorage(str(SHIPPED / "images/handeye/truth.yaml"), cv2.FILE_STORAGE_READ)
    truth = Transform.from_matrix(fs.getNode("camera_to_base").mat())
    fs.release()
    assert np.linalg.norm(found.translation - truth.translation) < 1.0
    assert rotation_angle_deg(found.rotation.T @ truth.rotation) < 0.2


def test_shipped_images_are_reproducible() -> None:
    """render-views / render-plane with the README's arguments give the same pixels."""
    rng = np.random.default_rng(0)
    for i, pose in enumerate(calibration_poses(CAMERA_BOARD, 2, seed=0)):
        img = render_board(CAMERA_BOARD, pose, look=Look.random(rng), rng=rng)
        shipped = cv2.imread(str(SHIPPED / f"images/camera/view_{i:02d}.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(img[:, :, 0], shipped)
    plane = render_board(
        PLANE_BOARD,
        conveyor_pose(PLANE_BOARD, rotation_deg=1.5),
        look=Look(),
        rng=np.random.default_rng(0),
        margin_mm=0.7 * PLANE_BOARD.square_mm,
    )
    shipped = cv2.imread(str(SHIPPED / "images/plane/plane.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(plane[:, :, 0], shipped)


def test_shipped_folder_is_small_and_documented() -> None:
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 4 * 1024 * 1024
    readme = (SHIPPED / "README.md").read_text()
    for needed in ("render-views", "render-plane", "render-handeye", "calibrate camera"):
        assert needed in readme
    for name in ("camera.yaml", "plane.yaml", "handeye.yaml", "camera_report.png"):
        assert (SHIPPED / name).is_file(), name
    assert isinstance(SHIPPED, Path)
