"""Wrap any classifier graph in dihedral test-time views, averaging its probabilities.

A fine-tuned classifier ends in a softmax; the wrapper feeds it the stacked views that
graph.py builds (flips, quarter turns) and returns the mean probability per image, so the
station still makes one session.run per batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.elpv.graph import _view_nodes
from cellinspect.errors import ModelError

VIEWS_INPUT = "tta_views"


def wrap_classifier_views(
    model_path: Path, views: int, out_path: Path, probs_output: str = "probabilities"
) -> Path:
    """`model_path` (N,C,H,W) -> (N,K) becomes views -> model -> mean over views -> (N,K)."""
    model = onnx.load(str(model_path))
    g = model.graph
    outputs = [o for o in g.output if o.name == probs_output]
    if len(g.input) != 1 or not outputs:
        raise ModelError(
            f"{model_path}: expected one input and an output '{probs_output}', "
            f"got inputs {[i.name for i in g.input]} outputs {[o.name for o in g.output]}"
        )
    classes = outputs[0].type.tensor_type.shape.dim[1].dim_value
    input_name = g.input[0].name
    per_view = "tta_view_probs"
    for node in g.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = VIEWS_INPUT
        for k, name in enumerate(node.output):
            if name == probs_output:
                node.output[k] = per_view
    view_nodes, view_inits = _view_nodes(input_name, views)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    tail = [helper.make_node("Reshape", [per_view, "tta_vnk"], ["tta_vnk_probs"])]
    inits = [numpy_helper.from_array(np.array([views, -1, classes], np.int64), "tta_vnk")]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "tta_mean_axes"))
        tail.append(
            helper.make_node(
                "ReduceMean", ["tta_vnk_probs", "tta_mean_axes"], [probs_output], keepdims=0
            )
        )
    else:
        tail.append(
            helper.make_node("ReduceMean", ["tta_vnk_probs"], [probs_output], axes=[0], keepdims=0)
        )
    old = list(g.node)
    del g.node[:]
    g.node.extend([*view_nodes, *old, *tail])
    g.initializer.extend([*view_inits, *inits])
    del g.output[:]
    g.output.append(
        helper.make_tensor_value_info(probs_output, TensorProto.FLOAT, ["batch", classes])
    )
    onnx.checker.check_model(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path
