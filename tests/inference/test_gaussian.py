"""Per-position Gaussian graph: its distances, routing and top-k score equal plain numpy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from cellinspect.errors import ModelError
from cellinspect.inference.gaussian import (
    RIDGE_OF_MEAN_LEVEL,
    GaussianGroup,
    GaussianParams,
    GroupRouter,
    build_gaussian_graph,
    fit_position_gaussians,
    fit_router,
    mahalanobis,
    route,
    texture_descriptor,
    top_k_mean,
)
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.patchcore import (
    MAP_OUTPUT,
    PATCHES_OUTPUT,
    SCORE_OUTPUT,
    build_patch_feature_graph,
    random_projection,
)
from cellinspect.preprocess.model_input import prepare_batch
from tests.conftest import ROOT

F32 = npt.NDArray[np.float32]
BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"
POSITIONS = 28 * 28


def _batch_and_patches(tmp_path: Path) -> tuple[F32, F32]:
    """Three images of different texture (noise, smooth ramp, stripes) and their patches."""
    rng = np.random.default_rng(1)
    ramp = np.tile(np.linspace(0, 255, 224, dtype=np.uint8)[None, :, None], (224, 1, 3))
    stripes = np.zeros((224, 224, 3), np.uint8)
    stripes[::8] = 255
    images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), ramp, stripes]
    batch = prepare_batch(images, load_manifest(BACKBONE).input)
    graph = build_patch_feature_graph(BACKBONE, tmp_path / "feat.onnx")
    patches = ort.InferenceSession(str(graph)).run([PATCHES_OUTPUT], {"image": batch})[0]
    return batch, np.asarray(patches, dtype=np.float32)


def _group(rng: np.random.Generator, dim: int, z_scored: bool, scale: float = 1.0) -> GaussianGroup:
    """Gaussians fitted on random features, with random position statistics if asked."""
    mean, whiten = fit_position_gaussians(
        rng.normal(0.0, 2.0, (25, POSITIONS, dim)).astype(np.float32), 0.1
    )
    if not z_scored:
        return GaussianGroup(mean, whiten, scale=scale)
    return GaussianGroup(
        mean,
        whiten,
        rng.uniform(0.0, 5.0, POSITIONS).astype(np.float32),
        rng.uniform(0.5, 3.0, POSITIONS).astype(np.float32),
        scale,
    )


def _numpy_map(patches: F32, projection: F32, group: GaussianGroup) -> F32:
    d = mahalanobis(patches @ projection, group.mean, group.whiten)
    if group.position_mean is None or group.position_std is None:
        return d / group.scale
    return (d - group.position_mean) / group.position_std / group.scale


def test_mahalanobis_is_the_inverse_covariance_form() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(0.0, 1.0, (40, 3, 4)).astype(np.float32)
    features[:, :, 1] += 2.0 * features[:, :, 0]  # correlated channels
    mean, whiten = fit_position_gaussians(features, 0.0)
    query = rng.normal(0.0, 1.0, (5, 3, 4)).astype(np.float32)
    got = mahalanobis(query, mean, whiten)
    covs = [np.cov(features[:, p].T.astype(np.float64)) for p in range(3)]
    ridge = RIDGE_OF_MEAN_LEVEL * np.mean([np.trace(c) / 4 for c in covs])
    for p in range(3):
        inv = np.linalg.inv(covs[p] + ridge * np.eye(4))
        centred = query[:, p] - features[:, p].mean(axis=0)
        want = np.sqrt(np.einsum("nc,cd,nd->n", centred, inv, centred))
        np.testing.assert_allclose(got[:, p], want, rtol=1e-4)


def test_shrinkage_pulls_the_covariance_toward_its_mean_variance() -> None:
    rng = np.random.default_rng(0)
    features = (rng.normal(0.0, 1.0, (200, 2, 6)) * np.arange(1, 7)).astype(np.float32)
    offset = np.array([0, 0, 0, 0, 0, 6], np.float32)  # one spread along the widest channel
    query = (features.mean(axis=0) + offset)[None]
    plain = mahalanobis(query, *fit_position_gaussians(features, 0.0))
    shrunk = mahalanobis(query, *fit_position_gaussians(features, 0.9))
    np.testing.assert_allclose(plain, 1.0, atol=0.15)
    # Shrunk toward the mean variance, the widest channel narrows: the same offset is farther.
    assert np.all(shrunk > 1.3 * plain)
    with pytest.raises(ModelError, match="shrinkage"):
        fit_position_gaussians(features, 1.0)
    with pytest.raises(ModelError, match="at least 2"):
        fit_position_gaussians(features[:1], 0.1)
    with pytest.raises(ModelError, match="do not vary at all"):
        fit_position_gaussians(np.ones((5, 2, 6), np.float32), 0.1)


def test_top_k_mean_and_its_bounds() -> None:
    maps = np.array([[1.0, 5.0, 3.0, 4.0]], np.float32)
    assert top_k_mean(maps, 1)[0] == 5.0
    assert top_k_mean(maps, 2)[0] == 4.5
    for k in (0, 5):
        with pytest.raises(ModelError, match="top_k"):
            top_k_mean(maps, k)


@pytest.mark.parametrize(("z_scored", "dim"), [(False, 16), (True, 16), (True, None)])
def test_one_group_graph_matches_numpy(tmp_path: Path, z_scored: bool, dim: int | None) -> None:
    batch, patches = _batch_and_patches(tmp_path)
    rng = np.random.default_rng(2)
    projection = random_projection(152, dim, seed=0)  # None: identity, all 152 channels
    group = _group(rng, projection.shape[1], z_scored, scale=2.0)
    params = GaussianParams(projection, (group,), None, top_k=7)
    graph = build_gaussian_graph(BACKBONE, params, tmp_path / "g.onnx")
    initialisers = {i.name for i in onnx.load(str(graph)).graph.initializer}
    assert ("ga_proj" in initialisers) == (dim is not None)  # an identity is not multiplied
    scores, maps = ort.InferenceSession(str(graph)).run(
        [SCORE_OUTPUT, MAP_OUTPUT], {"image": batch}
    )
    want = _numpy_map(patches, projection, group)
    assert (
        np.abs(want * 2.0 - _numpy_map(patches, projection, replace(group, scale=1.0))).max() < 1e-4
    )
    np.testing.assert_allclose(maps.reshape(3, -1), want, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scores, top_k_mean(want, 7), rtol=1e-3, atol=1e-3)


def test_router_sends_each_image_to_its_nearest_texture_group(tmp_path: Path) -> None:
    batch, patches = _batch_and_patches(tmp_path)
    descriptors = texture_descriptor(patches)
    centre = descriptors.mean(axis=0)
    inv_spread = (1.0 / (descriptors.std(axis=0) + 1e-3)).astype(np.float32)
    standard = (descriptors - centre) * inv_spread
    router = GroupRouter(centre, inv_spread, standard[[2, 0]])  # group 0 = stripes, 1 = noise
    assert route(router, descriptors).tolist()[::2] == [1, 0]
    rng = np.random.default_rng(3)
    projection = random_projection(152, 16, seed=0)
    groups = (_group(rng, 16, True, scale=1.5), _group(rng, 16, True, scale=3.0))
    params = GaussianParams(projection, groups, router, top_k=3)
    graph = build_gaussian_graph(BACKBONE, params, tmp_path / "g.onnx")
    scores, maps = ort.InferenceSession(str(graph)).run(
        [SCORE_OUTPUT, MAP_OUTPUT], {"image": batch}
    )
    picked = route(router, descriptors)
    want = np.stack(
        [_numpy_map(patches[i : i + 1], projection, groups[g])[0] for i, g in enumerate(picked)]
    )
    np.testing.assert_allclose(maps.reshape(3, -1), want, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(scores, top_k_mean(want, 3), rtol=1e-3, atol=1e-3)
    # Each group really scores differently, so a wrong route would show above.
    other = _numpy_map(patches[:1], projection, groups[1 - picked[0]])[0]
    assert np.abs(other - want[0]).max() > 0.1
    # One image at a time (the station's batch): each takes its own group's branch alone.
    session = ort.InferenceSession(str(graph))
    for i in range(3):
        alone = session.run([MAP_OUTPUT], {"image": batch[i : i + 1]})[0]
        np.testing.assert_allclose(alone.reshape(-1), want[i], rtol=1e-3, atol=1e-3)
    # A batch of one group only (stripes twice) takes that branch too.
    same = session.run([MAP_OUTPUT], {"image": batch[[2, 2]]})[0]
    np.testing.assert_allclose(same.reshape(2, -1), want[[2, 2]], rtol=1e-3, atol=1e-3)
    assert [n.op_type for n in onnx.load(str(graph)).graph.node].count("If") == 1


def test_fit_router_finds_two_kinds_and_needs_enough_images() -> None:
    rng = np.random.default_rng(0)
    kind_a = rng.normal(0.0, 0.1, (30, 5)) + np.array([1, 1, 0, 0, 0])
    kind_b = rng.normal(0.0, 0.1, (30, 5)) + np.array([0, 0, 0, 1, 1])
    descriptors = np.concatenate([kind_a, kind_b]).astype(np.float32)
    router, groups = fit_router(descriptors, 2, seed=0)
    assert len(set(groups[:30].tolist())) == 1 and len(set(groups[30:].tolist())) == 1
    assert groups[0] != groups[30]
    np.testing.assert_array_equal(route(router, descriptors), groups)
    with pytest.raises(ModelError, match="at least 60 good images"):
        fit_router(descriptors[:50], 3, seed=0)


def test_graph_refuses_inconsistent_parameters(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    projection = random_projection(152, 8, seed=0)
    group = _group(rng, 8, False)
    router = GroupRouter(
        np.zeros(152, np.float32), np.ones(152, np.float32), np.zeros((2, 152), np.float32)
    )
    cases = [
        (GaussianParams(projection, (group,), router), "router is needed exactly"),
        (GaussianParams(projection, (group, group), None), "router is needed exactly"),
        (GaussianParams(projection, (group,) * 3, router), "2 centroids for 3 groups"),
        (GaussianParams(projection, (group,), None, top_k=785), "top_k must be in"),
        (GaussianParams(projection[:10], (group,), None), "projection expects 10"),
        (GaussianParams(projection, (), None), "at least one group"),
        (GaussianParams(projection, (replace(group, scale=0.0),), None), "scale must be a"),
    ]
    for params, message in cases:
        with pytest.raises(ModelError, match=message):
            build_gaussian_graph(BACKBONE, params, tmp_path / "bad.onnx")


@pytest.mark.parametrize("triangular", [True, False])
def test_whitening_factors_are_stored_as_lower_triangles(tmp_path: Path, triangular: bool) -> None:
    """Cholesky factors keep only their lower triangles in the file; the scores do not change.

    A factor with anything above its diagonal (not a Cholesky factor) is stored dense.
    """
    batch, patches = _batch_and_patches(tmp_path)
    rng = np.random.default_rng(4)
    projection = random_projection(152, 16, seed=0)
    group = _group(rng, 16, z_scored=True)
    if not triangular:
        whiten = group.whiten.copy()
        whiten[:, 0, 5] = 0.25
        group = replace(group, whiten=whiten)
    params = GaussianParams(projection, (group,), None, top_k=3)
    graph = build_gaussian_graph(BACKBONE, params, tmp_path / "g.onnx")
    shapes = {i.name: list(i.dims) for i in onnx.load(str(graph)).graph.initializer}
    if triangular:
        assert "ga_g0_whiten" not in shapes
        assert shapes["ga_g0_whiten_lower"] == [POSITIONS, 16 * 17 // 2 + 1]
        assert shapes["ga_g0_whiten_index"] == [16, 16]
    else:
        assert shapes["ga_g0_whiten"] == [POSITIONS, 16, 16]
        assert "ga_g0_whiten_lower" not in shapes
    maps = ort.InferenceSession(str(graph)).run([MAP_OUTPUT], {"image": batch})[0]
    want = _numpy_map(patches, projection, group)
    np.testing.assert_allclose(maps.reshape(3, -1), want, rtol=1e-3, atol=1e-3)
