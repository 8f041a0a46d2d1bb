"""Has the anomaly score distribution of passed parts moved away from the model's own?

The two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs):
0 for identical samples, 1 for samples that do not overlap; no scipy needed. The reference
is the held-out good parts' scores the model manifest keeps (`provenance.holdout_scores`),
else the passed parts of the baseline window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Values = Sequence[float] | npt.NDArray[np.float64]
"""A sample: a list of floats or a float array."""


def ks_statistic(sample: Values, reference: Values) -> float:
    """max |F_sample(x) - F_reference(x)| over all x; 0.0 when either sample is empty."""
    a = np.sort(np.asarray(sample, dtype=np.float64))
    b = np.sort(np.asarray(reference, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        return 0.0
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def median_shift(sample: Values, reference: Values) -> float:
    """How far the sample's median sits from the reference's, in robust standard deviations
    of the reference (1.4826 x MAD): a location test far more sensitive to a small creep
    than KS, which looks at the whole shape. 0.0 when either is empty or flat."""
    a = np.asarray(sample, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return 0.0
    centre = float(np.median(b))
    spread = 1.4826 * float(np.median(np.abs(b - centre)))
    return (float(np.median(a)) - centre) / spread if spread > 0 else 0.0


def manifest_reference(provenance: dict[str, Any]) -> list[float] | None:
    """The held-out good scores a fitted anomaly model recorded, or None."""
    scores = provenance.get("holdout_scores")
    if not isinstance(scores, list) or len(scores) < 10:
        return None
    try:
        return [float(s) for s in scores]
    except (TypeError, ValueError):
        return None
