"""Chains built from recipe op configs, recipe files and calibration files on disk."""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from cellinspect.calibration.camera_file import (
    CameraCalibration,
    load_camera_calibration,
    save_camera_calibration,
)
from cellinspect.config import PreprocessOp, Roi, load_recipe
from cellinspect.entities import ImageU8
from cellinspect.errors import CalibrationError, ConfigError, PreprocessError
from cellinspect.preprocess import ops
from cellinspect.preprocess.chain import BUILDERS, build_chain, build_chain_for_recipe, roi_crops
from cellinspect.preprocess.undistort import Undistorter

OPS = TypeAdapter(list[PreprocessOp])


def parse(raw: Sequence[Mapping[str, object]]) -> list[PreprocessOp]:
    """Op configs exactly as a recipe's `preprocess:` list yields them."""
    return OPS.validate_python(raw)


def test_every_recipe_op_has_a_builder() -> None:
    union = typing.get_args(typing.get_args(PreprocessOp)[0])
    names = {typing.get_args(cls.model_fields["op"].annotation)[0] for cls in union}
    assert names == set(BUILDERS)


def test_chain_runs_ops_in_order_and_describes_them(noise_image: ImageU8) -> None:
    chain = build_chain(
        parse(
            [
                {"op": "rotate", "degrees": 90},
                {"op": "flip", "mode": "horizontal"},
                {"op": "resize", "width": 32, "height": 40},
                {"op": "colour", "mode": "gray"},
                {"op": "blur", "kernel": 3},
                {"op": "letterbox", "width": 50, "height": 50, "pad_value": 0},
            ]
        )
    )
    expected = ops.rotate(noise_image, 90)
    expected = ops.flip(expected, "horizontal")
    expected = ops.resize(expected, 32, 40)
    expected = ops.colour(expected, "gray")
    expected = ops.blur(expected, 3)
    expected = ops.letterbox(expected, 50, 50, 0).image
    np.testing.assert_array_equal(chain(noise_image), expected)
    assert chain.describe() == [
        "rotate(90 deg ccw)",
        "flip(horizontal)",
        "resize(32x40)",
        "colour(gray)",
        "blur(kernel=3)",
        "letterbox(50x50, pad=0)",
    ]
    assert len(chain) == 6
    assert chain.undistorter is None


def test_order_matters(noise_image: ImageU8) -> None:
    a = build_chain(parse([{"op": "rotate", "degrees": 90}, {"op": "flip", "mode": "vertical"}]))
    b = build_chain(parse([{"op": "flip", "mode": "vertical"}, {"op": "rotate", "degrees": 90}]))
    assert not np.array_equal(a(noise_image), b(noise_image))


