from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.elpv.views import wrap_classifier_views
from cellinspect.errors import ModelError


def _tiny_classifier(path: Path, output: str = "probabilities", opset: int = 17) -> Path:
    """Conv (orientation-sensitive) -> global pool -> Gemm -> Softmax, on (N, 3, 8, 8)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array((0.1 * rng.normal(size=(4, 2))).astype(np.float32), "g"),
        numpy_helper.from_array(np.zeros(2, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalMaxPool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "g", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [output], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"image": np.ascontiguousarray(x)})[0])


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("views", [1, 2, 4, 8])
def test_wrapped_graph_averages_the_dihedral_views(tmp_path: Path, views: int, opset: int) -> None:
    base = _tiny_classifier(tmp_path / "base.onnx", opset=opset)
    wrapped = wrap_classifier_views(base, views, tmp_path / "wrapped.onnx")
    x = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    flips = [x, x[..., ::-1], x[:, :, ::-1], x[:, :, ::-1, ::-1]][: min(views, 4)]
    all_views = flips + [v.transpose(0, 1, 3, 2) for v in flips] if views == 8 else flips
    want = np.mean([_run(base, v) for v in all_views], axis=0)
    got = _run(wrapped, x)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, atol=1e-6)
    if views > 1:  # the views really differ, so the average is not trivially the identity view
        assert not np.allclose(_run(base, x), got, atol=1e-4)


@pytest.mark.parametrize(
    ("views", "output", "message"),
    [(3, "probabilities", "views must"), (2, "scores", "probabilities")],
)
def test_wrap_rejects_bad_views_and_missing_output(
    tmp_path: Path, views: int, output: str, message: str
) -> None:
    base = _tiny_classifier(tmp_path / "base.onnx", output=output)
    with pytest.raises(ModelError, match=message):
        wrap_classifier_views(base, views, tmp_path / "wrapped.onnx")
