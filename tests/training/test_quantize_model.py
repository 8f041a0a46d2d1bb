"""INT8 copies of deployed models: written when faithful, refused with figures when not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cellinspect.config import load_recipe
from cellinspect.datagen.flange import generate_dataset
from cellinspect.entities import Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    OutputSpec,
    Thresholds,
    load_manifest,
    sha256_file,
    write_manifest,
)
from cellinspect.training.dataset import RoiReader, load_dataset
from cellinspect.training.quantize_model import quantize_model
from tests.conftest import ROOT


def _colour_conv_classifier(folder: Path) -> Path:
    """good = blue, scratch = green, stain = red, through a real 3x3 convolution."""
    folder.mkdir(parents=True)
    weights = np.zeros((3, 3, 3, 3), dtype=np.float32)
    for c in range(3):
        weights[c, c] = 1.0 / 9.0  # per-channel box filter
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["pooled4"]),
        helper.make_node("Flatten", ["pooled4"], ["pooled"]),
        helper.make_node("Mul", ["pooled", "gain"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "colour-conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array([8.0], dtype=np.float32), "gain"),
        ],
    )
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    manifest = Manifest(
        name="colour-conv",
        version=folder.name,
        task=Task.CLASSIFICATION,
        sha256="pending",
        input=InputSpec(name="image", shape=[None, 3, 16, 16], colour="BGR", scale=1 / 255),
        outputs=[OutputSpec(name="probabilities", meaning="probabilities", shape=[None, 3])],
        labels=["good", "scratch", "stain"],
        thresholds=Thresholds(default_class={"review_at": 0.5, "fail_at": 0.8}),
    )
    write_manifest(manifest, path)
    return path


def _colour_set(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for label, channel in (("good", 0), ("scratch", 1), ("stain", 2)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            image[..., channel] = rng.integers(150, 255)
            cv2.imwrite(str(root / label / f"{i}.png"), image)
    return root


def test_faithful_int8_copy_is_written_with_its_figures(tmp_path: Path) -> None:
    model = _colour_conv_classifier(tmp_path / "models" / "colour" / "1")
    data = load_dataset(_colour_set(tmp_path / "data", 6))
    out = tmp_path / "models" / "colour" / "1-int8"
    report = quantize_model(model, out, data, data, RoiReader(None))
    assert report.int8.accuracy == report.fp32.accuracy == 1.0
    manifest = load_manifest(out / "model.onnx")
    assert manifest.sha256 == sha256_file(out / "model.onnx")
    assert manifest.provenance["parent_version"] == "1"
    figures = manifest.provenance["metrics"]["int8_vs_fp32"]
    assert figures["int8"]["accuracy"] == 1.0 and figures["session_run_ms_int8"] > 0
    low, high = figures["auroc_change_ci95"]  # both perfect on every resample
    assert low == high == 0.0 and report.auroc_change_ci95 == [low, high]
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_int8_copy_of_the_fitted_flange_classifier_is_refused(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "cal", 12, seed=41, defect_rate=0.0)
    generate_dataset(tmp_path / "eval", 24, seed=42, defect_rate=0.5)
    reader = RoiReader(load_recipe(ROOT / "recipes" / "flange.yaml"), "part")
    out = tmp_path / "flange-classifier" / "1-int8"
    with pytest.raises(ModelError, match="loses") as info:
        quantize_model(
            ROOT / "models" / "flange-classifier" / "1" / "model.onnx",
            out,
            load_dataset(tmp_path / "cal"),
            load_dataset(tmp_path / "eval"),
            reader,
        )
    assert "--backbone" in str(info.value)
    assert "AUROC change 95 % paired interval -" in str(info.value)  # a real loss: below 0
    assert not (out / "model.onnx").exists() and not (out / "manifest.json").exists()


def test_too_few_calibration_images_and_overwriting_the_parent(tmp_path: Path) -> None:
    model = _colour_conv_classifier(tmp_path / "models" / "colour" / "1")
    small = load_dataset(_colour_set(tmp_path / "small", 2))
    with pytest.raises(ModelError, match="need 8"):
        quantize_model(model, tmp_path / "out", small, small, RoiReader(None))
    with pytest.raises(ModelError, match="must not overwrite"):
        quantize_model(model, model.parent, small, small, RoiReader(None))


def test_other_preprocessing_is_refused_before_calibrating(tmp_path: Path) -> None:
    """The INT8 copy is calibrated on what the recipe prepares: it must be what the model saw."""
    from cellinspect.config import StretchOp
    from cellinspect.errors import ConfigError
    from cellinspect.inference.preprocess_contract import preprocess_record

    model = _colour_conv_classifier(tmp_path / "models" / "colour" / "1")
    manifest = load_manifest(model)
    write_manifest(
        manifest.model_copy(update={"preprocess": preprocess_record([StretchOp()])}), model
    )
    data = load_dataset(_colour_set(tmp_path / "data", 6))
    out = tmp_path / "models" / "colour" / "1-int8"
    with pytest.raises(ConfigError, match="reading without a recipe applies no preprocessing"):
        quantize_model(model, out, data, data, RoiReader(None))
    assert not out.exists()


def test_quantize_model_command_prints_both_variants_and_the_paired_change(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cellinspect.cli import app

    model = _colour_conv_classifier(tmp_path / "models" / "colour" / "1")
    data = str(_colour_set(tmp_path / "data", 6))
    out = tmp_path / "models" / "colour" / "1-int8"
    args = ["quantize-model", str(model), "--calibration", data, "--evaluate", data]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "FP32" in result.output and "INT8" in result.output and "paired" in result.output
    assert (out / "model.onnx").is_file()
