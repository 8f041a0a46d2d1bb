"""PatchCore-style anomaly detection, built as one ONNX graph with no torch at run time.

Patch features are the backbone's stride-8 and stride-16 block outputs, 3x3 average-pooled and
concatenated on the stride-8 grid, then projected to a smaller dimension. The memory bank is a
greedy coreset of good-part patches. Nearest-neighbour search runs inside onnxruntime as one
matrix product (|x|^2 - 2 x.b + |b|^2, min over the bank), so scoring is a single session.run
that returns an anomaly map and an image score (the map's maximum).

Parts held in a fixture are aligned, so normal texture differs by position (edges, busbars,
fiducials give larger distances than flat areas). With position statistics the graph turns each
distance into a z-score against held-out good parts at that patch position, so the image score
is "how unusual for this place" rather than "how unusual anywhere".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from cellinspect.errors import ModelError

F32 = npt.NDArray[np.float32]

FEATURE_OUTPUTS = ("feat_s8", "feat_s16")
SCORE_OUTPUT = "anomaly_score"
MAP_OUTPUT = "anomaly_map"


def greedy_coreset(
    features: F32,
    size: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> npt.NDArray[np.int64]:
    """Indices of a k-center greedy coreset: each pick is the point farthest from the picked.

    Distances are taken in a 128-d random projection (as PatchCore does) to keep it fast.
    """
    n = features.shape[0]
    if size >= n:
        return np.arange(n, dtype=np.int64)
    if size <= 0:
        raise ValueError(f"coreset size must be > 0, got {size}")
    rng = np.random.default_rng(seed)
    dim = features.shape[1]
    if dim > 128:
        proj = rng.standard_normal((dim, 128)).astype(np.float32) / np.sqrt(128.0)
        reduced = features @ proj
    else:
        reduced = features
    reduced = np.ascontiguousarray(reduced, dtype=np.float32)
    sq = np.einsum("ij,ij->i", reduced, reduced)
    picked = np.empty(size, dtype=np.int64)
    current = int(rng.integers(n))
    min_d = np.full(n, np.inf, dtype=np.float32)
    for i in range(size):
        picked[i] = current
        c = reduced[current]
        d = sq - 2.0 * (reduced @ c) + float(c @ c)
        np.minimum(min_d, d, out=min_d)
        current = int(np.argmax(min_d))
        if progress is not None and (i % 64 == 0 or i == size - 1):
            progress(i + 1, size)
    return picked


@dataclass(frozen=True)
class PatchCoreParams:
    """What was learnt from good parts: projection, bank and the score scale."""

    projection: F32  # (C, D)
    bank: F32  # (M, D), projected
    score_scale: float  # raw distance (or z-score, with position statistics) that maps to 1.0
    position_mean: F32 | None = None  # (H8*W8,) held-out good distance per patch position
    position_std: F32 | None = None  # (H8*W8,) its spread, floored (see position_stats)


STD_FLOOR_OF_MEDIAN = 0.5  # floor each position's spread at half the median spread
MIN_POSITION_IMAGES = 20  # fewer held-out good parts give per-position spreads of noise


def position_stats(maps: F32) -> tuple[F32, F32]:
    """Mean and floored spread of held-out good distance maps (N, H*W), per position.

    The floor (half the median spread, added in quadrature) keeps a position where every good
    part happened to look alike from turning a small difference into a huge z-score.
    """
    if maps.ndim != 2 or maps.shape[0] < MIN_POSITION_IMAGES:
        raise ModelError(
            f"position statistics need at least {MIN_POSITION_IMAGES} held-out good images, "
            f"got {maps.shape[0] if maps.ndim == 2 else maps.shape}"
        )
    mean = maps.mean(axis=0).astype(np.float32)
    spread = maps.std(axis=0)
    floor = STD_FLOOR_OF_MEDIAN * float(np.median(spread))
    std = np.sqrt(spread**2 + floor**2).astype(np.float32)
    if not np.all(std > 0):
        raise ModelError("held-out good distance maps are all identical: no spread to scale by")
    return mean, std


def _const(name: str, array: npt.NDArray[np.generic]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name=name)


def _reduce(
    op: str, x: str, out: str, axis: int, keepdims: int, opset: int
) -> list[onnx.NodeProto]:
    """Reduce nodes for either side of opset 18 (where `axes` became an input)."""
    if opset >= 18:
        axes_name = f"{out}_axes"
        return [
            helper.make_node(
                "Constant", [], [axes_name], value=_const(axes_name, np.array([axis]))
            ),
            helper.make_node(op, [x, axes_name], [out], keepdims=keepdims),
        ]
    return [helper.make_node(op, [x], [out], axes=[axis], keepdims=keepdims)]


def _load_backbone(backbone_path: Path) -> tuple[onnx.ModelProto, int, int, int, int, int]:
    """The backbone cut after stride 16, its opset, and (C8+C16, H8, W8, C8, C16)."""
    model = onnx.load(str(backbone_path))
    outputs = {o.name: o for o in model.graph.output}
    missing = [n for n in FEATURE_OUTPUTS if n not in outputs]
    if missing:
        raise ModelError(f"{backbone_path}: backbone lacks outputs {missing}")
    input_name = model.graph.input[0].name
    extracted = onnx.utils.Extractor(model).extract_model([input_name], list(FEATURE_OUTPUTS))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    c8, h8, w8 = (int(d.dim_value) for d in outputs["feat_s8"].type.tensor_type.shape.dim[1:])
    c16 = int(outputs["feat_s16"].type.tensor_type.shape.dim[1].dim_value)
    return extracted, opset, c8 + c16, h8, w8, c8


def _feature_head(channels: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from (feat_s8, feat_s16) to `pc_patches` (N, H8*W8, C8+C16).

    The upsampled stride-16 map is cropped to the stride-8 grid: at an input size that is not a
    multiple of 16 (EfficientNet-Lite2's 260 px: 33 against 17 x 2) "same" padding adds the
    extra cell at the end, so both grids start aligned and the surplus row/column is dropped.
    """
    inits = [
        _const("pc_scales", np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32)),
        _const("pc_roi", np.array([], dtype=np.float32)),
        _const("pc_flat_shape", np.array([0, channels, -1], dtype=np.int64)),
        _const("pc_hw_start", np.array([2], dtype=np.int64)),
        _const("pc_hw_end", np.array([4], dtype=np.int64)),
        _const("pc_zero2", np.array([0, 0], dtype=np.int64)),
        _const("pc_axes_hw", np.array([2, 3], dtype=np.int64)),
    ]
    nodes = [
        *(
            helper.make_node(
                "AveragePool",
                [src],
                [dst],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[1, 1],
                count_include_pad=0,
            )
            for src, dst in (("feat_s8", "pc_p8"), ("feat_s16", "pc_p16"))
        ),
        helper.make_node(
            "Resize",
            ["pc_p16", "pc_roi", "pc_scales"],
            ["pc_u16_full"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Shape", ["pc_p8"], ["pc_shape8"]),
        helper.make_node("Slice", ["pc_shape8", "pc_hw_start", "pc_hw_end"], ["pc_hw8"]),
        helper.make_node("Slice", ["pc_u16_full", "pc_zero2", "pc_hw8", "pc_axes_hw"], ["pc_u16"]),
        helper.make_node("Concat", ["pc_p8", "pc_u16"], ["pc_cat"], axis=1),
        helper.make_node("Reshape", ["pc_cat", "pc_flat_shape"], ["pc_flat"]),
        helper.make_node("Transpose", ["pc_flat"], ["pc_patches"], perm=[0, 2, 1]),
    ]
    return nodes, inits


def _finish(model: onnx.ModelProto, outputs: list[onnx.ValueInfoProto], out_path: Path) -> Path:
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    model.producer_name = "cellinspect.patchcore"
    onnx.checker.check_model(model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path


PATCHES_OUTPUT = "pc_patches"


def finish_detector(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    grid: tuple[int, int],
    out_path: Path,
) -> Path:
    """Append a detector's nodes, declare the score and map outputs, check and save."""
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    outs = [
        helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info(MAP_OUTPUT, TensorProto.FLOAT, ["batch", *grid]),
    ]
    return _finish(model, outs, out_path)


def build_patch_feature_graph(backbone_path: Path, out_path: Path) -> Path:
    """The fit-time graph: backbone + feature head, output `pc_patches` (N, HW, C).

    Fitting and scoring share these exact nodes, so the bank is built from the very features
    the detector compares against at run time.
    """
    model, _opset, channels, _h, _w, _c8 = _load_backbone(backbone_path)
    nodes, inits = _feature_head(channels)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    out = helper.make_tensor_value_info(
        PATCHES_OUTPUT, TensorProto.FLOAT, ["batch", "patches", channels]
    )
    return _finish(model, [out], out_path)


def _position_nodes(
    params: PatchCoreParams, positions: int, tag: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes from `{tag}dist` to per-position z-scores, and the name of what the score reads."""
    if params.position_mean is None or params.position_std is None:
        return [], [], f"{tag}dist"
    for name, stat in (("mean", params.position_mean), ("std", params.position_std)):
        if stat.shape != (positions,):
            raise ModelError(
                f"position {name} has shape {stat.shape}, the patch grid has {positions} positions"
            )
    inits = [
        _const(f"{tag}pos_mean", params.position_mean.astype(np.float32)[None, :]),
        _const(f"{tag}pos_inv_std", (1.0 / params.position_std).astype(np.float32)[None, :]),
    ]
    nodes = [
        helper.make_node("Sub", [f"{tag}dist", f"{tag}pos_mean"], [f"{tag}dist_centred"]),
        helper.make_node("Mul", [f"{tag}dist_centred", f"{tag}pos_inv_std"], [f"{tag}dist_pos"]),
    ]
    return nodes, inits, f"{tag}dist_pos"


def _search_nodes(
    params: PatchCoreParams, tag: str, opset: int, positions: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`pc_patches` -> `{tag}dist_norm` (N, H*W): one bank's scaled nearest-neighbour distances."""
    bank_t = (-2.0 * params.bank.T).astype(np.float32)  # (D, M)
    bank_sq = np.einsum("ij,ij->i", params.bank, params.bank).astype(np.float32)[None, None, :]
    position_nodes, position_inits, distance = _position_nodes(params, positions, tag)
    inits = [
        _const(f"{tag}proj", params.projection.astype(np.float32)),
        _const(f"{tag}bank_t_neg2", bank_t),
        _const(f"{tag}bank_sq", bank_sq),
        _const(f"{tag}inv_scale", np.array(1.0 / params.score_scale, dtype=np.float32)),
        *position_inits,
    ]
    t = tag
    nodes = [
        helper.make_node("MatMul", ["pc_patches", f"{t}proj"], [f"{t}x"]),
        *_reduce("ReduceSumSquare", f"{t}x", f"{t}x_sq", axis=2, keepdims=0, opset=opset),
        helper.make_node("MatMul", [f"{t}x", f"{t}bank_t_neg2"], [f"{t}xb"]),
        helper.make_node("Add", [f"{t}xb", f"{t}bank_sq"], [f"{t}partial"]),
        *_reduce("ReduceMin", f"{t}partial", f"{t}min_partial", axis=2, keepdims=0, opset=opset),
        helper.make_node("Add", [f"{t}min_partial", f"{t}x_sq"], [f"{t}d2"]),
        helper.make_node("Relu", [f"{t}d2"], [f"{t}d2_pos"]),
        helper.make_node("Sqrt", [f"{t}d2_pos"], [f"{t}dist"]),
        *position_nodes,
        helper.make_node("Mul", [distance, f"{t}inv_scale"], [f"{t}dist_norm"]),
    ]
    return nodes, inits


def build_patchcore_graph(
    backbone_path: Path, params: PatchCoreParams | Sequence[PatchCoreParams], out_path: Path
) -> Path:
    """Backbone + feature head + projection + nearest-neighbour search against the bank.

    Several params ("bags", each fitted on its own draw of bank and held-out parts) share the
    backbone: the image score is the mean of the bags' scores, the map the mean of their maps.
    """
    bags = [params] if isinstance(params, PatchCoreParams) else list(params)
    if not bags:
        raise ModelError("a PatchCore graph needs at least one bank")
    model, opset, channels, h8, w8, _c8 = _load_backbone(backbone_path)
    for bag in bags:
        if bag.projection.shape[0] != channels:
            raise ModelError(
                f"projection expects {bag.projection.shape[0]} channels, backbone gives {channels}"
            )
    head_nodes, head_inits = _feature_head(channels)
    inits = [*head_inits, _const("pc_map_shape", np.array([-1, h8, w8], dtype=np.int64))]
    nodes = list(head_nodes)
    tags = ["pc_"] if len(bags) == 1 else [f"pc_b{i}_" for i in range(len(bags))]
    for bag, tag in zip(bags, tags, strict=True):
        bag_nodes, bag_inits = _search_nodes(bag, tag, opset, h8 * w8)
        nodes.extend(bag_nodes)
        inits.extend(bag_inits)
    if len(bags) == 1:
        nodes += [
            helper.make_node("Reshape", ["pc_dist_norm", "pc_map_shape"], [MAP_OUTPUT]),
            *_reduce("ReduceMax", "pc_dist_norm", SCORE_OUTPUT, axis=1, keepdims=0, opset=opset),
        ]
    else:
        for tag in tags:
            nodes += _reduce(
                "ReduceMax", f"{tag}dist_norm", f"{tag}score", axis=1, keepdims=0, opset=opset
            )
        nodes += [
            helper.make_node("Mean", [f"{t}score" for t in tags], [SCORE_OUTPUT]),
            helper.make_node("Mean", [f"{t}dist_norm" for t in tags], ["pc_dist_mean"]),
            helper.make_node("Reshape", ["pc_dist_mean", "pc_map_shape"], [MAP_OUTPUT]),
        ]
    return finish_detector(model, nodes, inits, (h8, w8), out_path)


def random_projection(channels: int, dim: int | None, seed: int = 0) -> F32:
    """A Gaussian (Johnson-Lindenstrauss) projection; identity when dim is None or >= channels.

    Random rather than PCA on purpose: PCA of good patches would drop exactly the directions
    in which defects differ from good parts.
    """
    if dim is None or dim >= channels:
        return np.eye(channels, dtype=np.float32)
    rng = np.random.default_rng(seed)
    projection: F32 = (rng.standard_normal((channels, dim)) / np.sqrt(dim)).astype(np.float32)
    return projection


def is_identity(projection: F32) -> bool:
    """True for the projection random_projection returns when there is nothing to project."""
    rows, cols = projection.shape
    return rows == cols and np.array_equal(projection, np.eye(rows, dtype=projection.dtype))
