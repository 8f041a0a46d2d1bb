"""Per-position Gaussian anomaly detection (PaDiM-style), built as one ONNX graph.

Each patch position of an aligned part gets a Gaussian of the good parts' projected features
there (mean and a shrunk covariance); a patch's distance is its Mahalanobis distance at its own
position. Where the good parts come in visibly different kinds (mono- and polycrystalline solar
cells, two suppliers' castings), one Gaussian per position would have to cover both and grows
wide; `groups` splits the good parts by their texture (each channel's spread over the image)
with k-means, fits Gaussians per group, and the graph routes every image to its nearest group.
No defect label is used anywhere.

The image score is the mean of the k highest (z-scored) patch distances: a defect covers
several patches, a noisy patch one. Each group is scaled by its own held-out good parts (1.0 =
the worst of them), so a grained kind's wider spread of scores does not swamp a flat kind's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper
from sklearn.cluster import KMeans

from cellinspect.errors import ModelError
from cellinspect.inference.patchcore import (
    MAP_OUTPUT,
    SCORE_OUTPUT,
    _const,
    _feature_head,
    _load_backbone,
    _reduce,
    finish_detector,
    is_identity,
)

F32 = npt.NDArray[np.float32]

MIN_GROUP_IMAGES = 20  # fewer good images give a covariance of noise, even shrunk
RIDGE_OF_MEAN_LEVEL = 0.01  # added variance, as a share of the mean variance over positions


@dataclass(frozen=True)
class GaussianGroup:
    """One group's Gaussians: for each position p, |(x - mean[p]) @ whiten[p]| is Mahalanobis."""

    mean: F32  # (P, D)
    whiten: F32  # (P, D, D), lower Cholesky factor of the inverse covariance
    position_mean: F32 | None = None  # (P,) held-out good distance per position
    position_std: F32 | None = None  # (P,) its floored spread
    scale: float = 1.0  # this group's top-k score that maps to 1.0 (its worst held-out good)


@dataclass(frozen=True)
class GroupRouter:
    """Nearest-centroid routing on the standardised texture descriptor."""

    centre: F32  # (C,)
    inv_spread: F32  # (C,)
    centroids: F32  # (K, C), in standardised units


@dataclass(frozen=True)
class GaussianParams:
    projection: F32  # (C, D)
    groups: tuple[GaussianGroup, ...]
    router: GroupRouter | None  # None for one group
    top_k: int = 1


def texture_descriptor(patches: F32) -> F32:
    """(N, P, C) -> (N, C): each channel's spread over the image, as the graph computes it."""
    mean = patches.mean(axis=1)
    mean_sq = (patches * patches).mean(axis=1)
    spread: F32 = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0)).astype(np.float32)
    return spread


def fit_router(
    descriptors: F32, groups: int, seed: int
) -> tuple[GroupRouter, npt.NDArray[np.int64]]:
    """k-means on standardised texture descriptors; the router and each image's group."""
    if groups < 2:
        raise ModelError(f"a router needs at least 2 groups, got {groups}")
    if len(descriptors) < groups * MIN_GROUP_IMAGES:
        raise ModelError(
            f"{groups} groups need at least {groups * MIN_GROUP_IMAGES} good images to group, "
            f"got {len(descriptors)}"
        )
    centre = descriptors.mean(axis=0)
    spread = descriptors.std(axis=0)
    inv_spread = (1.0 / np.where(spread > 0, spread, 1.0)).astype(np.float32)
    standard = (descriptors - centre) * inv_spread
    kmeans = KMeans(n_clusters=groups, n_init=10, random_state=seed).fit(standard)
    router = GroupRouter(
        centre=centre.astype(np.float32),
        inv_spread=inv_spread,
        centroids=np.asarray(kmeans.cluster_centers_, dtype=np.float32),
    )
    return router, route(router, descriptors)


