"""Where is a statistic heading: a robust line through its recent values, and when it
reaches its alarm level at that pace.

Theil-Sen (median of the pairwise slopes) shrugs off the odd defective part or a frame
with a hand in it, which an ordinary least-squares line would follow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Values = Sequence[float] | npt.NDArray[np.float64]
"""A sample: a list of floats or a float array."""


def theil_sen(x: Values, y: Values) -> tuple[float, float]:
    """(slope, intercept) of the median-slope line; (0, median y) with fewer than 2 x values."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.size < 2 or np.ptp(xs) == 0:
        return 0.0, float(np.median(ys)) if ys.size else 0.0
    i, j = np.triu_indices(xs.size, k=1)
    dx = xs[j] - xs[i]
    keep = dx != 0
    slope = float(np.median((ys[j] - ys[i])[keep] / dx[keep]))
    return slope, float(np.median(ys - slope * xs))


@dataclass(frozen=True, slots=True)
class Prediction:
    """The trend of a statistic's change and how far away its alarm level is at that pace."""

    per_hour: float
    per_part: float
    hours_to_alarm: float | None  # None: not heading for the alarm level (or already there)
    parts_to_alarm: float | None

    def describe(self, name: str, unit: str) -> str:
        pace = f"{name} {_signed(self.per_hour, unit)}/h ({_signed(self.per_part * 100, unit)}"
        pace += " per 100 parts)"
        if self.parts_to_alarm is None:
            return f"{pace}: not heading for the alarm level"
        when = f"about {_duration(self.hours_to_alarm)}, " if self.hours_to_alarm else ""
        return f"{pace}: alarm level in {when}{self.parts_to_alarm:.0f} parts"


def _signed(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:+.2g} %"
    return f"{value:+.3g} {unit}".rstrip()


def _duration(hours: float | None) -> str:
    if hours is None:
        return "?"
    if hours < 1.0:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h"


def steps_to(level: float, now: float, slope: float) -> float | None:
    """Steps until |change| reaches `level` at `slope`, from `now`; None if not heading there.

    A change on its way back towards the baseline is not heading there, even if at that
    pace it would overshoot to the other side one day.
    """
    if abs(now) >= level or slope == 0 or not math.isfinite(slope):
        return None
    if now != 0 and math.copysign(1.0, slope) != math.copysign(1.0, now):
        return None  # coming back towards the baseline
    target = math.copysign(level, slope)
    steps = (target - now) / slope
    return steps if steps > 0 else None


def predict(times_s: Values, parts: Values, changes: Values, alarm_at: float) -> Prediction | None:
    """Fit change vs time and vs part count; None with fewer than 10 points."""
    if len(changes) < 10:
        return None
    per_s, b_t = theil_sen(times_s, changes)
    per_part, b_p = theil_sen(parts, changes)
    now_p = per_part * parts[-1] + b_p
    now_t = per_s * times_s[-1] + b_t
    parts_left = steps_to(alarm_at, now_p, per_part)
    seconds_left = steps_to(alarm_at, now_t, per_s)
    return Prediction(
        per_hour=per_s * 3600.0,
        per_part=per_part,
        hours_to_alarm=None if seconds_left is None else seconds_left / 3600.0,
        parts_to_alarm=parts_left,
    )
