"""PatchCore graph: the in-graph nearest-neighbour search equals a brute-force numpy search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.patchcore import (
    MAP_OUTPUT,
    MIN_POSITION_IMAGES,
    PATCHES_OUTPUT,
    SCORE_OUTPUT,
    PatchCoreParams,
    build_patch_feature_graph,
    build_patchcore_graph,
    greedy_coreset,
    position_stats,
    random_projection,
)
from cellinspect.preprocess.model_input import prepare_batch
from tests.conftest import ROOT

F32 = npt.NDArray[np.float32]
BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


def test_greedy_coreset_covers_better_than_random() -> None:
    rng = np.random.default_rng(0)
    # two dense clusters and a few far outliers: a good coreset must pick the outliers
    points = np.concatenate(
        [rng.normal(0, 0.1, (500, 8)), rng.normal(5, 0.1, (500, 8)), rng.normal(20, 1, (5, 8))]
    ).astype(np.float32)
    picked = greedy_coreset(points, 20, seed=0)
    assert len(set(picked.tolist())) == 20

    def radius(idx: np.ndarray) -> float:
        d = ((points[:, None, :] - points[idx][None]) ** 2).sum(-1)
        return float(np.sqrt(d.min(1)).max())

    random_idx = rng.choice(len(points), 20, replace=False)
    assert radius(picked) < radius(random_idx)
    assert set(range(1000, 1005)) <= set(picked.tolist())


@pytest.mark.parametrize(("size", "count"), [(0, 5), (-1, 5)])
def test_coreset_size_must_be_positive(size: int, count: int) -> None:
    with pytest.raises(ValueError, match="coreset size"):
        greedy_coreset(np.zeros((count, 3), np.float32), size)


def test_coreset_larger_than_input_keeps_everything() -> None:
    assert greedy_coreset(np.zeros((4, 3), np.float32), 10).tolist() == [0, 1, 2, 3]


def _random_batch_patches(tmp_path: Path) -> tuple[F32, F32]:
    """Three random images as a model batch, and their patch features from the fit graph."""
    manifest = load_manifest(BACKBONE)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(3)]
    batch = prepare_batch(images, manifest.input)
    feat_graph = build_patch_feature_graph(BACKBONE, tmp_path / "feat.onnx")
    patches = ort.InferenceSession(str(feat_graph)).run([PATCHES_OUTPUT], {"image": batch})[0]
    return batch, np.asarray(patches, dtype=np.float32)


def _brute_force_distances(patches: F32, projection: F32, bank: F32) -> F32:
    """Nearest-bank distance of every projected patch, the slow and obvious way."""
    x = patches @ projection
    squared = ((x[:, :, None, :] - bank[None, None]) ** 2).sum(-1).min(-1)
    return np.sqrt(squared).astype(np.float32)


def test_graph_matches_brute_force_search(tmp_path: Path) -> None:
    batch, patches = _random_batch_patches(tmp_path)
    assert patches.shape == (3, 28 * 28, 152)
    projection = random_projection(152, 64, seed=0)
    bank = (patches[0] @ projection)[::7]  # bank from image 0 only
    params = PatchCoreParams(projection=projection, bank=bank, score_scale=2.0)
    graph = build_patchcore_graph(BACKBONE, params, tmp_path / "pc.onnx")
    session = ort.InferenceSession(str(graph))
    scores, maps = session.run([SCORE_OUTPUT, MAP_OUTPUT], {"image": batch})
    d = _brute_force_distances(patches, projection, bank) / 2.0
    # |x|^2 - 2x.b + |b|^2 in float32 leaves ~1e-2 where x is a bank member (d = 0)
    np.testing.assert_allclose(maps.reshape(3, -1), d, rtol=1e-3, atol=0.05)
    np.testing.assert_allclose(scores, d.max(1), rtol=1e-3, atol=1e-3)
    assert scores[0] < scores[1]  # the image the bank came from is the most normal


def test_projection_identity_when_not_reducing() -> None:
    np.testing.assert_array_equal(random_projection(5, None), np.eye(5, dtype=np.float32))
    assert random_projection(152, 32).shape == (152, 32)


def test_graph_z_scores_each_position_when_given_statistics(tmp_path: Path) -> None:
    batch, patches = _random_batch_patches(tmp_path)
    projection = random_projection(152, 64, seed=0)
    bank = (patches[0] @ projection)[::7]
    rng = np.random.default_rng(2)
    mean = rng.uniform(0.0, 5.0, 28 * 28).astype(np.float32)
    std = rng.uniform(0.5, 3.0, 28 * 28).astype(np.float32)
    params = PatchCoreParams(
        projection=projection, bank=bank, score_scale=2.0, position_mean=mean, position_std=std
    )
    graph = build_patchcore_graph(BACKBONE, params, tmp_path / "pc.onnx")
    scores, maps = ort.InferenceSession(str(graph)).run(
        [SCORE_OUTPUT, MAP_OUTPUT], {"image": batch}
    )
    z = (_brute_force_distances(patches, projection, bank) - mean) / std / 2.0
    np.testing.assert_allclose(maps.reshape(3, -1), z, rtol=1e-3, atol=0.05)
    np.testing.assert_allclose(scores, z.max(1), rtol=1e-3, atol=0.05)
    wrong = PatchCoreParams(
        projection=projection, bank=bank, score_scale=1.0, position_mean=mean[:10], position_std=std
    )
    with pytest.raises(ModelError, match="784 positions"):
        build_patchcore_graph(BACKBONE, wrong, tmp_path / "bad.onnx")


def test_position_stats_floor_the_spread_and_need_enough_images() -> None:
    rng = np.random.default_rng(3)
    maps = rng.normal(1.0, 0.2, (MIN_POSITION_IMAGES, 6)).astype(np.float32)
    maps[:, 0] = 2.0  # every good part alike at this position: no spread of its own
    mean, std = position_stats(maps)
    np.testing.assert_allclose(mean, maps.mean(0), rtol=1e-6)
    floor = 0.5 * float(np.median(maps.std(0)))
    assert std[0] == pytest.approx(floor, rel=1e-5)  # floored, so a tiny change stays small
    assert np.all(std[1:] >= maps.std(0)[1:])
    with pytest.raises(ModelError, match=f"at least {MIN_POSITION_IMAGES} held-out"):
        position_stats(maps[:-1])
    with pytest.raises(ModelError, match="all identical"):
        position_stats(np.ones((MIN_POSITION_IMAGES, 6), np.float32))


def test_bags_share_the_backbone_and_average_their_scores(tmp_path: Path) -> None:
    batch, patches = _random_batch_patches(tmp_path)
    bags = []
    for seed, scale in ((0, 2.0), (1, 3.0)):
        projection = random_projection(152, 64, seed=seed)
        bank = (patches[0] @ projection)[seed::7]
        bags.append(PatchCoreParams(projection=projection, bank=bank, score_scale=scale))
    graph = build_patchcore_graph(BACKBONE, bags, tmp_path / "bags.onnx")
    scores, maps = ort.InferenceSession(str(graph)).run(
        [SCORE_OUTPUT, MAP_OUTPUT], {"image": batch}
    )
    per_bag = [_brute_force_distances(patches, b.projection, b.bank) / b.score_scale for b in bags]
    np.testing.assert_allclose(scores, np.mean([d.max(1) for d in per_bag], axis=0), atol=0.05)
    np.testing.assert_allclose(maps.reshape(3, -1), np.mean(per_bag, axis=0), atol=0.05)
    backbone_convs = sum(n.op_type == "Conv" for n in onnx.load(str(BACKBONE)).graph.node)
    merged_convs = sum(n.op_type == "Conv" for n in onnx.load(str(graph)).graph.node)
    assert merged_convs <= backbone_convs  # one backbone for both bags
    with pytest.raises(ModelError, match="at least one bank"):
        build_patchcore_graph(BACKBONE, [], tmp_path / "none.onnx")
