"""Dimensional checks in the station: real calibration files, rendered parts with known size."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from cellinspect.calibration.camera_file import load_camera_calibration, save_camera_calibration
from cellinspect.config import RecipeInvalidError, load_recipe
from cellinspect.datagen.flange import make_spec, render_part
from cellinspect.entities import Verdict
from cellinspect.errors import CalibrationError
from cellinspect.runtime.inspector import Inspector
from tests.conftest import ROOT

RECIPE = ROOT / "recipes" / "flange-measure.yaml"


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector.from_recipe(RECIPE)


def _measure_roi(
    inspector: Inspector, label: str, index: int
) -> tuple[Verdict, dict[str, float], tuple[str, ...]]:
    result = inspector.inspect_image(render_part(make_spec(index, 5, label))).result
    (measure,) = [r for r in result.rois if r.roi == "measure"]
    return measure.verdict, measure.scores, measure.reasons


@pytest.mark.parametrize("index", [0, 1, 2])
def test_good_parts_measure_within_tolerance(inspector: Inspector, index: int) -> None:
    verdict, scores, reasons = _measure_roi(inspector, "good", index)
    spec = make_spec(index, 5, "good")
    assert verdict is Verdict.PASS, reasons
    assert scores["measure:outer_diameter_mm"] == pytest.approx(spec.outer_diameter_mm, abs=0.25)
    assert scores["measure:bolt_circle_diameter_mm"] == pytest.approx(
        spec.bolt_circle_diameter_mm, abs=0.25
    )
    assert scores["measure:hole_count"] == 6


def test_missing_hole_is_out_of_tolerance(inspector: Inspector) -> None:
    result = inspector.inspect_image(render_part(make_spec(3, 5, "missing_hole"))).result
    assert result.verdict is Verdict.FAIL
    assert any("hole_count 5, expected 6" in r for r in result.reasons)
    assert result.plane_calibration_id == "conveyor-plane-v1"
    assert result.calibration_id == "virtualcam-320-v1"


def test_blank_belt_is_not_measurable_and_fails_safe(inspector: Inspector) -> None:
    belt = render_part(make_spec(0, 5, "good"))
    belt[:] = 40
    result = inspector.inspect_image(belt).result
    assert result.verdict is Verdict.FAIL
    assert any("not measurable" in r for r in result.reasons)


def test_measurements_need_a_plane_calibration(tmp_path: Path) -> None:
    text = RECIPE.read_text().replace("plane_calibration: ../calibration/plane.yaml\n", "")
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeInvalidError, match="plane_calibration"):
        load_recipe(tmp_path / "r.yaml")


def test_station_refuses_a_plane_made_with_another_camera_calibration(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "calibration", tmp_path / "calibration")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    (tmp_path / "models").symlink_to(ROOT / "models")
    camera_file = tmp_path / "calibration" / "camera.yaml"
    camera = load_camera_calibration(camera_file)
    changed = camera.camera_matrix.copy()
    changed[0, 0] += 5.0
    save_camera_calibration(
        type(camera)(
            calibration_id=camera.calibration_id,
            image_size=camera.image_size,
            camera_matrix=changed,
            dist_coeffs=camera.dist_coeffs,
        ),
        camera_file,
    )
    with pytest.raises(CalibrationError, match="calibrate the plane again"):
        Inspector.from_recipe(tmp_path / "recipes" / "flange-measure.yaml")


def test_wrong_resolution_frames_are_fail_safe(inspector: Inspector) -> None:
    frame = cv2.resize(render_part(make_spec(0, 5, "good")), (400, 300))
    result = inspector.inspect_image(frame).result
    assert result.verdict is Verdict.FAIL
    assert result.error is not None and "400x300" in result.error


def test_station_refuses_a_calibration_for_another_camera_resolution(tmp_path: Path) -> None:
    text = RECIPE.read_text().replace(
        'source:\n  type: folder\n  path: ../sample_images\n  pattern: "*.bmp"\n',
        "source:\n  type: camera\n  device: 0\n  width: 640\n  height: 480\n",
    )
    assert "type: camera" in text
    recipe = tmp_path / "camera.yaml"
    recipe.write_text(text.replace("../", f"{ROOT}/"))
    with pytest.raises(CalibrationError, match="640x480"):
        Inspector.from_recipe(recipe)
