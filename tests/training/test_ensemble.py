"""ensemble: members of different input sizes merged into one graph that averages them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.config import StretchOp
from cellinspect.entities import ImageU8, Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    OutputMeaning,
    OutputSpec,
    load_manifest,
    sha256_file,
    write_manifest,
)
from cellinspect.inference.preprocess_contract import preprocess_record
from cellinspect.inference.runner import ModelRunner
from cellinspect.training.ensemble import ensemble_classifiers
from tests.conftest import save_test_model


def _classifier(folder: Path, size: int, seed: int, labels: list[str]) -> Path:
    """A small real classifier: per-channel means and a 2x2 grid of means -> Gemm -> Softmax.

    The grid sees where brightness sits, so resizing the input inside the ensemble must keep
    the image's geometry for the merged output to match the member's own."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 2.0, (3 + 12, len(labels))).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["global"], axis=1),
        helper.make_node(
            "AveragePool",
            ["image"],
            ["grid"],
            kernel_shape=[size // 2] * 2,
            strides=[size // 2] * 2,
        ),
        helper.make_node("Flatten", ["grid"], ["local"], axis=1),
        helper.make_node("Concat", ["global", "local"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(labels)])],
        [numpy_helper.from_array(weights, "w")],
    )
    manifest = Manifest(
        name="tiny",
        version=folder.name,
        task=Task.CLASSIFICATION,
        sha256="pending",
        input=InputSpec(
            name="image", shape=[None, 3, size, size], mean=[127.0] * 3, std=[128.0] * 3
        ),
        outputs=[
            OutputSpec(name="probabilities", meaning=OutputMeaning.PROBABILITIES, shape=[None, 2])
        ],
        labels=labels,
    )
    return save_test_model(folder, graph, manifest)


def _images(count: int) -> list[ImageU8]:
    rng = np.random.default_rng(7)
    images = []
    for _ in range(count):
        img = np.full((96, 96, 3), rng.integers(40, 200), np.uint8)
        y, x = rng.integers(0, 48, 2)
        img[y : y + 48, x : x + 48] = rng.integers(0, 255, 3)  # a bright or dark quarter
        images.append(img)
    return images


def test_ensemble_averages_members_of_different_sizes(tmp_path: Path) -> None:
    labels = ["good", "defective"]
    members = [
        _classifier(tmp_path / "a" / "1", 64, seed=1, labels=labels),
        _classifier(tmp_path / "b" / "1", 32, seed=2, labels=labels),
        _classifier(tmp_path / "c" / "1", 48, seed=3, labels=labels),
    ]
    model_path = ensemble_classifiers(members, tmp_path / "ens" / "1", "ens", "1")
    manifest = load_manifest(model_path)
    assert manifest.input.shape == [None, 3, 64, 64]  # the largest member's input
    assert manifest.sha256 == sha256_file(model_path)
    assert [m["sha256"] for m in manifest.provenance["members"]] == [
        sha256_file(p) for p in members
    ]
    images = _images(12)
    each = [
        np.array([o.class_scores["defective"] for o in ModelRunner.load("m", p).predict(images)])
        for p in members
    ]
    merged = [
        o.class_scores["defective"] for o in ModelRunner.load("e", model_path).predict(images)
    ]
    # The members' own inputs are resized with INTER_AREA, the merged graph resizes bilinearly
    np.testing.assert_allclose(merged, np.mean(each, axis=0), atol=0.03)
    assert np.ptp(merged) > 0.2  # the images really differ in score, so the check bites


def test_ensemble_refuses_members_that_cannot_share_an_input(tmp_path: Path) -> None:
    a = _classifier(tmp_path / "a" / "1", 32, seed=1, labels=["good", "defective"])
    b = _classifier(tmp_path / "b" / "1", 32, seed=2, labels=["good", "scratch"])
    with pytest.raises(ModelError, match=r"b/1/model.onnx: labels \['good', 'scratch'\]"):
        ensemble_classifiers([a, b], tmp_path / "o" / "1", "o", "1")
    with pytest.raises(ModelError, match="at least 2"):
        ensemble_classifiers([a], tmp_path / "o" / "1", "o", "1")
    c = _classifier(tmp_path / "c" / "1", 32, seed=3, labels=["good", "defective"])
    spec = load_manifest(c)
    write_manifest(
        spec.model_copy(update={"input": spec.input.model_copy(update={"std": [1.0] * 3})}), c
    )
    with pytest.raises(ModelError, match="input std"):
        ensemble_classifiers([a, c], tmp_path / "o" / "1", "o", "1")
    assert not (tmp_path / "o" / "1" / "model.onnx").exists()


def test_ensemble_members_must_share_their_preprocessing_and_roi_size(tmp_path: Path) -> None:
    """One graph sees one image: members fitted on differently prepared images cannot merge;
    the merged manifest carries the members' common record."""
    labels = ["good", "defective"]
    a, b, c = (
        _classifier(tmp_path / n / "1", 32, seed=i, labels=labels) for i, n in enumerate("abc")
    )
    for path, ops in ((a, [StretchOp()]), (b, [StretchOp()]), (c, [])):
        manifest = load_manifest(path)
        write_manifest(manifest.model_copy(update={"preprocess": preprocess_record(ops)}), path)
    merged = ensemble_classifiers([a, b], tmp_path / "ab" / "1", "ab", "1")
    assert load_manifest(merged).preprocess == preprocess_record([StretchOp()])
    with pytest.raises(ModelError, match=r"c/1/model.onnx: fitted on images prepared with no "):
        ensemble_classifiers([a, c], tmp_path / "ac" / "1", "ac", "1")
    write_manifest(load_manifest(a).model_copy(update={"roi_size": [48, 48]}), a)
    write_manifest(load_manifest(b).model_copy(update={"roi_size": [64, 48]}), b)
    with pytest.raises(
        ModelError, match=r"b/1/model.onnx: fitted on 64x48 px ROI crops, .*a/1/model.onnx on 48x48"
    ):
        ensemble_classifiers([a, b], tmp_path / "ab2" / "1", "ab2", "1")
    write_manifest(load_manifest(b).model_copy(update={"roi_size": [48, 48]}), b)
    merged = ensemble_classifiers([a, b], tmp_path / "ab3" / "1", "ab3", "1")
    assert load_manifest(merged).roi_size == [48, 48]


def test_ensemble_command_writes_the_merged_model(tmp_path: Path) -> None:
    a = _classifier(tmp_path / "a" / "1", 32, seed=1, labels=["good", "defective"])
    b = _classifier(tmp_path / "b" / "1", 48, seed=2, labels=["good", "defective"])
    out = tmp_path / "models" / "ens" / "3"
    res = CliRunner().invoke(app, ["ensemble", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = load_manifest(out / "model.onnx")
    assert (manifest.name, manifest.version) == ("ens", "3")
    assert len(manifest.provenance["members"]) == 2
    bad = CliRunner().invoke(app, ["ensemble", str(a), "--out", str(tmp_path / "x" / "1")])
    assert bad.exit_code == 1 and "at least 2" in bad.output
