"""95 % intervals: the Wilson interval against its formula, the AUROC bootstrap on known data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from cellinspect.training.intervals import (
    MIN_PER_CLASS,
    accuracy_interval,
    auroc_interval,
    with_interval,
)


def _wilson(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


@pytest.mark.parametrize(("correct", "total"), [(575, 655), (0, 10), (10, 10), (87, 100)])
def test_accuracy_interval_is_wilson(correct: int, total: int) -> None:
    interval = accuracy_interval(correct, total)
    assert interval is not None
    assert interval == pytest.approx(_wilson(correct, total), abs=1e-6)
    assert interval[0] <= correct / total <= interval[1]


def test_accuracy_interval_of_nothing_is_none() -> None:
    assert accuracy_interval(0, 0) is None


def _scores(n_good: int, n_bad: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_good, bool), np.ones(n_bad, bool)]
    scores = np.r_[rng.normal(0, 1, n_good), rng.normal(shift, 1, n_bad)]
    return labels, scores


def test_auroc_interval_holds_the_true_auroc_and_narrows_with_more_images() -> None:
    shift = 2.0
    true_auroc = norm.cdf(shift / math.sqrt(2))  # two unit normals `shift` apart: 0.921
    small = auroc_interval(*_scores(60, 30, shift, seed=1))
    large = auroc_interval(*_scores(900, 450, shift, seed=1))
    assert small is not None and large is not None
    assert small[0] < true_auroc < small[1]
    assert large[0] < true_auroc < large[1]
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])  # ~ 1/sqrt(15) as wide


def test_auroc_interval_is_seeded() -> None:
    labels, scores = _scores(100, 50, 1.0, seed=2)
    assert auroc_interval(labels, scores) == auroc_interval(labels, scores)
    assert auroc_interval(labels, scores, seed=1) != auroc_interval(labels, scores)


def test_no_auroc_interval_with_too_few_of_a_class() -> None:
    labels, scores = _scores(100, MIN_PER_CLASS - 1, 1.0, seed=3)
    assert auroc_interval(labels, scores) is None
    labels, scores = _scores(100, MIN_PER_CLASS, 1.0, seed=3)
    assert auroc_interval(labels, scores) is not None


def test_with_interval_formats_figure_and_interval() -> None:
    assert with_interval(0.92448, [0.90311, 0.94249]) == "0.9245 [0.9031, 0.9425]"
    assert with_interval(0.5, None) == "0.5000"
    assert with_interval(None, None) == "-"


def test_bootstrap_statistic_is_sklearns_auroc_with_ties() -> None:
    """Tied scores (an anomaly model's clipped maps) count half, as in roc_auc_score."""
    from sklearn.metrics import roc_auc_score

    from cellinspect.training.intervals import _auroc

    labels, scores = _scores(200, 80, 1.5, seed=4)
    scores = np.round(scores, 1)  # many ties
    expected = roc_auc_score(labels, scores)
    assert float(_auroc(scores[labels], scores[~labels], axis=-1)) == pytest.approx(expected)
    interval = auroc_interval(labels, scores)
    assert interval is not None and interval[0] < expected < interval[1]


def test_auroc_change_interval_is_paired() -> None:
    """A copy that adds a little noise to its parent's scores: the change is small and its
    interval narrow, far narrower than either model's own interval."""
    from cellinspect.training.intervals import auroc_change_interval

    labels, before = _scores(300, 100, 1.5, seed=5)
    rng = np.random.default_rng(6)
    after = before + rng.normal(0, 0.05, before.size)
    change = auroc_change_interval(labels, before, after)
    own = auroc_interval(labels, before)
    assert change is not None and own is not None
    assert change[0] <= 0.0 <= change[1] or abs(change[0]) < 0.01
    assert change[1] - change[0] < 0.25 * (own[1] - own[0])
    # a copy that loses the signal: the interval lies wholly below zero
    worse = auroc_change_interval(labels, before, rng.normal(0, 1, before.size))
    assert worse is not None and worse[1] < -0.2
    keep = np.r_[0:98, 300:305]  # 98 good, 5 defective: enough
    assert auroc_change_interval(labels[keep], before[keep], after[keep]) is not None
    keep = np.r_[0:98, 300:304]  # 4 defective: too few
    assert auroc_change_interval(labels[keep], before[keep], after[keep]) is None
