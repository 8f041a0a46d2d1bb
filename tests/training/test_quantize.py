"""Static INT8 quantisation of a features model, on a tiny real ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cellinspect.entities import Task
from cellinspect.errors import FrameReadError, ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    OutputMeaning,
    OutputSpec,
    load_manifest,
    sha256_file,
)
from cellinspect.training.feed import list_images, render_scene
from cellinspect.training.quantize import (
    ImageFeed,
    images_digest,
    linear_conv_names,
    median_latency_ms,
    quantize_features,
    split_images,
)
from tests.conftest import save_test_model

SIZE = 32


def tiny_features_model(folder: Path, task: Task = Task.FEATURES) -> Path:
    """Conv + Relu6 -> 'feat', global mean -> 'pooled': the shape of the real backbone."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b")
    low = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "low")
    high = numpy_helper.from_array(np.array(6.0, dtype=np.float32), "high")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["conv"], pads=[1, 1, 1, 1], name="c"),
        helper.make_node("Clip", ["conv", "low", "high"], ["feat"], name="r"),
        helper.make_node("ReduceMean", ["feat"], ["pooled"], axes=[2, 3], keepdims=0, name="m"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["batch", 8, SIZE, SIZE]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 8]),
        ],
        initializer=[weight, bias, low, high],
    )
    manifest = Manifest(
        name="tiny",
        version=folder.name,
        task=task,
        sha256="",
        input=InputSpec(
            name="image", shape=[None, 3, SIZE, SIZE], mean=[127.0] * 3, std=[128.0] * 3
        ),
        outputs=[
            OutputSpec(name="feat", meaning=OutputMeaning.FEATURES, shape=[None, 8, SIZE, SIZE]),
            OutputSpec(name="pooled", meaning=OutputMeaning.FEATURES, shape=[None, 8]),
        ],
        provenance={"source": "test"},
    )
    return save_test_model(folder, graph, manifest)


def image_folder(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), render_scene(rng, 48))
    return list_images(folder)


def test_quantize_writes_a_faithful_model_with_provenance(tmp_path: Path) -> None:
    parent = tiny_features_model(tmp_path / "tiny" / "1")
    images = image_folder(tmp_path / "images", 8)
    lines: list[str] = []
    out = quantize_features(
        parent.parent, tmp_path / "tiny" / "1-int8", images, progress=lines.append
    )
    manifest = load_manifest(out)
    assert manifest.sha256 == sha256_file(out)
    assert manifest.version == "1-int8"
    assert [o.name for o in manifest.outputs] == ["feat", "pooled"]
    prov = manifest.provenance
    assert prov["source"] == "test"
    assert prov["parent_provenance"] == {"source": "test"}
    assert prov["parent_version"] == "1"
    assert prov["parent_sha256"] == sha256_file(parent)
    assert (prov["calibration_images"], prov["held_out_images"]) == (6, 2)
    assert prov["calibration_folder"] == str(tmp_path / "images")
    assert prov["calibration_sha256"] == images_digest([p for p in images if p not in images[3::4]])
    for name in ("feat", "pooled"):
        assert 0.97 <= prov["cosine_vs_fp32"][name]["min"] <= prov["cosine_vs_fp32"][name]["mean"]
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any("cosine" in line for line in lines)
    assert median_latency_ms(out, manifest.input, runs=2) > 0.0


def test_unfaithful_model_is_not_written(tmp_path: Path) -> None:
    parent = tiny_features_model(tmp_path / "tiny" / "1")
    images = image_folder(tmp_path / "images", 4)
    out_dir = tmp_path / "tiny" / "1-int8"
    with pytest.raises(ModelError, match="not faithful"):
        quantize_features(parent.parent, out_dir, images, min_cosine=1.01)
    assert not out_dir.exists()


def test_parent_must_be_a_features_model_with_matching_hash(tmp_path: Path) -> None:
    images = image_folder(tmp_path / "images", 4)
    anomaly = tiny_features_model(tmp_path / "anomaly" / "1", task=Task.ANOMALY)
    with pytest.raises(ModelError, match="expected 'features'"):
        quantize_features(anomaly.parent, tmp_path / "a-int8", images)
    tampered = tiny_features_model(tmp_path / "tampered" / "1")
    manifest = json.loads((tampered.parent / "manifest.json").read_text(encoding="utf-8"))
    manifest["sha256"] = "0" * 64
    (tampered.parent / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelError, match="sha256 does not match"):
        quantize_features(tampered.parent, tmp_path / "t-int8", images)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_too_few_images_are_refused(tmp_path: Path, count: int) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(count)]
    with pytest.raises(ModelError, match="need at least 4 images"):
        split_images(paths, 4)


@pytest.mark.parametrize(("count", "every", "held"), [(4, 4, 1), (9, 4, 2), (5, 2, 2)])
def test_split_holds_out_every_nth(tmp_path: Path, count: int, every: int, held: int) -> None:
    paths = [tmp_path / f"{i}.png" for i in reversed(range(count))]
    calibration, held_out = split_images(paths, every)
    assert len(held_out) == held
    assert sorted(calibration + held_out) == sorted(paths)
    assert not set(calibration) & set(held_out)


def test_split_refuses_every_below_two(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=">= 2"):
        split_images([tmp_path / "a.png", tmp_path / "b.png"], 1)


def test_image_feed_yields_each_image_once_then_rewinds(tmp_path: Path) -> None:
    images = image_folder(tmp_path / "images", 3)
    spec = InputSpec(name="image", shape=[None, 3, SIZE, SIZE])
    feed = ImageFeed(images, spec)
    batches = list(feed)
    assert len(batches) == len(feed) == 3
    assert batches[0]["image"].shape == (1, 3, SIZE, SIZE)
    assert feed.get_next() is None
    feed.rewind()
    assert feed.get_next() is not None


def test_broken_image_in_calibration_is_a_model_error(tmp_path: Path) -> None:
    parent = tiny_features_model(tmp_path / "tiny" / "1")
    images = image_folder(tmp_path / "images", 4)
    images[0].write_bytes(b"not a png")
    with pytest.raises(FrameReadError, match=images[0].name):
        quantize_features(parent.parent, tmp_path / "out", images)
    assert not (tmp_path / "out").exists()


def test_linear_conv_names_finds_convs_not_followed_by_clip(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), dtype=np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="expand"),
        helper.make_node("Clip", ["a"], ["b"], name="relu"),
        helper.make_node("Conv", ["b", "w"], ["c"], name="project"),
        helper.make_node("Add", ["c", "x"], ["y"], name="skip"),
    ]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        initializer=[w],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert linear_conv_names(path) == ["project"]


def test_keep_projections_fp32_is_recorded(tmp_path: Path) -> None:
    parent = tiny_features_model(tmp_path / "tiny" / "1")
    images = image_folder(tmp_path / "images", 4)
    out = quantize_features(
        parent.parent, tmp_path / "tiny" / "2", images, keep_projections_fp32=True
    )
    quantization = load_manifest(out).provenance["quantization"]
    assert quantization["fp32_nodes"] == []  # the tiny conv feeds a Clip: nothing to keep
