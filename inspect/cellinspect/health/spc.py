"""Statistical process control: I-MR and p-charts, Western Electric rules, Cp/Cpk (numpy only).

Pure functions over ordered samples, so the API, the dashboard and tests share one definition
of "out of control". Rules run on z-scores (distance from the centre line in sigmas), which
lets a p-chart with subgroups of different sizes use the same rules as an individuals chart.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

# Constants for moving ranges of two consecutive points (Montgomery, Appendix VI).
D2 = 1.128  # E[MR] = d2 * sigma
D4 = 3.267  # upper control limit of the moving-range chart, times MR-bar


class Rule(enum.StrEnum):
    """A run rule; the value is the short code shown on charts and in the API."""

    BEYOND_3SIGMA = "WE1"  # one point beyond 3 sigma
    TWO_OF_THREE_2SIGMA = "WE2"  # 2 of 3 beyond 2 sigma, same side
    FOUR_OF_FIVE_1SIGMA = "WE3"  # 4 of 5 beyond 1 sigma, same side
    EIGHT_ONE_SIDE = "WE4"  # 8 in a row on one side of the centre line
    TREND_SIX = "TREND6"  # 6 in a row steadily increasing or decreasing (Nelson 3)


RULE_TEXT = {
    Rule.BEYOND_3SIGMA: "a point beyond 3 sigma",
    Rule.TWO_OF_THREE_2SIGMA: "2 of 3 points beyond 2 sigma on one side",
    Rule.FOUR_OF_FIVE_1SIGMA: "4 of 5 points beyond 1 sigma on one side",
    Rule.EIGHT_ONE_SIDE: "8 points in a row on one side of the centre line",
    Rule.TREND_SIX: "6 points in a row increasing or decreasing",
}


def _window_flags(hit: npt.NDArray[np.bool_], need: int, window: int) -> npt.NDArray[np.bool_]:
    """Flag point i when at least `need` of the `window` points ending at i hit (i included)."""
    out = np.zeros(hit.shape, dtype=bool)
    for i in range(window - 1, hit.size):
        if hit[i] and int(hit[i - window + 1 : i + 1].sum()) >= need:
            out[i] = True
    return out


def _trend_flags(values: F64, length: int = 6) -> npt.NDArray[np.bool_]:
    """Flag the last point of every run of `length` points each above (or below) the one before."""
    out = np.zeros(values.shape, dtype=bool)
    steps = np.sign(np.diff(values))
    run, direction = 1, 0.0
    for i, s in enumerate(steps, start=1):
        run = run + 1 if s != 0 and s == direction else (2 if s != 0 else 1)
        direction = s
        if run >= length:
            out[i] = True
    return out


def run_rules(
    z: Sequence[float] | F64, values: Sequence[float] | F64 | None = None
) -> list[tuple[Rule, ...]]:
    """The rules each point breaks, given its z-score (and raw values for the trend rule).

    A point is flagged where a pattern completes, so a shift of 8 flags its 8th point onwards.
    """
    zs = np.asarray(z, dtype=np.float64)
    raw = zs if values is None else np.asarray(values, dtype=np.float64)
    flags: dict[Rule, npt.NDArray[np.bool_]] = {Rule.BEYOND_3SIGMA: np.abs(zs) > 3.0}
    for rule, level, need, window in (
        (Rule.TWO_OF_THREE_2SIGMA, 2.0, 2, 3),
        (Rule.FOUR_OF_FIVE_1SIGMA, 1.0, 4, 5),
        (Rule.EIGHT_ONE_SIDE, 0.0, 8, 8),
    ):
        flags[rule] = _window_flags(zs > level, need, window) | _window_flags(
            zs < -level, need, window
        )
    flags[Rule.TREND_SIX] = _trend_flags(raw)
    return [tuple(r for r in Rule if flags[r][i]) for i in range(zs.size)]


@dataclass(frozen=True)
class Capability:
    """Cp/Cpk from the within (moving-range) sigma; Pp/Ppk from the overall sample sigma."""

    lsl: float
    usl: float
    cp: float | None
    cpk: float | None
    pp: float | None
    ppk: float | None


def _index(width: float, to_edge: float, sigma: float) -> tuple[float | None, float | None]:
    if sigma <= 0 or not np.isfinite(sigma):
        return None, None
    return width / (6 * sigma), to_edge / (3 * sigma)


def capability(values: Sequence[float] | F64, lsl: float, usl: float) -> Capability:
    """How well the process fits its tolerance: Cp = (USL-LSL)/6s, Cpk = min(USL-m, m-LSL)/3s.

    s is MR-bar / d2 for Cp/Cpk (short-term spread) and the sample std (n-1) for Pp/Ppk.
    """
    if usl <= lsl:
        raise ValueError(f"usl ({usl}) must be above lsl ({lsl})")
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return Capability(lsl, usl, None, None, None, None)
    mean = float(x.mean())
    to_edge = min(usl - mean, mean - lsl)
    cp, cpk = _index(usl - lsl, to_edge, float(np.abs(np.diff(x)).mean()) / D2)
    pp, ppk = _index(usl - lsl, to_edge, float(x.std(ddof=1)))
    return Capability(lsl, usl, cp, cpk, pp, ppk)


@dataclass(frozen=True)
class IMRChart:
    """An individuals chart and its moving-range chart, with the rules each point breaks."""

    values: tuple[float, ...]
    centre: float
    sigma: float  # MR-bar / d2
    ucl: float
    lcl: float
    moving_ranges: tuple[float, ...]  # one fewer than values
    mr_centre: float
    mr_ucl: float
    flags: tuple[tuple[Rule, ...], ...]  # one per value
    mr_flags: tuple[bool, ...]  # moving range above its UCL
    baseline: int  # the leading values the limits come from (all of them: phase I)


def _baseline_of(size: int, baseline: int | None, least: int, what: str) -> int:
    """How many leading points set the limits: all (phase I) or the first `baseline` (phase
    II: later points are judged against limits they did not move)."""
    if baseline is None:
        return size
    if not least <= baseline <= size:
        raise ValueError(f"baseline must be {least}..{size} {what}, got {baseline}")
    return baseline


def imr_chart(values: Sequence[float] | F64, baseline: int | None = None) -> IMRChart:
    """I-MR limits from the data themselves (phase I), or from the first `baseline` values
    with every value judged against them (phase II); needs at least two values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError(f"an I-MR chart needs at least 2 values, got {x.size}")
    mr = np.abs(np.diff(x))
    base = _baseline_of(x.size, baseline, 2, "values")
    mr_bar = float(mr[: base - 1].mean())
    centre = float(x[:base].mean())
    sigma = mr_bar / D2
    z = (x - centre) / sigma if sigma > 0 else np.zeros_like(x)
    return IMRChart(
        values=tuple(float(v) for v in x),
        centre=centre,
        sigma=sigma,
        ucl=centre + 3 * sigma,
        lcl=centre - 3 * sigma,
        moving_ranges=tuple(float(v) for v in mr),
        mr_centre=mr_bar,
        mr_ucl=D4 * mr_bar,
        flags=tuple(run_rules(z, x)),
        mr_flags=tuple(bool(v > D4 * mr_bar) for v in mr) if mr_bar > 0 else (False,) * mr.size,
        baseline=base,
    )