def route(router: GroupRouter, descriptors: F32) -> npt.NDArray[np.int64]:
    """Each descriptor's nearest centroid, as the graph picks it."""
    standard = (descriptors - router.centre) * router.inv_spread
    d2 = ((standard[:, None, :] - router.centroids[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(d2.argmin(axis=1), dtype=np.int64)


def fit_position_gaussians(features: F32, shrinkage: float) -> tuple[F32, F32]:
    """Mean and whitening factor per position from (N, P, D) good features.

    The covariance is shrunk toward its mean variance (Ledoit-Wolf style, fixed weight) so
    that a few hundred images give an invertible, stable estimate in 96 dimensions.
    """
    n, _positions, dim = features.shape
    if n < 2:
        raise ModelError(f"a Gaussian needs at least 2 good images, got {n}")
    if not 0.0 <= shrinkage < 1.0:
        raise ModelError(f"shrinkage must be in [0, 1), got {shrinkage}")
    x = features.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    by_position = np.ascontiguousarray(centred.transpose(1, 2, 0))  # (P, D, N): batched BLAS
    cov = by_position @ by_position.transpose(0, 2, 1) / (n - 1)
    level = np.trace(cov, axis1=1, axis2=2) / dim
    if not level.max() > 0:
        raise ModelError("good images' features do not vary at all: nothing to fit")
    # A position where every good part looked the same still gets a small, finite spread.
    level = np.maximum(level, RIDGE_OF_MEAN_LEVEL * level.mean())
    cov = (1.0 - shrinkage) * cov + shrinkage * level[:, None, None] * np.eye(dim)[None]
    cov += RIDGE_OF_MEAN_LEVEL * level.mean() * np.eye(dim)[None]
    whiten = np.linalg.cholesky(np.linalg.inv(cov))
    return mean.astype(np.float32), whiten.astype(np.float32)


def mahalanobis(features: F32, mean: F32, whiten: F32, batch: int = 64) -> F32:
    """(N, P, D) -> (N, P) distances under per-position Gaussians."""
    out = np.empty(features.shape[:2], dtype=np.float32)
    for start in range(0, len(features), batch):
        centred = features[start : start + batch] - mean
        y = centred.transpose(1, 0, 2) @ whiten  # (P, n, D), one batched BLAS product
        out[start : start + batch] = np.sqrt((y * y).sum(axis=2)).T
    return out


def top_k_mean(maps: F32, k: int) -> F32:
    """(N, P) -> (N,): the mean of each map's k highest values."""
    if not 1 <= k <= maps.shape[1]:
        raise ModelError(f"top_k must be in 1..{maps.shape[1]} (patch positions), got {k}")
    top: F32 = np.sort(maps, axis=1)[:, -k:].mean(axis=1).astype(np.float32)
    return top


def _whiten_weights(whiten: F32, name: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`name` (P, D, D) from its lower triangles only: half the file, the same numbers.

    Cholesky factors are zero above the diagonal, and a group's factors are most of the model
    (784 positions x 152 x 152 floats, 72 MB). The file keeps each position's D(D+1)/2 lower
    entries plus one zero, and a Gather with a constant (D, D) index rebuilds the dense
    factors; onnxruntime folds that constant Gather once at session start (ORT_ENABLE_ALL,
    as the runner sets), so runs multiply by the same dense matrices as before. A factor
    with anything above its diagonal is stored dense as it is.
    """
    positions, dim, _ = whiten.shape
    if np.triu(whiten, 1).any():
        return [], [_const(name, whiten)]
    rows, cols = np.tril_indices(dim)
    lower = whiten[:, rows, cols]
    packed = np.concatenate([lower, np.zeros((positions, 1), whiten.dtype)], axis=1)
    index = np.full((dim, dim), len(rows), dtype=np.int64)  # the zero column
    index[rows, cols] = np.arange(len(rows))
    inits = [_const(f"{name}_lower", packed), _const(f"{name}_index", index)]
    return [helper.make_node("Gather", [f"{name}_lower", f"{name}_index"], [name], axis=1)], inits


def _group_weights(
    group: GaussianGroup, tag: str, positions: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """One group's weights, named `{tag}...`, shared by every branch that scores with it."""
    if not (np.isfinite(group.scale) and group.scale > 0):
        raise ModelError(f"group scale must be a positive number, got {group.scale}")
    mean_w = np.einsum("pc,pcd->pd", group.mean, group.whiten)[:, None, :]
    nodes, inits = _whiten_weights(group.whiten, f"{tag}whiten")
    inits += [
        _const(f"{tag}mean_w", mean_w),
        _const(f"{tag}inv_scale", np.array(1.0 / group.scale, dtype=np.float32)),
    ]
    if group.position_mean is None or group.position_std is None:
        return nodes, inits
    for stat in (group.position_mean, group.position_std):
        if stat.shape != (positions,):
            raise ModelError(f"position statistics have shape {stat.shape}, grid has {positions}")
    return nodes, [
        *inits,
        _const(f"{tag}pos_mean", group.position_mean.astype(np.float32)[None, :]),
        _const(f"{tag}pos_inv_std", (1.0 / group.position_std).astype(np.float32)[None, :]),
    ]


def _group_nodes(group: GaussianGroup, tag: str, out_tag: str, opset: int) -> list[onnx.NodeProto]:
    """`ga_xt` (P, N, D) -> `{out_tag}z` (N, P): distances under the weights named `{tag}`,
    z-scored per position if the group has statistics, scaled."""
    nodes = [
        helper.make_node("MatMul", ["ga_xt", f"{tag}whiten"], [f"{out_tag}xw"]),
        helper.make_node("Sub", [f"{out_tag}xw", f"{tag}mean_w"], [f"{out_tag}y"]),
        *_reduce("ReduceSumSquare", f"{out_tag}y", f"{out_tag}d2", axis=2, keepdims=0, opset=opset),
        helper.make_node("Sqrt", [f"{out_tag}d2"], [f"{out_tag}dt"]),
        helper.make_node("Transpose", [f"{out_tag}dt"], [f"{out_tag}dist"], perm=[1, 0]),
    ]
    if group.position_mean is None or group.position_std is None:
        nodes.append(
            helper.make_node("Mul", [f"{out_tag}dist", f"{tag}inv_scale"], [f"{out_tag}z"])
        )
        return nodes
    return [
        *nodes,
        helper.make_node("Sub", [f"{out_tag}dist", f"{tag}pos_mean"], [f"{out_tag}centred"]),
        helper.make_node("Mul", [f"{out_tag}centred", f"{tag}pos_inv_std"], [f"{out_tag}zr"]),
        helper.make_node("Mul", [f"{out_tag}zr", f"{tag}inv_scale"], [f"{out_tag}z"]),
    ]


def _branch(name: str, nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    """An If branch: nodes reading the outer graph's values, one float output."""
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
    return helper.make_graph(nodes, name, [], [out])


def _mixed_nodes(
    groups: tuple[GaussianGroup, ...], tags: list[str], opset: int
) -> list[onnx.NodeProto]:
    """Every group's map, each image's own picked by `ga_mask`: for batches that mix groups."""
    nodes: list[onnx.NodeProto] = []
    for group, tag in zip(groups, tags, strict=True):
        nodes += _group_nodes(group, tag, f"{tag}mix_", opset)
        nodes.append(helper.make_node("Reshape", [f"{tag}mix_z", "ga_stack_shape"], [f"{tag}z3"]))
    return [
        *nodes,
        helper.make_node("Concat", [f"{t}z3" for t in tags], ["ga_zs"], axis=1),
        helper.make_node("MatMul", ["ga_mask", "ga_zs"], ["ga_z_picked"]),
        helper.make_node("Reshape", ["ga_z_picked", "ga_flat_shape"], ["ga_z_mixed"]),
    ]


def _routed_nodes(
    groups: tuple[GaussianGroup, ...], tags: list[str], positions: int, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`ga_group` -> `ga_z`, reading only the weights of the groups the batch was routed to.

    Each group's whitening factors are tens of MB (784 positions x D x D) and streaming them
    is most of a batch-1 run, so a batch that is all one group (every batch of one image)
    takes that group's branch alone; a batch that mixes groups scores under all of them.
    """
    inits = [
        _const("ga_stack_shape", np.array([0, 1, positions], dtype=np.int64)),
        _const("ga_flat_shape", np.array([-1, positions], dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("ReduceMin", ["ga_group"], ["ga_group_min"], keepdims=0),
        helper.make_node("ReduceMax", ["ga_group"], ["ga_group_max"], keepdims=0),
    ]
    for i in range(len(groups)):
        inits.append(_const(f"ga_id{i}", np.array(i, dtype=np.int64)))
        nodes += [
            helper.make_node("Equal", ["ga_group_min", f"ga_id{i}"], [f"ga_lo_is{i}"]),
            helper.make_node("Equal", ["ga_group_max", f"ga_id{i}"], [f"ga_hi_is{i}"]),
            helper.make_node("And", [f"ga_lo_is{i}", f"ga_hi_is{i}"], [f"ga_all_in{i}"]),
        ]
    # Nested from the last group: if all in group i, that group alone, else ask about i + 1;
    # after the last group, the mixed batch.
    otherwise = _branch("ga_mixed", _mixed_nodes(groups, tags, opset), "ga_z_mixed")
    for i in reversed(range(len(groups))):
        only = _branch(
            f"ga_only{i}",
            _group_nodes(groups[i], tags[i], f"{tags[i]}only_", opset),
            f"{tags[i]}only_z",
        )
        out = "ga_z" if i == 0 else f"ga_z_from{i}"
        node = helper.make_node(
            "If", [f"ga_all_in{i}"], [out], then_branch=only, else_branch=otherwise
        )
        if i == 0:
            nodes.append(node)
        else:
            otherwise = _branch(f"ga_from{i}", [node], out)
    return nodes, inits


def _router_nodes(
    router: GroupRouter, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`pc_patches` -> `ga_mask` (N, 1, K): one-hot of the nearest texture centroid."""
    k = router.centroids.shape[0]
    inits = [
        _const("ga_centre", router.centre[None, :]),
        _const("ga_inv_spread", router.inv_spread[None, :]),
        _const("ga_centroids_t_neg2", (-2.0 * router.centroids.T).astype(np.float32)),
        _const("ga_centroids_sq", (router.centroids**2).sum(axis=1).astype(np.float32)[None]),
        _const("ga_group_ids", np.arange(k, dtype=np.int64)[None, :]),
        _const("ga_mask_shape", np.array([-1, 1, k], dtype=np.int64)),
    ]
    nodes = [
        *_reduce("ReduceMean", "pc_patches", "ga_m", axis=1, keepdims=0, opset=opset),
        helper.make_node("Mul", ["pc_patches", "pc_patches"], ["ga_sq"]),
        *_reduce("ReduceMean", "ga_sq", "ga_m2", axis=1, keepdims=0, opset=opset),
        helper.make_node("Mul", ["ga_m", "ga_m"], ["ga_m_sq"]),
        helper.make_node("Sub", ["ga_m2", "ga_m_sq"], ["ga_var"]),
        helper.make_node("Relu", ["ga_var"], ["ga_var_pos"]),
        helper.make_node("Sqrt", ["ga_var_pos"], ["ga_texture"]),
        helper.make_node("Sub", ["ga_texture", "ga_centre"], ["ga_tc"]),
        helper.make_node("Mul", ["ga_tc", "ga_inv_spread"], ["ga_ts"]),
        helper.make_node("MatMul", ["ga_ts", "ga_centroids_t_neg2"], ["ga_tcd"]),
        helper.make_node("Add", ["ga_tcd", "ga_centroids_sq"], ["ga_partial"]),
        helper.make_node("ArgMin", ["ga_partial"], ["ga_group"], axis=1, keepdims=1),
        helper.make_node("Equal", ["ga_group", "ga_group_ids"], ["ga_hot"]),
        helper.make_node("Cast", ["ga_hot"], ["ga_hot_f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["ga_hot_f", "ga_mask_shape"], ["ga_mask"]),
    ]
    return nodes, inits


def build_gaussian_graph(backbone_path: Path, params: GaussianParams, out_path: Path) -> Path:
    """Backbone + feature head + projection + per-position Mahalanobis (+ routing, top-k)."""
    if not params.groups:
        raise ModelError("a Gaussian detector needs at least one group")
    if (params.router is None) != (len(params.groups) == 1):
        raise ModelError("a router is needed exactly when there is more than one group")
    if params.router is not None and params.router.centroids.shape[0] != len(params.groups):
        raise ModelError(
            f"router has {params.router.centroids.shape[0]} centroids for "
            f"{len(params.groups)} groups"
        )
    model, opset, channels, h8, w8, _c8 = _load_backbone(backbone_path)
    if params.projection.shape[0] != channels:
        raise ModelError(
            f"projection expects {params.projection.shape[0]} channels, backbone gives {channels}"
        )
    positions = h8 * w8
    if not 1 <= params.top_k <= positions:
        raise ModelError(f"top_k must be in 1..{positions} (patch positions), got {params.top_k}")
    head_nodes, inits = _feature_head(channels)
    nodes = list(head_nodes)
    inits += [
        _const("ga_map_shape", np.array([-1, h8, w8], dtype=np.int64)),
        _const("ga_k", np.array([params.top_k], dtype=np.int64)),
    ]
    projected = "pc_patches"
    if not is_identity(params.projection):
        inits.append(_const("ga_proj", params.projection.astype(np.float32)))
        nodes.append(helper.make_node("MatMul", ["pc_patches", "ga_proj"], ["ga_x"]))
        projected = "ga_x"
    nodes.append(helper.make_node("Transpose", [projected], ["ga_xt"], perm=[1, 0, 2]))
    tags = [f"ga_g{i}_" for i in range(len(params.groups))]
    for group, tag in zip(params.groups, tags, strict=True):
        weight_nodes, weight_inits = _group_weights(group, tag, positions)
        nodes += weight_nodes
        inits += weight_inits
    if params.router is None:
        nodes += _group_nodes(params.groups[0], tags[0], tags[0], opset)
        nodes.append(helper.make_node("Identity", [f"{tags[0]}z"], ["ga_z"]))
    else:
        router_nodes, router_inits = _router_nodes(params.router, opset)
        routed_nodes, routed_inits = _routed_nodes(params.groups, tags, positions, opset)
        nodes += router_nodes + routed_nodes
        inits += router_inits + routed_inits
    nodes += [
        helper.make_node("Reshape", ["ga_z", "ga_map_shape"], [MAP_OUTPUT]),
        helper.make_node("TopK", ["ga_z", "ga_k"], ["ga_top", "ga_top_idx"], axis=1),
        *_reduce("ReduceMean", "ga_top", SCORE_OUTPUT, axis=1, keepdims=0, opset=opset),
    ]
    return finish_detector(model, nodes, inits, (h8, w8), out_path)
