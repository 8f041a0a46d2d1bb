"""The preprocessing record in a manifest, and the refusal to run a model on other images."""

from __future__ import annotations

import pytest

from cellinspect.config import BlurOp, ResizeOp, StretchOp, UndistortOp, load_recipe
from cellinspect.errors import ConfigError
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.preprocess_contract import (
    check_preprocess,
    check_recipe_fits,
    check_roi_size,
    describe_record,
    preprocess_record,
)
from tests.conftest import ROOT


def test_record_keeps_every_setting_and_reads_back() -> None:
    record = preprocess_record([UndistortOp(scale=0.875), StretchOp(high_percentile=98.0)])
    assert record == [
        {"op": "undistort", "alpha": 0.0, "scale": 0.875},
        {"op": "stretch", "low_percentile": 1.0, "high_percentile": 98.0},
    ]
    assert describe_record(record) == (
        "undistort(alpha=0.0, scale=0.875), then stretch(low_percentile=1.0, high_percentile=98.0)"
    )
    assert preprocess_record([]) == [] and describe_record([]) == "no preprocessing"


def test_same_ops_pass_other_ops_are_refused_naming_both() -> None:
    manifest = load_manifest(ROOT / "models" / "flange-anomaly" / "1" / "model.onnx")
    stretched = manifest.model_copy(update={"preprocess": preprocess_record([StretchOp()])})
    check_preprocess(stretched, [StretchOp()], "recipe 'x'")
    refusals = [
        ([], "recipe 'x' applies no preprocessing"),
        ([StretchOp(low_percentile=2.0)], "low_percentile=2.0"),
        ([StretchOp(), BlurOp()], "stretch(low_percentile=1.0, high_percentile=99.0), then blur"),
        ([ResizeOp(width=64, height=64)], "applies resize(width=64, height=64"),
    ]
    for ops, message in refusals:
        with pytest.raises(ConfigError) as err:
            check_preprocess(stretched, ops, "recipe 'x'")
        text = str(err.value)
        assert "model 'flange-anomaly' v1 was fitted on images prepared with stretch(" in text
        assert message in text


def test_unrecorded_manifests_are_not_checked() -> None:
    manifest = load_manifest(ROOT / "models" / "flange-anomaly" / "1" / "model.onnx")
    check_preprocess(manifest.model_copy(update={"preprocess": None}), [BlurOp()], "here")


@pytest.mark.parametrize("model", ["flange-anomaly", "flange-classifier"])
def test_shipped_models_record_the_shipped_recipes_preprocessing(model: str) -> None:
    recipe = load_recipe(ROOT / "recipes" / "flange.yaml")
    manifest = load_manifest(ROOT / "models" / model / "1" / "model.onnx")
    assert manifest.preprocess == preprocess_record(recipe.preprocess)
    assert manifest.roi_size == [recipe.rois[0].width, recipe.rois[0].height]
    check_recipe_fits(manifest, recipe, model)


def test_roi_size_is_checked_only_where_both_are_known_and_the_model_runs() -> None:
    recipe = load_recipe(ROOT / "recipes" / "flange.yaml")
    manifest = load_manifest(ROOT / "models" / "flange-anomaly" / "1" / "model.onnx")
    check_roi_size(manifest, None, "whole images")
    check_roi_size(manifest.model_copy(update={"roi_size": None}), [10, 10], "unrecorded")
    with pytest.raises(ConfigError, match="fitted on 224x224 px ROI crops, but here is 224x200"):
        check_roi_size(manifest, [224, 200], "here")
    wide = recipe.rois[0].model_copy(update={"width": 260})
    other = wide.model_copy(update={"name": "label", "models": ["flange-classifier"]})
    with pytest.raises(ConfigError, match="recipe 'flange-default' ROI 'part' is 260x224 px"):
        check_recipe_fits(manifest, recipe.model_copy(update={"rois": [wide]}), "flange-anomaly")
    # a 260 px ROI that only the classifier runs on is none of the anomaly model's business
    check_recipe_fits(manifest, recipe.model_copy(update={"rois": [other]}), "flange-anomaly")


def test_a_recalibrated_camera_keeps_its_models() -> None:
    """The calibration is the recipe's own key, not part of the record."""
    recipe = load_recipe(ROOT / "recipes" / "flange.yaml")
    record = preprocess_record(recipe.preprocess)
    assert all("calibration" not in op for op in record)