@dataclass(frozen=True)
class PChart:
    """Fraction rejected per subgroup with limits that follow each subgroup's size."""

    rejected: tuple[int, ...]
    sizes: tuple[int, ...]
    p: tuple[float, ...]
    centre: float  # p-bar over all subgroups
    ucl: tuple[float, ...]
    lcl: tuple[float, ...]
    flags: tuple[tuple[Rule, ...], ...]
    baseline: int  # the leading subgroups p-bar comes from (all of them: phase I)


def p_chart(rejected: Sequence[int], sizes: Sequence[int], baseline: int | None = None) -> PChart:
    """p-chart: p-bar +- 3 sqrt(p-bar (1 - p-bar) / n_i), rules on each subgroup's z-score;
    p-bar from all subgroups (phase I) or from the first `baseline` (phase II)."""
    d = np.asarray(rejected, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    if d.shape != n.shape or d.size == 0:
        raise ValueError("rejected and sizes must be equally long and not empty")
    if np.any(n <= 0) or np.any(d < 0) or np.any(d > n):
        raise ValueError("every subgroup needs a size > 0 and 0 <= rejected <= size")
    base = _baseline_of(d.size, baseline, 1, "subgroups")
    pbar = float(d[:base].sum() / n[:base].sum())
    p = d / n
    sigma = np.sqrt(pbar * (1 - pbar) / n)
    z = np.divide(p - pbar, sigma, out=np.zeros_like(p), where=sigma > 0)
    return PChart(
        rejected=tuple(int(v) for v in d),
        sizes=tuple(int(v) for v in n),
        p=tuple(float(v) for v in p),
        centre=pbar,
        ucl=tuple(float(v) for v in np.minimum(1.0, pbar + 3 * sigma)),
        lcl=tuple(float(v) for v in np.maximum(0.0, pbar - 3 * sigma)),
        flags=tuple(run_rules(z, p)),
        baseline=base,
    )
