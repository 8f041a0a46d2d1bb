"""Average several classifiers' probabilities in one ONNX graph: the `ensemble` command.

Independently trained fine-tunes make different mistakes, so the mean of their softmax outputs
is usually more accurate than any one of them. The members are merged into one graph (names
prefixed per member) that takes the largest member's input; a member trained at a smaller size
gets an in-graph bilinear Resize to its own size, so the station still prepares one tensor and
makes one session.run per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from cellinspect.entities import Task
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Manifest,
    load_manifest,
    sha256_file,
    write_manifest,
)
from cellinspect.inference.preprocess_contract import describe_record

PROBS = "probabilities"
# Every InputSpec field but the spatial size must agree, or one tensor cannot feed them all.
_SHARED_FIELDS = ("name", "layout", "colour", "scale", "mean", "std")


def _check_members(paths: Sequence[Path]) -> list[Manifest]:
    if len(paths) < 2:
        raise ModelError(f"an ensemble needs at least 2 classifiers, got {len(paths)}")
    manifests = [load_manifest(p) for p in paths]
    first = manifests[0]
    for path, man in zip(paths, manifests, strict=True):
        if man.task is not Task.CLASSIFICATION or PROBS not in {o.name for o in man.outputs}:
            raise ModelError(f"{path}: not a classifier with a '{PROBS}' output")
        if man.labels != first.labels:
            raise ModelError(f"{path}: labels {man.labels} differ from {paths[0]}: {first.labels}")
        for name in _SHARED_FIELDS:
            if getattr(man.input, name) != getattr(first.input, name):
                raise ModelError(
                    f"{path}: input {name} {getattr(man.input, name)!r} differs from "
                    f"{paths[0]}: {getattr(first.input, name)!r}"
                )
        if man.input.layout.value != "NCHW" or len(man.input.shape) != 4:
            raise ModelError(f"{path}: only NCHW image inputs can be merged")
    return manifests


Recorded = TypeVar("Recorded")


def _common_record(
    paths: Sequence[Path],
    manifests: Sequence[Manifest],
    read: Callable[[Manifest], Recorded | None],
    describe: Callable[[Recorded], str],
    what: str,
) -> Recorded | None:
    """What the members recorded (unrecorded ones aside), which must agree: one graph sees
    one image, so its members must have been fitted on images made alike."""
    recorded = [(p, v) for p, m in zip(paths, manifests, strict=True) if (v := read(m)) is not None]
    for path, value in recorded[1:]:
        if value != recorded[0][1]:
            raise ModelError(
                f"{path}: fitted on {describe(value)}, {recorded[0][0]} on "
                f"{describe(recorded[0][1])}: one graph sees one image, so the members must "
                f"share their {what}"
            )
    return recorded[0][1] if recorded else None


def _size(spec: InputSpec) -> tuple[int, int]:
    height, width = spec.shape[2], spec.shape[3]
    if height is None or width is None:
        raise ModelError(f"input '{spec.name}' has no fixed size: {spec.shape}")
    return height, width


def _resize_nodes(
    source: str, target: str, size: tuple[int, int]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`source` (N, C, H, W) resized bilinearly to (N, C, *size) as `target` (opset 11+)."""
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), f"{target}_start"),
        numpy_helper.from_array(np.array([2], np.int64), f"{target}_end"),
        numpy_helper.from_array(np.array(size, np.int64), f"{target}_hw"),
        numpy_helper.from_array(np.array([], np.float32), f"{target}_roi"),
        numpy_helper.from_array(np.array([], np.float32), f"{target}_scales"),
    ]
    nodes = [
        helper.make_node("Shape", [source], [f"{target}_shape"]),
        helper.make_node(
            "Slice", [f"{target}_shape", f"{target}_start", f"{target}_end"], [f"{target}_nc"]
        ),
        helper.make_node("Concat", [f"{target}_nc", f"{target}_hw"], [f"{target}_sizes"], axis=0),
        helper.make_node(
            "Resize",
            [source, f"{target}_roi", f"{target}_scales", f"{target}_sizes"],
            [target],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
    ]
    return nodes, inits


def _build_graph(
    paths: Sequence[Path], manifests: Sequence[Manifest], out_path: Path
) -> tuple[Path, InputSpec]:
    """One graph: shared input -> each member (resized if smaller) -> Mean of probabilities."""
    largest = max(manifests, key=lambda m: _size(m.input)[0] * _size(m.input)[1]).input
    input_name = largest.name
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    member_probs = []
    opsets: set[int] = set()
    ir_version = 0
    for i, (path, man) in enumerate(zip(paths, manifests, strict=True)):
        model = compose.add_prefix(onnx.load(str(path)), f"m{i}_")
        opsets.add(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))
        ir_version = max(ir_version, model.ir_version)
        member_input = model.graph.input[0].name
        if _size(man.input) == _size(largest):
            feed = input_name
        else:
            feed = f"m{i}_resized"
            resize, resize_inits = _resize_nodes(input_name, feed, _size(man.input))
            nodes.extend(resize)
            inits.extend(resize_inits)
        for node in model.graph.node:
            node.input[:] = [feed if name == member_input else name for name in node.input]
        nodes.extend(model.graph.node)
        inits.extend(model.graph.initializer)
        member_probs.append(f"m{i}_{PROBS}")
    if len(opsets) != 1:
        raise ModelError(f"members use different opsets {sorted(opsets)}: export them alike")
    nodes.append(helper.make_node("Mean", member_probs, [PROBS]))
    classes = len(manifests[0].labels)
    graph = helper.make_graph(
        nodes,
        "cellinspect_ensemble",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, largest.shape)],
        [helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, [None, classes])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opsets.pop())], producer_name="cellinspect"
    )
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path, largest


def ensemble_classifiers(paths: Sequence[Path], out_dir: Path, name: str, version: str) -> Path:
    """Write `out_dir/model.onnx` and its manifest, recording every member by hash."""
    manifests = _check_members(paths)
    # refused before anything is written
    preprocess = _common_record(
        paths,
        manifests,
        lambda m: m.preprocess,
        lambda r: f"images prepared with {describe_record(r)}",
        "preprocessing",
    )
    roi_size = _common_record(
        paths, manifests, lambda m: m.roi_size, lambda s: f"{s[0]}x{s[1]} px ROI crops", "ROI size"
    )
    model_path, spec = _build_graph(paths, manifests, out_dir / "model.onnx")
    first = manifests[0]
    manifest = first.model_copy(
        update={
            "name": name,
            "version": version,
            "input": spec,
            "preprocess": preprocess,
            "roi_size": roi_size,
            "provenance": {
                "method": f"mean of {len(paths)} classifiers' probabilities in one graph",
                "members": [
                    {
                        "path": str(p),
                        "sha256": sha256_file(p),
                        "name": m.name,
                        "version": m.version,
                        "input_size": list(_size(m.input)),
                    }
                    for p, m in zip(paths, manifests, strict=True)
                ],
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        }
    )
    write_manifest(manifest, model_path)
    return model_path
