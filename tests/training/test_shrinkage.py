"""Shrinkage weights estimated from the good parts: they agree with sklearn's closed forms,
fall as parts are added, and a gaussian fit uses them in its final fit and in every fold."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf, oas

from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.errors import ModelError
from cellinspect.inference.gaussian import fit_position_gaussians, mahalanobis
from cellinspect.inference.manifest import load_manifest
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import RoiReader, good_images, no_stage
from cellinspect.training.fit_anomaly import fit_anomaly
from cellinspect.training.fit_gaussian import cross_fit_maps, fit_gaussian
from cellinspect.training.shrinkage import estimate_shrinkage
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


def _patches(n: int, seed: int = 0, positions: int = 5, dim: int = 24) -> np.ndarray:
    """(n, positions, dim) features with correlated channels, a different mix per position."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(positions, dim, dim))
    x = np.einsum("npd,pde->npe", rng.normal(size=(n, positions, dim)), mix)
    return x.astype(np.float32)


@pytest.mark.parametrize(("rule", "reference"), [("oas", oas), ("ledoit-wolf", ledoit_wolf)])
def test_weights_are_sklearns_closed_forms_averaged_over_positions(
    rule: str, reference: Callable[[np.ndarray], tuple[np.ndarray, float]]
) -> None:
    for n in (15, 200):  # fewer parts than dimensions (the Gram path) and more
        x = _patches(n)
        expected = np.mean([reference(x[:, p].astype(np.float64))[1] for p in range(5)])
        assert estimate_shrinkage(x, rule, chunk=2) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("rule", ["oas", "ledoit-wolf"])
def test_fewer_parts_get_a_stronger_weight(rule: str) -> None:
    x = _patches(1000, seed=3)
    weights = [estimate_shrinkage(x[:n], rule) for n in (25, 50, 200, 1000)]
    assert all(a > b for a, b in itertools.pairwise(weights)), weights
    assert weights[0] > 0.3 and weights[-1] < 0.05  # strong for 25 parts, weak for 1,000


def test_unknown_rule_and_patchcore_are_refused() -> None:
    with pytest.raises(ModelError, match="shrinkage rule"):
        estimate_shrinkage(_patches(10), "fixed")
    with pytest.raises(ModelError, match="shrinkage rule"):
        AnomalyFitParams(detector="gaussian", shrinkage_rule="median").check()
    with pytest.raises(ModelError, match="gaussian detector"):
        AnomalyFitParams(shrinkage_rule="oas").check()


def test_gaussian_fit_uses_the_estimated_weight_in_the_fit_and_each_fold() -> None:
    x = _patches(60, seed=5)
    params = AnomalyFitParams(
        detector="gaussian", projection_dim=None, position_norm=True, shrinkage_rule="oas"
    )
    fit = fit_gaussian(x, n_hold=12, params=params, stage=no_stage)
    weight = estimate_shrinkage(x, "oas")
    assert fit.shrinkage == pytest.approx((weight,)) and weight != params.shrinkage
    _mean, whiten = fit_position_gaussians(x, weight)
    np.testing.assert_allclose(fit.params.groups[0].whiten, whiten, rtol=1e-4, atol=1e-6)
    # each fold's weight comes from that fold's own parts, not from all 60
    members = fit.bank_idx
    maps = cross_fit_maps(x, members, 5, params.shrinkage, rule="oas")
    fold_of = np.arange(60) % 5
    rest = x[members[fold_of != 0]]
    m0, w0 = fit_position_gaussians(rest, estimate_shrinkage(rest, "oas"))
    np.testing.assert_allclose(maps[fold_of == 0], mahalanobis(x[members[fold_of == 0]], m0, w0))
    fixed = fit_gaussian(x, 12, AnomalyFitParams(detector="gaussian"), no_stage)
    assert fixed.shrinkage == (params.shrinkage,)


def test_fit_anomaly_records_the_estimated_weight_and_a_fixed_one_as_before(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for spec in plan_parts(30, 5, 0.0):
        cv2.imwrite(str(good / f"p{spec.index:03d}.png"), render_part(spec))
    base = AnomalyFitParams(detector="gaussian", projection_dim=8, batch_size=8)
    for rule in ("oas", "fixed"):
        params = replace(base, shrinkage_rule=rule)
        report = fit_anomaly(
            good_images(good), RoiReader(None), BACKBONE, tmp_path / rule / "1", "m", "1", params
        )
        recorded = load_manifest(report.model_path).provenance["parameters"]
        if rule == "fixed":
            assert recorded["shrinkage"] == 0.1 and "shrinkage_rule" not in recorded
        else:
            assert recorded["shrinkage_rule"] == "oas"
            (weight,) = recorded["shrinkage"]
            assert 0.0 < weight < 1.0 and weight != 0.1
