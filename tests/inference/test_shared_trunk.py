"""One trunk pass for models on the same backbone: the shipped recipe, real sessions."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cellinspect.config import ModelConfig, Recipe, load_recipe
from cellinspect.entities import Frame, InspectionResult, Task
from cellinspect.inference.manifest import (
    MANIFEST_NAME,
    InputSpec,
    Manifest,
    OutputSpec,
    ResizeMode,
    Thresholds,
)
from cellinspect.inference.runner import ModelRunner, SessionOptions
from cellinspect.inference.shared_trunk import (
    SharedTrunk,
    ShareRefusedError,
    merge_graphs,
)
from cellinspect.runtime.inspector import Inspector
from cellinspect.sources.decode import decode_image_file
from tests.conftest import save_test_model

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "flange.yaml"
SAMPLES = sorted((ROOT / "sample_images").glob("*.bmp"))


def _with_runtime(recipe: Recipe, **runtime: object) -> Recipe:
    return recipe.model_copy(update={"runtime": recipe.runtime.model_copy(update=runtime)})


def _judge(inspector: Inspector, paths: list[Path]) -> list[InspectionResult]:
    return [
        inspector.inspect(
            Frame(image=decode_image_file(p), frame_id=i, source="test", path=str(p))
        ).result
        for i, p in enumerate(paths)
    ]


def _assert_same(shared: list[InspectionResult], full: list[InspectionResult]) -> None:
    for a, b in zip(shared, full, strict=True):
        assert a.verdict is b.verdict, a.path
        assert a.defect_class == b.defect_class
        for roi_a, roi_b in zip(a.rois, b.rois, strict=True):
            assert roi_a.scores.keys() == roi_b.scores.keys()
            for key, value in roi_a.scores.items():
                assert value == pytest.approx(roi_b.scores[key], rel=1e-4, abs=1e-4), key


@pytest.fixture(scope="module")
def shipped() -> Recipe:
    return _with_runtime(load_recipe(RECIPE), warmup_runs=0)


@pytest.fixture(scope="module")
def images() -> list[Path]:
    # a dozen samples, good and defective (every third file)
    return SAMPLES[::3][:12]


def test_shipped_models_share_one_trunk_and_judge_alike(
    shipped: Recipe, images: list[Path]
) -> None:
    shared = Inspector.from_recipe(RECIPE, recipe=shipped)
    full = Inspector.from_recipe(RECIPE, recipe=_with_runtime(shipped, share_trunk=False))
    assert [t.name for t in shared.trunks] == ["flange-anomaly+flange-classifier"]
    assert shared.trunks[0].shared_nodes > 50  # the EfficientNet blocks up to stride 16
    assert full.trunks == []
    got, want = _judge(shared, images), _judge(full, images)
    assert {r.verdict for r in want} != {want[0].verdict}  # the samples are not all alike
    _assert_same(got, want)
    # one session.run serves both models, and the result names both
    assert "inference:flange-anomaly+flange-classifier" in got[0].timings_ms
    assert "inference:flange-anomaly" in want[0].timings_ms
    assert got[0].models == want[0].models


def test_anomaly_maps_and_probabilities_match_the_full_graphs(
    shipped: Recipe, images: list[Path]
) -> None:
    inspector = Inspector.from_recipe(RECIPE, recipe=shipped)
    (trunk,) = inspector.trunks
    for path in images[:4]:
        (unit, batch), *_ = inspector.model_batches(decode_image_file(path))
        assert unit is not None
        merged = trunk.run_all(batch)
        for runner, outs in zip(trunk.runners, merged, strict=True):
            for name, want in runner.run(batch).items():
                np.testing.assert_allclose(outs[name], want, rtol=1e-4, atol=1e-4)


def _copy_package(src: Path, dst: Path, backbone_sha: str) -> Path:
    shutil.copytree(src.parent, dst)
    manifest = json.loads((dst / MANIFEST_NAME).read_text())
    manifest["provenance"]["backbone"]["sha256"] = backbone_sha  # provenance is not sealed
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return dst / src.name


def test_models_on_different_backbones_run_their_own_graphs(
    shipped: Recipe, images: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    classifier = next(m for m in shipped.models if m.name == "flange-classifier")
    other = _copy_package(classifier.path, tmp_path / "classifier", "ab" * 32)
    models = [
        m if m is not classifier else ModelConfig(name=m.name, path=other, judge=m.judge)
        for m in shipped.models
    ]
    recipe = shipped.model_copy(update={"models": models})
    with caplog.at_level(logging.INFO, logger="cellinspect.runtime.inspector"):
        inspector = Inspector.from_recipe(RECIPE, recipe=recipe)
    assert inspector.trunks == []
    assert "backbones differ" in caplog.text
    assert "flange-classifier: abababababab" in caplog.text
    full = Inspector.from_recipe(RECIPE, recipe=_with_runtime(shipped, share_trunk=False))
    _assert_same(_judge(inspector, images[:3]), _judge(full, images[:3]))


def test_a_merged_graph_that_disagrees_with_the_full_graphs_is_refused(shipped: Recipe) -> None:
    inspector = Inspector.from_recipe(RECIPE, recipe=_with_runtime(shipped, share_trunk=False))
    anomaly, classifier = inspector.runners
    good = SharedTrunk.build([anomaly, classifier], SessionOptions(warmup_runs=0))
    # the same merged session, but the anomaly score read from the wrong tensor
    wrong = SharedTrunk(
        good.runners,
        good.session,
        [
            {"anomaly_score": "anomaly_map", "anomaly_map": "anomaly_map"},
            {"probabilities": "probabilities"},
        ],
        good.shared_nodes,
    )
    with pytest.raises(ShareRefusedError, match="'flange-anomaly' output 'anomaly_score'"):
        wrong.check_equivalent()


def _conv_model(weight: float, head: str) -> onnx.ModelProto:
    """x -> Conv(w) -> Relu -> (Mul by 2 | Neg): a tiny 'trunk' and 'head'."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [weight])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "two"], ["y"], name="double")
        if head == "double"
        else helper.make_node("Neg", ["r"], ["y"], name="neg"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
        [w, two],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_merge_shares_equal_nodes_and_keeps_each_head() -> None:
    import onnxruntime as ort

    merged = merge_graphs([_conv_model(1.5, "double"), _conv_model(1.5, "neg")])
    assert merged.shared_nodes == 2  # conv and relu once
    assert len(merged.model.graph.node) == 4
    onnx.checker.check_model(merged.model)
    session = ort.InferenceSession(merged.model.SerializeToString())
    x = np.array([[[[1.0, -1.0], [2.0, 0.5]]]], dtype=np.float32)
    first, second = (merged.outputs[k]["y"] for k in (0, 1))
    got_first, got_second = session.run([first, second], {"x": x})
    relu = np.maximum(x * 1.5, 0)
    np.testing.assert_allclose(got_first, relu * 2)
    np.testing.assert_allclose(got_second, -relu)


def test_merge_refuses_graphs_with_nothing_in_common() -> None:
    with pytest.raises(ShareRefusedError, match="no node in common"):
        merge_graphs([_conv_model(1.5, "double"), _conv_model(0.5, "double")])


def _tiny_anomaly(folder: Path, name: str, head: str, resize: ResizeMode) -> Path:
    """Mean |pixel| over channels (the shared 'trunk'), then max or mean of the map (heads)."""
    size = 16
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    score = helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch"])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", size, size])
    reduce = "ReduceMax" if head == "max" else "ReduceMean"
    nodes = [
        helper.make_node("Abs", ["image"], ["absdev"]),
        helper.make_node("ReduceMean", ["absdev"], ["map4"], axes=[1], keepdims=0),
        helper.make_node("Identity", ["map4"], ["anomaly_map"]),
        helper.make_node(reduce, ["map4"], ["anomaly_score"], axes=[1, 2], keepdims=0),
    ]
    manifest = Manifest(
        name=name,
        version="1",
        task=Task.ANOMALY,
        sha256="pending",
        input=InputSpec(
            name="image",
            shape=[None, 3, size, size],
            mean=[128.0] * 3,
            std=[128.0] * 3,
            resize=resize,
        ),
        outputs=[
            OutputSpec(name="anomaly_score", meaning="anomaly_score", shape=[None]),
            OutputSpec(name="anomaly_map", meaning="anomaly_map", shape=[None, size, size]),
        ],
        thresholds=Thresholds(review_at=0.3, fail_at=0.5),
        provenance={"backbone": {"name": "abs-mean", "version": "1", "sha256": "cd" * 32}},
    )
    graph = helper.make_graph(nodes, name, [x], [score, amap])
    return save_test_model(folder / name, graph, manifest)


@pytest.mark.parametrize("resize", [ResizeMode.LETTERBOX, ResizeMode.TILE])
def test_letterboxed_and_tiled_models_share_and_read_back_alike(
    tmp_path: Path, resize: ResizeMode
) -> None:
    options = SessionOptions(warmup_runs=0)
    runners = [
        ModelRunner.load(n, _tiny_anomaly(tmp_path, n, head, resize), options)
        for n, head in (("peak", "max"), ("spread", "mean"))
    ]
    trunk = SharedTrunk.build(runners, options)
    assert trunk.shared_nodes == 3  # Abs, ReduceMean, Identity
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, size=(16, 40, 3), dtype=np.uint8)  # letterboxed / 3 tiles
    batch = runners[0].prepare([wide, wide[:, :20]])
    for runner, raw in zip(runners, trunk.run_all(batch), strict=True):
        shared = runner.postprocess(raw)
        full = runner.predict([wide, wide[:, :20]])
        for a, b in zip(shared, full, strict=True):
            assert a.anomaly_score == pytest.approx(b.anomaly_score, abs=1e-6)
            assert a.anomaly_map is not None and b.anomaly_map is not None
            assert a.anomaly_map.shape == b.anomaly_map.shape != (16, 16)
            np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-6)
