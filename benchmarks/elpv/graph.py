"""One ONNX graph that classifies a cell from several dihedral views of it (test-time augmentation).

Solar cells look the same flipped or turned by 180 degrees, so the graph builds those views
itself (Slice with step -1, Transpose for the quarter turns), runs the backbone once on the
stacked batch, reduces each view to a feature vector (pooled head features plus the spatial
max of the stride-8 and stride-16 blocks) and averages the views before a linear head and a
softmax. The station still makes one session.run per batch; fitting reads the per-view features
from the same nodes, so the head is taught on exactly what it judges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from cellinspect.errors import ModelError

F32 = npt.NDArray[np.float32]
VIEWS_OUTPUT = "tta_features"
PROBS_OUTPUT = "probabilities"
_BIG = np.iinfo(np.int64).max
# Flips of the NCHW tensor: (axes, ) for identity, horizontal, vertical, both (= rot180).
_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
VIEW_COUNTS = (1, 2, 4, 8)
FEATURES = ("feat_s8", "feat_s16", "pooled")


def _const(name: str, array: npt.NDArray[np.generic]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name=name)


def _view_nodes(source: str, views: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from `source` (N,C,H,W) to `tta_views` (V*N,C,H,W), view-major."""
    if views not in VIEW_COUNTS:
        raise ModelError(f"views must be one of {VIEW_COUNTS}, got {views}")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    names: list[str] = []
    flips = _FLIPS[: min(views, 4)]
    for i, axes in enumerate(flips):
        if not axes:
            names.append(source)
            continue
        prefix = f"tta_flip{i}"
        inits.extend(
            [
                _const(f"{prefix}_starts", np.full(len(axes), -1, dtype=np.int64)),
                _const(f"{prefix}_ends", np.full(len(axes), -_BIG, dtype=np.int64)),
                _const(f"{prefix}_axes", np.array(axes, dtype=np.int64)),
                _const(f"{prefix}_steps", np.full(len(axes), -1, dtype=np.int64)),
            ]
        )
        nodes.append(
            helper.make_node(
                "Slice",
                [source, f"{prefix}_starts", f"{prefix}_ends", f"{prefix}_axes", f"{prefix}_steps"],
                [prefix],
            )
        )
        names.append(prefix)
    if views == 8:
        for i, name in enumerate(list(names)):
            nodes.append(helper.make_node("Transpose", [name], [f"tta_t{i}"], perm=[0, 1, 3, 2]))
            names.append(f"tta_t{i}")
    if len(names) == 1:
        nodes.append(helper.make_node("Identity", [source], ["tta_views"]))
    else:
        nodes.append(helper.make_node("Concat", names, ["tta_views"], axis=0))
    return nodes, inits


