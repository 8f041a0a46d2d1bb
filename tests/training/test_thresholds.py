"""Conformal threshold choice: the stated bound holds, unreachable targets are refused."""

from __future__ import annotations

import numpy as np
import pytest

from cellinspect.errors import ModelError
from cellinspect.training.thresholds import binomial_allowed, choose_thresholds, crc_allowed


@pytest.mark.parametrize(
    ("n", "target", "allowed"),
    [(9, 0.1, 0), (99, 0.01, 0), (98, 0.01, -1), (199, 0.05, 9), (10, 0.5, 4), (3, 0.99, 2)],
)
def test_crc_allowed_escapes(n: int, target: float, allowed: int) -> None:
    k = crc_allowed(n, target)
    assert k == allowed
    if k >= 0:
        assert (k + 1) / (n + 1) <= target + 1e-12


def test_binomial_needs_more_defects_than_crc() -> None:
    assert binomial_allowed(298, 0.01, 0.05) == -1
    assert binomial_allowed(299, 0.01, 0.05) == 0
    assert binomial_allowed(1000, 0.05, 0.05) > 30


def _scores(rng: np.random.Generator, n_good: int, n_bad: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([rng.normal(0.0, 1.0, n_good), rng.normal(3.0, 1.0, n_bad)])
    return scores, np.array([False] * n_good + [True] * n_bad)


def test_choice_respects_target_and_orders_thresholds() -> None:
    scores, defect = _scores(np.random.default_rng(0), 400, 199)
    choice = choose_thresholds(scores, defect, target_escape=0.05)
    assert choice.escapes_allowed == 9
    assert (scores[defect] < choice.review_at).sum() <= 9
    assert choice.escape_bound <= 0.05
    assert choice.review_at <= choice.fail_at
    assert (scores[~defect] >= choice.fail_at).mean() <= 0.01
    assert 0 < choice.false_reject_rate < 1
    assert choice.review_rate + choice.fail_rate <= 1


def test_expected_escape_on_fresh_parts_stays_under_target() -> None:
    rng = np.random.default_rng(5)
    fresh_bad = rng.normal(3.0, 1.0, 20000)
    escapes = []
    for _ in range(200):
        scores, defect = _scores(rng, 50, 39)
        choice = choose_thresholds(scores, defect, target_escape=0.1)
        escapes.append(float((fresh_bad < choice.review_at).mean()))
    assert np.mean(escapes) <= 0.1


@pytest.mark.parametrize(
    ("n_bad", "target", "alpha", "message"),
    [
        (5, 0.01, None, "unreachable with 5 defective"),
        (50, 0.01, 0.05, "at least 299 are needed"),
        (0, 0.1, None, "needs good and defective"),
        (5, 0.0, None, "target escape must lie"),
        (5, 0.2, 1.5, "alpha must lie"),
    ],
)
def test_refusals(n_bad: int, target: float, alpha: float | None, message: str) -> None:
    scores, defect = _scores(np.random.default_rng(1), 20, n_bad)
    with pytest.raises(ModelError, match=message):
        choose_thresholds(scores, defect, target, alpha)


def test_classifier_scores_are_capped_at_one() -> None:
    scores = np.array([0.01, 0.02, 0.03, 0.9, 0.95, 0.99, 1.0, 1.0, 1.0, 1.0])
    defect = np.array([False] * 3 + [True] * 7)
    choice = choose_thresholds(scores, defect, 0.5, upper=1.0)
    assert choice.fail_at <= 1.0 and choice.review_at <= choice.fail_at
