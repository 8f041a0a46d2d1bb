"""The few-shot benchmark's core on a handful of rendered parts: its numpy fits score as the
ONNX graphs do, and the curve draws, refuses and augments as it says."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.few_shot import (
    Extractor,
    FeatureSet,
    Lever,
    curve,
    draw_order,
    fit_patchcore,
    score_gaussian,
    score_patchcore,
    select_views,
    subset_views,
    table,
)
from benchmarks.few_shot_views import bench_view, bench_view_names, parse_views
from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.errors import ModelError
from cellinspect.inference.gaussian import build_gaussian_graph
from cellinspect.inference.manifest import load_manifest
from cellinspect.inference.patchcore import SCORE_OUTPUT, build_patchcore_graph
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.bank_augment import AugmentedPatches, augment_features
from cellinspect.training.dataset import no_stage
from cellinspect.training.fit_anomaly import _session, run_batched
from cellinspect.training.fit_gaussian import fit_gaussian
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureSet, list[np.ndarray], Path]:
    """12 good parts to fit, 8 to test (half defective), features of all and their views."""
    tmp = tmp_path_factory.mktemp("few-shot")
    extract = Extractor(BACKBONE, tmp, batch_size=8)
    pool_images = [render_part(s) for s in plan_parts(12, 41, 0.0)]
    specs = plan_parts(8, 42, 0.5)
    test_images = [render_part(s) for s in specs]
    views = augment_features(pool_images, ("flips", "shifts"), extract)
    features = FeatureSet(
        "tiny",
        extract(pool_images),
        extract(test_images),
        np.array([s.label != "good" for s in specs]),
        views,
    )
    return features, test_images, tmp


def _graph_scores(model: Path, images: list[np.ndarray]) -> np.ndarray:
    return run_batched(_session(model), SCORE_OUTPUT, images, load_manifest(BACKBONE), 8)


def test_numpy_scores_match_the_onnx_graphs(
    tiny: tuple[FeatureSet, list[np.ndarray], Path],
) -> None:
    features, test_images, tmp = tiny
    assert features.views is not None
    gauss = AnomalyFitParams(detector="gaussian", projection_dim=32, top_k=3)
    fit = fit_gaussian(features.pool, 2, gauss, no_stage, features.views)
    graph = build_gaussian_graph(BACKBONE, fit.params, tmp / "g.onnx")
    ours = score_gaussian(fit.params, features.test)
    assert np.allclose(ours, _graph_scores(graph, test_images), rtol=2e-3, atol=2e-3)
    # weights estimated from the parts (OAS) go into the graph as the fit used them
    oas = fit_gaussian(
        features.pool, 2, replace(gauss, shrinkage_rule="oas"), no_stage, features.views
    )
    assert oas.shrinkage[0] != gauss.shrinkage and 0.0 < oas.shrinkage[0] < 1.0
    graph = build_gaussian_graph(BACKBONE, oas.params, tmp / "g-oas.onnx")
    ours = score_gaussian(oas.params, features.test)
    assert not np.allclose(ours, score_gaussian(fit.params, features.test), rtol=1e-3)
    assert np.allclose(ours, _graph_scores(graph, test_images), rtol=2e-3, atol=2e-3)
    patch = AnomalyFitParams(coreset_size=300, projection_dim=32)
    fitted = fit_patchcore(features.pool, patch, features.views)
    graph = build_patchcore_graph(BACKBONE, fitted, tmp / "p.onnx")
    ours = score_patchcore(fitted, features.test)
    assert np.allclose(ours, _graph_scores(graph, test_images), rtol=2e-3, atol=2e-3)


def test_draws_are_nested_and_views_follow_their_images() -> None:
    order = draw_order(50, 1, 0)
    assert sorted(order.tolist()) == list(range(50))
    assert not np.array_equal(order, draw_order(50, 2, 0))
    views = AugmentedPatches(
        np.arange(12, dtype=np.float32)[:, None, None], np.repeat(np.arange(6), 2)
    )
    sub = subset_views(views, np.array([4, 1]))
    assert sub.source.tolist() == [1, 1, 0, 0] and sub.patches.ravel().tolist() == [2, 3, 8, 9]


def test_a_lever_gets_only_the_views_its_augment_makes(
    tiny: tuple[FeatureSet, list[np.ndarray], Path],
) -> None:
    features, _images, tmp = tiny
    assert features.views is not None and features.augments == ("flips", "shifts")
    flips = features.views_for(("flips",))
    assert flips is not None and flips.per_image() == 2
    pool_images = [render_part(s) for s in plan_parts(12, 41, 0.0)]
    alone = augment_features(pool_images, ("flips",), Extractor(BACKBONE, tmp, batch_size=8))
    assert alone is not None and np.array_equal(flips.source, alone.source)
    np.testing.assert_allclose(flips.patches, alone.patches, rtol=1e-4, atol=1e-4)
    shifts = select_views(features.views, features.augments, ("shifts",))
    assert shifts.per_image() == 4 and len(shifts.source) + len(flips.source) == 72
    with pytest.raises(ModelError, match="not extracted"):
        select_views(features.views, ("flips",), ("flips", "shifts"))


def test_curve_gives_aurocs_per_draw_and_names_what_it_refuses(
    tiny: tuple[FeatureSet, list[np.ndarray], Path],
) -> None:
    features, _images, _tmp = tiny
    gauss = AnomalyFitParams(detector="gaussian", projection_dim=32)
    levers = [
        Lever("gaussian", gauss),
        Lever("gaussian +flips+shifts", replace(gauss, augment=("flips", "shifts"))),
        Lever("patchcore", AnomalyFitParams(coreset_size=200, projection_dim=32)),
    ]
    lines: list[str] = []
    points = curve(features, levers, (10, None), draws=2, seed=0, log=lines.append)
    by = {(p.lever, p.size): p for p in points}
    assert set(by) == {(lever.name, n) for lever in levers for n in (10, 12)}
    # 10 parts in 5 folds leave 8 to fit a fold on: too few Gaussians' worth, unless augmented
    assert by[("gaussian", 10)].refused and "at least 20" in str(by[("gaussian", 10)].refused)
    for key in (("gaussian +flips+shifts", 10), ("patchcore", 10), ("patchcore", 12)):
        assert by[key].refused is None and len(by[key].aurocs) == 2
        assert all(0.0 <= a <= 1.0 for a in by[key].aurocs)
    assert len(lines) == len(points) and "refused" in table(points)


def test_quarter_turns_are_the_benchmark_s_own_views_of_square_images() -> None:
    image = np.random.default_rng(1).integers(0, 255, (30, 30, 3), dtype=np.uint8)
    assert np.array_equal(bench_view(image, "rot-90"), np.rot90(image, -1))  # clockwise
    assert np.array_equal(bench_view(image, "rot-180"), image[::-1, ::-1])
    assert np.array_equal(bench_view(bench_view(image, "rot-90"), "rot-270"), image)
    assert np.array_equal(bench_view(image, "flip-h"), image[:, ::-1])
    assert parse_views("rotations, flips") == ("flips", "rotations")
    assert bench_view_names(("flips", "rotations"))[-3:] == ("rot-90", "rot-180", "rot-270")
    with pytest.raises(ModelError, match="square images, got 40x30"):
        bench_view(np.zeros((30, 40, 3), np.uint8), "rot-90")
    with pytest.raises(ModelError, match="--augment-views: unknown"):
        parse_views("flips,zoom")
    with pytest.raises(ModelError, match="unknown 'rotations'"):  # not a fit option
        AnomalyFitParams(augment=("rotations",)).check()
