"""95 % confidence intervals for the figures an evaluation reports.

A test set of a few hundred images measures accuracy and AUROC only to a point or two: the
interval says how far the figure could move on another set of the same size, so a reader can
tell "over the goal" from "at the goal" (README, elpv table).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy.stats import binomtest, bootstrap, mannwhitneyu

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
# Below this many images of either kind the bootstrap says little; no interval then.
MIN_PER_CLASS = 5

FloatArray = npt.NDArray[np.float64]


def accuracy_interval(correct: int, total: int) -> list[float] | None:
    """Wilson score interval of a proportion; None for an empty set."""
    if total <= 0:
        return None
    ci = binomtest(correct, total).proportion_ci(CONFIDENCE, method="wilson")
    return [float(ci.low), float(ci.high)]


def _auroc(defective: FloatArray, good: FloatArray, axis: int) -> FloatArray:
    """AUROC as the Mann-Whitney U over both counts, vectorised over bootstrap resamples."""
    u = mannwhitneyu(defective, good, axis=axis, method="asymptotic").statistic
    return np.asarray(u / (defective.shape[axis] * good.shape[axis]), dtype=np.float64)


Indices = npt.NDArray[np.intp]


def _stratified_bootstrap(
    labels: npt.NDArray[np.bool_],
    statistic: Callable[[Indices, Indices, int], FloatArray],
    seed: int,
) -> list[float] | None:
    """Percentile bootstrap of image indices, defective and good resampled apart (as pROC
    does), so every resample keeps the set's class counts. Seeded.

    None when either class has fewer than MIN_PER_CLASS images.
    """
    positives = int(labels.sum())
    if min(positives, labels.size - positives) < MIN_PER_CLASS:
        return None

    def on_indices(defective: FloatArray, good: FloatArray, axis: int) -> FloatArray:
        return statistic(defective.astype(np.intp), good.astype(np.intp), axis)

    result = bootstrap(
        (np.flatnonzero(labels), np.flatnonzero(~labels)),
        on_indices,
        vectorized=True,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return [float(ci.low), float(ci.high)]


def auroc_interval(
    labels: npt.NDArray[np.bool_], scores: FloatArray, seed: int = 0
) -> list[float] | None:
    """95 % interval of the AUROC (stratified bootstrap); None with too few of a class."""
    values = np.asarray(scores, dtype=np.float64)
    return _stratified_bootstrap(
        labels, lambda d, g, axis: _auroc(values[d], values[g], axis), seed
    )


def auroc_change_interval(
    labels: npt.NDArray[np.bool_], before: FloatArray, after: FloatArray, seed: int = 0
) -> list[float] | None:
    """AUROC(after) - AUROC(before) on the same images (an INT8 copy against its parent):
    both models are judged on each resample, so what the two share does not widen the
    interval. None with too few of a class."""
    old, new = np.asarray(before, np.float64), np.asarray(after, np.float64)

    def change(d: Indices, g: Indices, axis: int) -> FloatArray:
        return _auroc(new[d], new[g], axis) - _auroc(old[d], old[g], axis)

    return _stratified_bootstrap(labels, change, seed)


def with_interval(value: float | None, interval: list[float] | None) -> str:
    """'0.9245 [0.9031, 0.9425]': a figure and its 95 % interval (just the figure without one)."""
    if value is None:
        return "-"
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"
