"""95 % confidence intervals for the figures an evaluation reports.

A test set of a few hundred images measures accuracy and AUROC only to a point or two: the
interval says how far the figure could move on another set of the same size, so a reader can
tell "over the goal" from "at the goal" (README, elpv table).
"""

from __future__ import annotations

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


def auroc_interval(
    labels: npt.NDArray[np.bool_], scores: FloatArray, seed: int = 0
) -> list[float] | None:
    """Stratified percentile bootstrap: defective and good images resampled apart (as
    pROC does), so every resample keeps the set's class counts. Seeded.

    None when either class has fewer than MIN_PER_CLASS images.
    """
    positives = int(labels.sum())
    if min(positives, labels.size - positives) < MIN_PER_CLASS:
        return None
    values = np.asarray(scores, dtype=np.float64)
    result = bootstrap(
        (values[labels], values[~labels]),
        _auroc,
        vectorized=True,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return [float(ci.low), float(ci.high)]


def with_interval(value: float | None, interval: list[float] | None) -> str:
    """'0.9245 [0.9031, 0.9425]': a figure and its 95 % interval (just the figure without one)."""
    if value is None:
        return "-"
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"
