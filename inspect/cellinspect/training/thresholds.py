"""Thresholds from data with a stated guarantee on the escape rate (defects passed as good).

review_at (the PASS/REVIEW boundary) is chosen on the defective calibration images:

* default, conformal risk control (Angelopoulos et al. 2022, loss = 1 if a defect passes):
  the largest review_at with (n/(n+1)) * escapes(review_at)/n + 1/(n+1) <= target, so that
  E[escape rate on new parts] <= target, the expectation taken over the calibration draw.
  It needs target >= 1/(n+1).
* with `alpha`, a high-probability bound (risk-controlling prediction set, Bates et al. 2021):
  the largest review_at whose exact (Clopper-Pearson) upper 1-alpha bound on the escape rate
  is <= target, so P(escape rate <= target) >= 1 - alpha. It needs n >= log(alpha)/log(1-target).

fail_at (the REVIEW/FAIL boundary) is chosen the same conformal way on the good images, for the
hard-fail rate of good parts (`target_false_fail`, default 1%): a part scoring above nearly
every good part fails outright, anything between goes to a person. Both guarantees assume the
calibration images are exchangeable with future parts (same line, same process), and hold for
the score the decision rules use (see scores.py). Thresholds are rounded in the safe direction
to six decimals (1.102473, never 1.1024729999999998), so manifests and recipes read cleanly.

`default_thresholds` is what fitting commands write without being asked: it never refuses
(an unreachable escape target falls back to catching every calibration defect; with no
defects at all, review_at is set on the good parts for a false-reject target) and says in
`warnings` why the figures are rough.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import beta

from cellinspect.errors import ModelError

GRID = 1_000_000  # thresholds lie on a 1e-6 grid: at most six decimals, written as such


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    review_at: float
    fail_at: float
    method: str
    target_escape: float
    alpha: float | None
    target_false_fail: float
    n_defect: int
    n_good: int
    escapes_allowed: int
    escape_rate_calibration: float
    escape_bound: float
    false_reject_rate: float  # good parts not passed (REVIEW or FAIL)
    good_fail_rate: float  # good parts hard-failed
    review_rate: float  # all parts sent to REVIEW
    fail_rate: float  # all parts FAILed
    guarantee: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """As JSON wants it: figures not measured (NaN, no defects) become None."""
        return {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(self).items()
        }


def crc_allowed(n: int, target: float) -> int:
    """Largest k with (n/(n+1))*(k/n) + 1/(n+1) <= target; -1 when unreachable."""
    return min(n - 1, math.floor(target * (n + 1) - 1 + 1e-12))


def binomial_allowed(n: int, target: float, alpha: float) -> int:
    """Largest k whose Clopper-Pearson upper 1-alpha bound on k/n is <= target; -1 if none."""
    best = -1
    for k in range(n):
        if float(beta.ppf(1 - alpha, k + 1, n - k)) > target:
            break
        best = k
    return best


def _grid_at_or_below(x: float) -> float:
    """The largest value on the 1e-6 grid that is <= x, as the double nearest that decimal
    (k / 10**6 prints as 1.102473, where k * 1e-6 would give 1.1024729999999998)."""
    k = math.floor(x * GRID)
    return k / GRID if k / GRID <= x else (k - 1) / GRID


def _grid_above(x: float) -> float:
    """The smallest value on the 1e-6 grid that is > x (a part scoring x stays below it)."""
    k = math.floor(x * GRID) + 1
    return k / GRID if k / GRID > x else (k + 1) / GRID


def _need_message(n: int, target: float, alpha: float | None) -> str:
    if alpha is None:
        need = math.ceil(1 / target - 1)
        return (
            f"target escape {target} is unreachable with {n} defective image(s): conformal risk "
            f"control needs target >= 1/(n+1) = {1 / (n + 1):.4f}, i.e. at least {need} defects"
        )
    need = math.ceil(math.log(alpha) / math.log(1 - target))
    return (
        f"target escape {target} at confidence {1 - alpha} is unreachable with {n} defective "
        f"image(s): at least {need} are needed"
    )


def choose_thresholds(
    scores: npt.NDArray[np.float64],
    is_defect: npt.NDArray[np.bool_],
    target_escape: float,
    alpha: float | None = None,
    target_false_fail: float = 0.01,
    upper: float | None = None,
) -> ThresholdChoice:
    """review_at for the escape target, fail_at for the good hard-fail target (see module doc)."""
    if not 0 < target_escape < 1:
        raise ModelError(f"target escape must lie in (0, 1), got {target_escape}")
    if alpha is not None and not 0 < alpha < 1:
        raise ModelError(f"alpha must lie in (0, 1), got {alpha}")
    bad = np.sort(scores[is_defect])
    good = np.sort(scores[~is_defect])[::-1]
    n, m = int(bad.size), int(good.size)
    if n == 0 or m == 0:
        raise ModelError(
            f"threshold calibration needs good and defective images, got {m} good, {n} defective"
        )
    k = (
        crc_allowed(n, target_escape)
        if alpha is None
        else binomial_allowed(n, target_escape, alpha)
    )
    if k < 0:
        raise ModelError(_need_message(n, target_escape, alpha))
    review_at = _grid_at_or_below(float(bad[k]))
    kg = crc_allowed(m, target_false_fail)
    # fail above the (kg+1)-th highest good score; with too few goods, above the highest one
    fail_at = max(_grid_above(float(good[max(kg, 0)])), review_at)
    if upper is not None:
        fail_at = min(fail_at, upper)
        review_at = min(review_at, fail_at)
    escapes = int((bad < review_at).sum())
    if alpha is None:
        bound = (escapes + 1) / (n + 1)
        method = "conformal risk control"
        guarantee = f"E(escape rate) <= {bound:.4f} (target {target_escape})"
    else:
        bound = float(beta.ppf(1 - alpha, escapes + 1, n - escapes)) if escapes < n else 1.0
        method = "risk-controlling set (Clopper-Pearson)"
        guarantee = f"P(escape rate <= {target_escape}) >= {1 - alpha} (upper bound {bound:.4f})"
    total = n + m
    reviewed = int(((scores >= review_at) & (scores < fail_at)).sum())
    return ThresholdChoice(
        review_at=review_at,
        fail_at=fail_at,
        method=method,
        target_escape=target_escape,
        alpha=alpha,
        target_false_fail=target_false_fail,
        n_defect=n,
        n_good=m,
        escapes_allowed=k,
        escape_rate_calibration=escapes / n,
        escape_bound=bound,
        false_reject_rate=float((good >= review_at).mean()),
        good_fail_rate=float((good >= fail_at).mean()),
        review_rate=reviewed / total,
        fail_rate=float((scores >= fail_at).sum()) / total,
        guarantee=guarantee,
    )


MIN_MEANINGFUL = 20  # fewer calibration images of a kind than this: the rates are rough


def _rough(n_defect: int, n_good: int) -> list[str]:
    """Warnings for calibration sets too small for their rates to mean much."""
    out = []
    if 0 < n_defect < MIN_MEANINGFUL:
        out.append(
            f"the escape rate rests on {n_defect} defective image(s) (fewer than "
            f"{MIN_MEANINGFUL}): it is known only roughly"
        )
    if n_good < MIN_MEANINGFUL:
        out.append(
            f"the false-reject rates rest on {n_good} good image(s) (fewer than "
            f"{MIN_MEANINGFUL}): they are known only roughly"
        )
    return out


def _good_only(
    good_desc: npt.NDArray[np.float64],
    target_false_reject: float,
    target_false_fail: float,
    upper: float | None,
) -> ThresholdChoice:
    """No defects to calibrate on: review_at so that E(false-reject rate) <= target."""
    m = int(good_desc.size)
    warnings = ["no defective calibration images: the escape rate is not measured"]
    kr = crc_allowed(m, target_false_reject)
    if kr < 0:
        warnings.append(
            f"target false-reject {target_false_reject} needs at least "
            f"{math.ceil(1 / target_false_reject - 1)} good calibration images, there are {m}: "
            "review_at lies above all of them"
        )
    review_at = _grid_above(float(good_desc[max(kr, 0)]))
    kg = crc_allowed(m, target_false_fail)
    fail_at = max(_grid_above(float(good_desc[max(kg, 0)])), review_at)
    if upper is not None:
        fail_at = min(fail_at, upper)
        review_at = min(review_at, fail_at)
    flagged = float((good_desc >= review_at).mean())
    failed = float((good_desc >= fail_at).mean())
    return ThresholdChoice(
        review_at=review_at,
        fail_at=fail_at,
        method="conformal, good parts only (false-reject target)",
        target_escape=float("nan"),
        alpha=None,
        target_false_fail=target_false_fail,
        n_defect=0,
        n_good=m,
        escapes_allowed=-1,
        escape_rate_calibration=float("nan"),
        escape_bound=float("nan"),
        false_reject_rate=flagged,
        good_fail_rate=failed,
        review_rate=flagged - failed,
        fail_rate=failed,
        guarantee=f"E(false-reject rate) <= {(max(kr, 0) + 1) / (m + 1):.4f} "
        f"(target {target_false_reject}); escape rate unknown",
        warnings=tuple(warnings + _rough(0, m)),
    )


def default_thresholds(
    scores: npt.NDArray[np.float64],
    is_defect: npt.NDArray[np.bool_],
    target_escape: float,
    target_false_reject: float,
    target_false_fail: float = 0.01,
    upper: float | None = None,
) -> ThresholdChoice:
    """Thresholds a fitting command writes by itself: never refuses, warns instead (module doc)."""
    if not 0 < target_false_reject < 1:
        raise ModelError(f"target false-reject must lie in (0, 1), got {target_false_reject}")
    n, m = int(is_defect.sum()), int((~is_defect).sum())
    if m == 0:
        raise ModelError(f"threshold calibration needs good images, got {m} good, {n} defective")
    if n == 0:
        good_desc = np.sort(scores)[::-1]
        return _good_only(good_desc, target_false_reject, target_false_fail, upper)
    warnings = []
    effective = target_escape
    if crc_allowed(n, target_escape) < 0:
        effective = min(1.0 / (n + 1) + 1e-9, 0.999999)
        warnings.append(
            f"target escape {target_escape} needs at least {math.ceil(1 / target_escape - 1)} "
            f"defective calibration images, there are {n}: review_at catches every one of them "
            f"instead (E(escape rate) <= 1/(n+1) = {1 / (n + 1):.4f})"
        )
    choice = choose_thresholds(scores, is_defect, effective, None, target_false_fail, upper)
    guarantee = choice.guarantee
    if effective != target_escape:
        guarantee = (
            f"E(escape rate) <= {choice.escape_bound:.4f} (target {target_escape} unreachable)"
        )
    return replace(
        choice,
        target_escape=target_escape,
        guarantee=guarantee,
        warnings=tuple(warnings + _rough(n, m)),
    )
