"""Millimetre measurements on undistorted images: rendered flanges and drawn discs."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from cellinspect.calibration.camera import undistort_image
from cellinspect.calibration.camera_file import CameraCalibration
from cellinspect.calibration.measure import (
    FlangeMeasurement,
    MeasurementError,
    fit_circle,
    measure_circle_features,
    robust_fit_circle,
)
from cellinspect.calibration.measure_config import MeasurementSpec, Polarity
from cellinspect.calibration.plane import PlaneCalibration, calibrate_plane
from cellinspect.calibration.render import (
    BELT_DISTANCE_MM,
    PLANE_BOARD,
    Look,
    conveyor_pose,
    render_board,
)
from cellinspect.calibration.tolerances import check_tolerances
from cellinspect.datagen.camera import DEFAULT_CAMERA, distort_image
from cellinspect.datagen.flange import THICKNESS_MM, make_spec, render_part

FLANGE = MeasurementSpec(
    part_height_mm=THICKNESS_MM,
    outer_diameter_mm={"nominal": 60.0, "tol": 0.3},
    bore_diameter_mm={"nominal": 20.0, "tol": 0.3},
    hole_diameter_mm={"nominal": 6.6, "tol": 0.3},
    bolt_circle_diameter_mm={"nominal": 44.0, "tol": 0.3},
    hole_count=6,
    hole_position_mm=0.6,
    bore_concentricity_mm=0.4,
)


@pytest.fixture(scope="module")
def belt_plane(true_camera: CameraCalibration) -> PlaneCalibration:
    pose = conveyor_pose(PLANE_BOARD, rotation_deg=1.5)
    img = render_board(PLANE_BOARD, pose, look=Look(), rng=np.random.default_rng(0), margin_mm=4)
    return calibrate_plane(img, true_camera, PLANE_BOARD, "belt")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_rendered_flange_within_0_2_mm(
    index: int, true_camera: CameraCalibration, belt_plane: PlaneCalibration
) -> None:
    spec = replace(make_spec(index, 0, "good"), scale=1.0)  # scale != 1 moves the part in z
    frame = render_part(spec)
    m = measure_circle_features(undistort_image(frame, true_camera), belt_plane, FLANGE)
    assert m.outer_diameter_mm == pytest.approx(spec.outer_diameter_mm, abs=0.2)
    assert m.bolt_circle_diameter_mm == pytest.approx(spec.bolt_circle_diameter_mm, abs=0.2)
    assert m.bore_diameter_mm == pytest.approx(spec.bore_diameter_mm, abs=0.25)
    assert m.hole_count == 6
    for hole in m.holes:
        assert hole.diameter_mm == pytest.approx(spec.hole_diameter_mm, abs=0.2)
    results = check_tolerances(m, FLANGE)
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]


def test_ignoring_the_part_height_is_visibly_wrong(
    true_camera: CameraCalibration, belt_plane: PlaneCalibration
) -> None:
    """The top face is 8 mm nearer the camera than the belt: 7 % bigger if not corrected."""
    spec = replace(make_spec(0, 0, "good"), scale=1.0)
    und = undistort_image(render_part(spec), true_camera)
    m = measure_circle_features(und, belt_plane, MeasurementSpec())
    expected = spec.outer_diameter_mm * BELT_DISTANCE_MM / (BELT_DISTANCE_MM - THICKNESS_MM)
    assert m.outer_diameter_mm == pytest.approx(expected, abs=0.3)
    assert not all(
        r.ok for r in check_tolerances(m, FLANGE.model_copy(update={"part_height_mm": 0}))
    )


def test_missing_hole_fails_the_count(
    true_camera: CameraCalibration, belt_plane: PlaneCalibration
) -> None:
    spec = replace(make_spec(5, 0, "missing_hole"), scale=1.0)
    m = measure_circle_features(undistort_image(render_part(spec), true_camera), belt_plane, FLANGE)
    assert m.hole_count == 5
    failed = [r for r in check_tolerances(m, FLANGE) if not r.ok]
    assert [r.feature for r in failed] == ["hole_count"]
    assert failed[0].reason == "hole_count 5, expected 6"


def _disc_frame(
    centre_px: tuple[float, float],
    radius_px: float,
    holes: list[tuple[float, float, float]],
    part: int,
    belt: int,
) -> np.ndarray:
    """An ideal image drawn 8x larger and averaged down, then seen through the lens."""
    s = 8
    big = np.full((320 * s, 320 * s), belt, np.uint8)

    def circle(cx: float, cy: float, r: float, value: int) -> None:
        centre = (round((cx * s + (s - 1) / 2) * 16), round((cy * s + (s - 1) / 2) * 16))
        cv2.circle(big, centre, round(r * s * 16), value, -1, cv2.LINE_8, shift=4)

    circle(*centre_px, radius_px, part)
    for hx, hy, hr in holes:
        circle(hx, hy, hr, belt)
    ideal = cv2.resize(big, (320, 320), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    noisy = np.clip(ideal + rng.normal(0, 2.0, ideal.shape), 0, 255).astype(np.uint8)
    return distort_image(np.dstack([noisy] * 3))


@pytest.mark.parametrize(("part", "belt"), [(200, 60), (40, 190)])
def test_drawn_discs_either_polarity(
    part: int, belt: int, true_camera: CameraCalibration, belt_plane: PlaneCalibration
) -> None:
    """A flat disc on the belt (height 0): 50 mm across, a 16 mm bore, four 8 mm holes."""
    px_per_mm = DEFAULT_CAMERA.fx / BELT_DISTANCE_MM
    cx, cy = 158.0, 163.0
    holes = [
        (cx + 18 * px_per_mm * math.cos(a), cy + 18 * px_per_mm * math.sin(a), 4 * px_per_mm)
        for a in np.radians([0, 90, 180, 270]) + 0.3
    ]
    holes.append((cx, cy, 8 * px_per_mm))
    frame = _disc_frame((cx, cy), 25 * px_per_mm, holes, part, belt)
    m = measure_circle_features(undistort_image(frame, true_camera), belt_plane)
    assert m.outer_diameter_mm == pytest.approx(50.0, abs=0.15)
    assert m.bore_diameter_mm == pytest.approx(16.0, abs=0.15)
    assert m.bolt_circle_diameter_mm == pytest.approx(36.0, abs=0.15)
    assert m.hole_count == 4
    assert m.bore_offset_mm is not None and m.bore_offset_mm < 0.1
    wrong = MeasurementSpec(polarity=Polarity.DARK if part > belt else Polarity.BRIGHT)
    with pytest.raises(MeasurementError):
        measure_circle_features(undistort_image(frame, true_camera), belt_plane, wrong)


def test_no_part_and_cut_parts(
    true_camera: CameraCalibration, belt_plane: PlaneCalibration
) -> None:
    flat = np.full((320, 320, 3), 90, np.uint8)
    with pytest.raises(MeasurementError, match="no part found"):
        measure_circle_features(flat, belt_plane)
    specks = flat.copy()
    cv2.circle(specks, (100, 100), 3, (255, 255, 255), -1)
    with pytest.raises(MeasurementError, match="smaller than 10 mm"):
        measure_circle_features(specks, belt_plane)
    cut = _disc_frame((20.0, 160.0), 90.0, [], 200, 60)
    with pytest.raises(MeasurementError, match="touches the image border"):
        measure_circle_features(undistort_image(cut, true_camera), belt_plane)
    with pytest.raises(MeasurementError, match="640x480"):
        measure_circle_features(np.zeros((480, 640, 3), np.uint8), belt_plane)


def test_fit_circle_exact_and_robust() -> None:
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    pts = np.c_[3 + 7 * np.cos(t), -2 + 7 * np.sin(t)]
    cx, cy, r, res = fit_circle(pts)
    assert (cx, cy, r) == pytest.approx((3, -2, 7), abs=1e-9)
    assert np.abs(res).max() < 1e-9
    bad = pts.copy()
    bad[:5] *= 1.5  # a few wild edge points
    assert robust_fit_circle(bad)[2] == pytest.approx(7, abs=1e-6)
    with pytest.raises(MeasurementError, match="3 points"):
        fit_circle(pts[:2])


def test_to_dict(true_camera: CameraCalibration, belt_plane: PlaneCalibration) -> None:
    spec = replace(make_spec(1, 0, "good"), scale=1.0)
    m = measure_circle_features(undistort_image(render_part(spec), true_camera), belt_plane, FLANGE)
    assert isinstance(m, FlangeMeasurement)
    d = m.to_dict()
    assert d["hole_count"] == 6.0
    assert {"outer_diameter_mm", "bore_diameter_mm", "bolt_circle_diameter_mm"} <= set(d)