def test_empty_chain_returns_the_frame(noise_image: ImageU8) -> None:
    chain = build_chain([])
    assert chain(noise_image) is noise_image
    assert chain.describe() == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"op": "undistort"}], r"preprocess\[0\]: 'undistort' needs a camera calibration"),
        ([{"op": "blur", "kernel": 4}], r"preprocess\[0\]: blur: kernel must be an odd number"),
        (
            [{"op": "flip", "mode": "both"}, {"op": "blur", "kernel": 2}],
            r"preprocess\[1\]: blur",
        ),
        (
            [{"op": "rotate", "degrees": "nan"}],
            r"preprocess\[0\]: rotate: degrees must be a finite number",
        ),
    ],
)
def test_bad_recipe_values_fail_at_build(raw: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_chain(parse(raw))


def test_undistort_must_come_first(calibration: CameraCalibration) -> None:
    raw = [{"op": "flip", "mode": "both"}, {"op": "undistort"}]
    with pytest.raises(ConfigError, match=r"preprocess\[1\]: 'undistort' must be the first op"):
        build_chain(parse(raw), calibration)


def test_unknown_op_is_a_config_error() -> None:
    class Sharpen:
        op = "sharpen"

    with pytest.raises(ConfigError, match="unknown op 'sharpen'"):
        build_chain([Sharpen()])  # type: ignore[list-item]


def test_chain_with_a_calibration_file(tmp_path: Path, calibration: CameraCalibration) -> None:
    path = save_camera_calibration(calibration, tmp_path / "camera.yaml")
    loaded = load_camera_calibration(path)
    chain = build_chain(
        parse([{"op": "undistort", "alpha": 1.0}, {"op": "resize", "width": 160, "height": 160}]),
        loaded,
    )
    frame = np.random.default_rng(1).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    expected = ops.resize(Undistorter(calibration, 1.0)(frame), 160, 160)
    np.testing.assert_array_equal(chain(frame), expected)
    assert chain.describe()[0] == "undistort(alpha=1, scale=1, calibration=virtual-cam)"
    assert chain.undistorter is not None
    np.testing.assert_allclose(
        chain.undistorter.new_camera_matrix, Undistorter(calibration, 1.0).new_camera_matrix
    )
    with pytest.raises(CalibrationError, match="gives 640x480"):
        chain(np.zeros((480, 640, 3), dtype=np.uint8))


RECIPE = """
name: cells
calibration: calib/camera.yaml
preprocess:
  - op: undistort
  - op: rotate
    degrees: 180
rois:
  - {name: left, x: 0, y: 0, width: 160, height: 320}
  - {name: right, x: 160, y: 0, width: 160, height: 320}
models:
  - {name: m, path: models/m/1/model.onnx}
"""


def test_chain_from_a_recipe_file(tmp_path: Path, calibration: CameraCalibration) -> None:
    save_camera_calibration(calibration, tmp_path / "calib" / "camera.yaml")
    (tmp_path / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    chain = build_chain_for_recipe(recipe)
    assert chain.describe() == [
        "undistort(alpha=0, scale=1, calibration=virtual-cam)",
        "rotate(180 deg ccw)",
    ]
    frame = np.random.default_rng(2).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    crops = roi_crops(chain(frame), recipe.rois)
    assert [name for name, _ in crops] == ["left", "right"]
    assert all(crop.shape == (320, 160, 3) for _, crop in crops)


def test_recipe_without_calibration_or_ops(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(
        "name: bare\nmodels: [{name: m, path: m.onnx}]\n", encoding="utf-8"
    )
    chain = build_chain_for_recipe(load_recipe(tmp_path / "recipe.yaml"))
    assert len(chain) == 0


def test_missing_calibration_file_is_a_calibration_error(tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"camera\.yaml: calibration file not found"):
        build_chain_for_recipe(load_recipe(tmp_path / "recipe.yaml"))


@pytest.mark.parametrize(
    "image",
    [np.zeros((8, 8), dtype=np.uint8), np.zeros((0, 8, 3), dtype=np.uint8), "frame.png"],
    ids=["2-D", "empty", "str"],
)
def test_chain_refuses_broken_frames(image: ImageU8) -> None:
    chain = build_chain(parse([{"op": "flip", "mode": "both"}]))
    with pytest.raises(PreprocessError, match="preprocess input"):
        chain(image)


# --------------------------------------------------------------------------- ROIs


def test_no_rois_means_the_whole_frame(noise_image: ImageU8) -> None:
    crops = roi_crops(noise_image, [])
    assert len(crops) == 1
    assert crops[0][0] == "frame"
    assert crops[0][1] is noise_image


def test_roi_crops_are_named_views(noise_image: ImageU8) -> None:
    rois = [
        Roi(name="a", x=0, y=0, width=10, height=10),
        Roi(name="b", x=54, y=38, width=10, height=10),
    ]
    crops = roi_crops(noise_image, rois)
    assert [name for name, _ in crops] == ["a", "b"]
    for (_, crop), roi in zip(crops, rois, strict=True):
        assert np.shares_memory(crop, noise_image)
        np.testing.assert_array_equal(
            crop, noise_image[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]
        )


def test_roi_outside_the_preprocessed_frame(noise_image: ImageU8) -> None:
    rois = [
        Roi(name="ok", x=0, y=0, width=4, height=4),
        Roi(name="far", x=60, y=0, width=8, height=4),
    ]
    with pytest.raises(PreprocessError, match=r"ROI 'far'.*outside the 64x48 frame"):
        roi_crops(noise_image, rois)


def test_stretch_in_a_chain_and_its_recipe_limits(noise_image: ImageU8) -> None:
    chain = build_chain(parse([{"op": "stretch", "low_percentile": 2, "high_percentile": 98}]))
    assert chain.describe() == ["stretch(2-98 %)"]
    np.testing.assert_array_equal(chain(noise_image), ops.stretch(noise_image, 2, 98))
    with pytest.raises(ValidationError, match="low_percentile"):
        parse([{"op": "stretch", "low_percentile": 60}])
