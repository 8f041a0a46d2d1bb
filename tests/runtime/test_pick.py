"""Pick poses of rejected parts in the robot base frame, against the simulated cell's truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.datagen.flange import WORKING_DISTANCE_MM, make_spec, render_part
from cellinspect.entities import Verdict
from cellinspect.runtime.inspector import Inspector
from tests.conftest import ROOT

TRUTH = ROOT / "calibration" / "images" / "handeye" / "truth.yaml"


def _true_camera_to_base() -> np.ndarray:
    fs = cv2.FileStorage(str(TRUTH), cv2.FILE_STORAGE_READ)
    try:
        return np.asarray(fs.getNode("camera_to_base").mat(), dtype=np.float64)
    finally:
        fs.release()


@pytest.mark.parametrize("recipe", ["flange.yaml", "flange-measure.yaml"])
def test_rejected_parts_get_pick_poses_in_the_robot_base_frame(recipe: str) -> None:
    inspector = Inspector.from_recipe(ROOT / "recipes" / recipe)
    camera_to_base = _true_camera_to_base()
    for index in range(3):
        spec = make_spec(index, 11, "dent")
        result = inspector.inspect_image(render_part(spec), part_id=index, encoder=10).result
        assert result.verdict is not Verdict.PASS
        assert result.pick_frame == "robot_base"
        assert result.pick_x_mm is not None and result.pick_y_mm is not None
        # the part's top-face centre, from its true pixel position and the working distance
        cam = DEFAULT_CAMERA
        x = (spec.centre_x_px - cam.cx) / cam.fx * WORKING_DISTANCE_MM
        y = (spec.centre_y_px - cam.cy) / cam.fy * WORKING_DISTANCE_MM
        truth = camera_to_base @ np.array([x, y, WORKING_DISTANCE_MM, 1.0])
        error = np.hypot(truth[0] - result.pick_x_mm, truth[1] - result.pick_y_mm)
        assert error < 0.5, (recipe, index, error)


def test_passed_parts_carry_no_pick_pose() -> None:
    inspector = Inspector.from_recipe(ROOT / "recipes" / "flange.yaml")
    result = inspector.inspect_image(render_part(make_spec(1, 11, "good"))).result
    assert result.verdict is Verdict.PASS
    assert result.pick_x_mm is None and result.to_dict()["pick"] is None