def _feature_nodes(opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """(pooled, feat_s16, feat_s8) -> `tta_flat` (V*N, F): pooled + spatial max of each block.

    The maxima keep small, local defects (a crack) that global averaging dilutes.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    for src, out in (("feat_s16", "tta_s16_max"), ("feat_s8", "tta_s8_max")):
        if opset >= 18:
            inits.append(_const(f"{out}_axes", np.array([2, 3], dtype=np.int64)))
            nodes.append(helper.make_node("ReduceMax", [src, f"{out}_axes"], [out], keepdims=0))
        else:
            nodes.append(helper.make_node("ReduceMax", [src], [out], axes=[2, 3], keepdims=0))
    nodes.append(
        helper.make_node("Concat", ["pooled", "tta_s16_max", "tta_s8_max"], ["tta_flat"], axis=1)
    )
    return nodes, inits


def _load_backbone(backbone_path: Path) -> tuple[onnx.ModelProto, int, int, str]:
    model = onnx.load(str(backbone_path))
    outputs = {o.name: o for o in model.graph.output}
    for need in FEATURES:
        if need not in outputs:
            raise ModelError(f"{backbone_path}: backbone has no '{need}' output")
    input_name = model.graph.input[0].name
    model = onnx.utils.Extractor(model).extract_model([input_name], list(FEATURES))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    pooled_dim = int(outputs["pooled"].type.tensor_type.shape.dim[1].dim_value)
    c16 = int(outputs["feat_s16"].type.tensor_type.shape.dim[1].dim_value)
    c8 = int(outputs["feat_s8"].type.tensor_type.shape.dim[1].dim_value)
    return model, opset, pooled_dim + c16 + c8, input_name


def feature_dim(backbone_path: Path) -> int:
    return _load_backbone(backbone_path)[2]


def _base_graph(backbone_path: Path, views: int) -> tuple[onnx.ModelProto, int]:
    """Backbone fed by the in-graph views, ending at `tta_flat` (V*N, F)."""
    model, opset, dim, input_name = _load_backbone(backbone_path)
    g = model.graph
    for node in g.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = "tta_views"
    view_nodes, view_inits = _view_nodes(input_name, views)
    feat_nodes, feat_inits = _feature_nodes(opset)
    old = list(g.node)
    del g.node[:]
    g.node.extend([*view_nodes, *old, *feat_nodes])
    g.initializer.extend([*view_inits, *feat_inits])
    return model, dim


def _save(model: onnx.ModelProto, outputs: list[onnx.ValueInfoProto], out_path: Path) -> Path:
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    model.producer_name = "cellinspect.elpv"
    onnx.checker.check_model(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path


def build_view_feature_graph(backbone_path: Path, views: int, out_path: Path) -> Path:
    """The fit-time graph: per-view features `tta_features` of shape (V, N, F)."""
    model, dim = _base_graph(backbone_path, views)
    g = model.graph
    g.initializer.append(_const("tta_vnf", np.array([views, -1, dim], dtype=np.int64)))
    g.node.append(helper.make_node("Reshape", ["tta_flat", "tta_vnf"], [VIEWS_OUTPUT]))
    out = helper.make_tensor_value_info(VIEWS_OUTPUT, TensorProto.FLOAT, [views, "batch", dim])
    return _save(model, [out], out_path)


def build_tta_classifier_graph(
    backbone_path: Path, views: int, weights: F32, bias: F32, out_path: Path
) -> Path:
    """Views -> backbone -> features -> mean over views -> Gemm(weights (F,K), bias) -> Softmax."""
    model, dim = _base_graph(backbone_path, views)
    if weights.shape[0] != dim or bias.shape != (weights.shape[1],):
        raise ModelError(
            f"head of shape {weights.shape} + {bias.shape} does not fit {dim} features"
        )
    g = model.graph
    g.initializer.extend(
        [
            _const("tta_vnf", np.array([views, -1, dim], dtype=np.int64)),
            _const("head_w", weights.astype(np.float32)),
            _const("head_b", bias.astype(np.float32)),
        ]
    )
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    g.node.append(helper.make_node("Reshape", ["tta_flat", "tta_vnf"], ["tta_vnf_feats"]))
    if opset >= 18:
        g.initializer.append(_const("tta_mean_axes", np.array([0], dtype=np.int64)))
        g.node.append(
            helper.make_node(
                "ReduceMean", ["tta_vnf_feats", "tta_mean_axes"], ["tta_mean"], keepdims=0
            )
        )
    else:
        g.node.append(
            helper.make_node("ReduceMean", ["tta_vnf_feats"], ["tta_mean"], axes=[0], keepdims=0)
        )
    g.node.extend(
        [
            helper.make_node("Gemm", ["tta_mean", "head_w", "head_b"], ["head_logits"]),
            helper.make_node("Softmax", ["head_logits"], [PROBS_OUTPUT], axis=1),
        ]
    )
    out = helper.make_tensor_value_info(
        PROBS_OUTPUT, TensorProto.FLOAT, ["batch", weights.shape[1]]
    )
    return _save(model, [out], out_path)
