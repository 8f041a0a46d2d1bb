"""fit_gaussian's held-out parts, split once or cross-fitted: numpy against numpy, no backbone."""

from __future__ import annotations

import numpy as np
import pytest

from cellinspect.errors import ModelError
from cellinspect.inference.gaussian import fit_position_gaussians, mahalanobis, top_k_mean
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import no_stage
from cellinspect.training.fit_gaussian import cross_fit_folds, cross_fit_maps, fit_gaussian


def _patches(n: int, seed: int = 0) -> np.ndarray:
    """(n, 9 positions, 6 dims) good-part features with a different spread per channel."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 9, 6)) * np.linspace(0.5, 2.0, 6)).astype(np.float32)


def test_leave_one_out_maps_are_each_part_against_all_the_others() -> None:
    x = _patches(24)
    members = np.random.default_rng(1).permutation(24)
    maps = cross_fit_maps(x, members, folds=24, shrinkage=0.1)
    for row, part in enumerate(members):
        others = np.delete(np.arange(24), part)
        mean, whiten = fit_position_gaussians(x[others], 0.1)
        expected = mahalanobis(x[part : part + 1], mean, whiten)[0]
        np.testing.assert_allclose(maps[row], expected, rtol=1e-5)


def test_each_part_is_scored_by_a_model_that_never_saw_it() -> None:
    x = _patches(30)
    x[7] += 6.0  # one odd good part: fitted with itself it would look closer than it is
    members = np.arange(30)
    held_out = cross_fit_maps(x, members, folds=5, shrinkage=0.1)
    mean, whiten = fit_position_gaussians(x, 0.1)
    in_sample = mahalanobis(x, mean, whiten)
    assert held_out[7].mean() > 1.2 * in_sample[7].mean()
    assert held_out.mean() > in_sample.mean()  # unseen parts sit farther out, on average


def test_cross_fit_fits_on_every_part_and_holds_every_part_out() -> None:
    x = _patches(60)
    params = AnomalyFitParams(
        detector="gaussian", projection_dim=None, position_norm=True, top_k=3, cross_fit=True
    )
    fit = fit_gaussian(x, n_hold=12, params=params, stage=no_stage)
    assert sorted(fit.bank_idx) == sorted(fit.hold_idx) == list(range(60))
    assert fit.group_sizes == ((60, 60),)
    group = fit.params.groups[0]
    projected = x @ fit.params.projection
    np.testing.assert_allclose(group.mean, projected.mean(axis=0), rtol=1e-5, atol=1e-6)
    # The z-scores and the scale come from the cross-fitted maps, not from in-sample ones.
    maps = cross_fit_maps(projected, fit.bank_idx, cross_fit_folds(0.2), 0.1)
    assert group.position_mean is not None and group.position_std is not None
    np.testing.assert_allclose(group.position_mean, maps.mean(axis=0), rtol=1e-5)
    z = (maps - group.position_mean) / group.position_std
    assert group.scale == pytest.approx(float(top_k_mean(z, 3).max()), rel=1e-5)
    assert max(fit.holdout_scores) == pytest.approx(1.0)


def test_a_split_fits_without_its_held_out_parts() -> None:
    x = _patches(60)
    params = AnomalyFitParams(detector="gaussian", projection_dim=None, cross_fit=False)
    fit = fit_gaussian(x, n_hold=12, params=params, stage=no_stage)
    assert len(fit.bank_idx) == 48 and len(fit.hold_idx) == 12
    assert not set(fit.bank_idx) & set(fit.hold_idx)
    projected = x @ fit.params.projection
    np.testing.assert_allclose(
        fit.params.groups[0].mean, projected[fit.bank_idx].mean(axis=0), rtol=1e-5, atol=1e-6
    )


def test_folds_follow_the_holdout_fraction() -> None:
    assert cross_fit_folds(0.2) == 5
    assert cross_fit_folds(0.25) == 4
    assert cross_fit_folds(0.6) == 2  # never fewer than two


def test_too_small_a_fold_fit_is_refused_with_the_group_named() -> None:
    params = AnomalyFitParams(detector="gaussian", projection_dim=None, cross_fit=True)
    with pytest.raises(ModelError, match=r"texture group 0 of 1: cross-fitting over 5 folds"):
        fit_gaussian(_patches(24), n_hold=5, params=params, stage=no_stage)  # 19 per fold fit
    with pytest.raises(ModelError, match=r"2\.\.24 folds"):
        cross_fit_maps(_patches(24), np.arange(24), folds=1, shrinkage=0.1)


def test_cross_fitting_defaults_on_for_gaussian_only() -> None:
    assert AnomalyFitParams(detector="gaussian").cross_fitted
    assert not AnomalyFitParams(detector="gaussian", cross_fit=False).cross_fitted
    assert not AnomalyFitParams().cross_fitted  # patchcore
    AnomalyFitParams(cross_fit=False).check()  # saying "off" to patchcore is fine
    with pytest.raises(ModelError, match="cross-fitting is for the gaussian detector"):
        AnomalyFitParams(cross_fit=True).check()
