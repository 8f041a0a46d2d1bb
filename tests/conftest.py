"""Shared fixtures: tiny real ONNX models built in tmp folders, the shipped recipe paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cellinspect.entities import Task
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    OutputSpec,
    Thresholds,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[1]


def save_test_model(folder: Path, graph: onnx.GraphProto, manifest: Manifest) -> Path:
    """Save `graph` (opset 17, IR 8) as folder/model.onnx, and `manifest` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    write_manifest(manifest, path)
    return path


def build_brightness_anomaly_model(folder: Path, size: int = 16) -> Path:
    """A real (if simple) anomaly model: the score is the mean absolute deviation from grey.

    Its map is the per-pixel deviation averaged over channels, so a dark scratch on a grey
    image really raises the score; nothing is fixed.
    """
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    score = helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch"])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", size, size])
    nodes = [
        helper.make_node("Abs", ["image"], ["absdev"]),
        helper.make_node("ReduceMean", ["absdev"], ["map4"], axes=[1], keepdims=0),
        helper.make_node("Identity", ["map4"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["map4"], ["anomaly_score"], axes=[1, 2], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "brightness", [x], [score, amap])
    manifest = Manifest(
        name="brightness",
        version=folder.name,
        task=Task.ANOMALY,
        sha256="pending",
        input=InputSpec(
            name="image",
            shape=[None, 3, size, size],
            colour="BGR",
            mean=[128.0, 128.0, 128.0],
            std=[128.0, 128.0, 128.0],
        ),
        outputs=[
            OutputSpec(name="anomaly_score", meaning="anomaly_score", shape=[None]),
            OutputSpec(name="anomaly_map", meaning="anomaly_map", shape=[None, size, size]),
        ],
        thresholds=Thresholds(review_at=0.3, fail_at=0.5),
        provenance={"source": "tests/conftest.py"},
    )
    return save_test_model(folder, graph, manifest)


def build_colour_classifier(folder: Path, size: int = 8) -> Path:
    """A real linear classifier on mean colour: blue = good, green = scratch, red = stain."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    probs = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    weights = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 8.0, "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled4"]),
        helper.make_node("Flatten", ["pooled4"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(nodes, "colour", [x], [probs], initializer=[weights])
    manifest = Manifest(
        name="colour",
        version=folder.name,
        task=Task.CLASSIFICATION,
        sha256="pending",
        input=InputSpec(name="image", shape=[None, 3, size, size], colour="BGR", scale=1 / 255),
        outputs=[OutputSpec(name="probabilities", meaning="probabilities", shape=[None, 3])],
        labels=["good", "scratch", "stain"],
        thresholds=Thresholds(default_class={"review_at": 0.5, "fail_at": 0.8}),
    )
    return save_test_model(folder, graph, manifest)


@pytest.fixture
def brightness_model(tmp_path: Path) -> Path:
    return build_brightness_anomaly_model(tmp_path / "models" / "brightness" / "1")


@pytest.fixture
def colour_model(tmp_path: Path) -> Path:
    return build_colour_classifier(tmp_path / "models" / "colour" / "1")
