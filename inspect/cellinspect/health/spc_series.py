"""Series for SPC from stored results: measured dimensions per part, rejects per subgroup.

Measurements are the `measure:<feature>` scores the Measurer puts on the result (see
runtime/measuring.py); the part's position on the belt is not a dimension and is left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cellinspect.calibration.measure_config import MeasurementSpec, Tolerance
from cellinspect.entities import InspectionResult, Verdict

MEASURE_PREFIX = "measure:"
NOT_DIMENSIONS = frozenset({"centre_x_mm", "centre_y_mm"})
_HOLE = re.compile(r"hole\d+_diameter_mm")


@dataclass(frozen=True)
class Sample:
    """One measured value of one part, in capture order."""

    result_id: str
    captured: datetime
    value: float


def measurements_of(result: InspectionResult) -> dict[str, float]:
    """The dimensions measured on a part (empty when the recipe measures nothing)."""
    out: dict[str, float] = {}
    for roi in result.rois:
        for key, value in roi.scores.items():
            if key.startswith(MEASURE_PREFIX):
                name = key[len(MEASURE_PREFIX) :]
                if name not in NOT_DIMENSIONS:
                    out[name] = float(value)
    return out


def measurement_series(results: Iterable[InspectionResult]) -> dict[str, list[Sample]]:
    """Every measurement's samples, oldest first (results may come in any order)."""
    ordered = sorted(results, key=lambda r: (r.captured_wall, r.result_id))
    series: dict[str, list[Sample]] = {}
    for r in ordered:
        for name, value in measurements_of(r).items():
            series.setdefault(name, []).append(Sample(r.result_id, r.captured_wall, value))
    return dict(sorted(series.items()))


def tolerance_for(spec: MeasurementSpec | None, name: str) -> Tolerance | None:
    """The drawing's tolerance of a measurement; every hole shares hole_diameter_mm's."""
    if spec is None:
        return None
    field = "hole_diameter_mm" if _HOLE.fullmatch(name) else name
    tol = getattr(spec, field, None)
    return tol if isinstance(tol, Tolerance) else None


@dataclass(frozen=True)
class Subgroup:
    """A run of consecutive parts and how many of them were rejected (FAIL)."""

    start: datetime
    end: datetime
    size: int
    rejected: int


def _group(ordered: Sequence[InspectionResult]) -> Subgroup:
    fails = sum(r.verdict is Verdict.FAIL for r in ordered)
    return Subgroup(ordered[0].captured_wall, ordered[-1].captured_wall, len(ordered), fails)


def subgroups(
    results: Iterable[InspectionResult], size: int | None = None, bucket_s: int | None = None
) -> list[Subgroup]:
    """Consecutive groups of `size` parts (a short tail is dropped) or time buckets."""
    ordered = sorted(results, key=lambda r: (r.captured_wall, r.result_id))
    if bucket_s is not None:
        buckets: dict[int, list[InspectionResult]] = {}
        for r in ordered:
            buckets.setdefault(int(r.captured_wall.timestamp()) // bucket_s, []).append(r)
        return [_group(b) for _, b in sorted(buckets.items())]
    if size is None or size < 1:
        raise ValueError("give a subgroup size >= 1 or a bucket length")
    full = len(ordered) - len(ordered) % size
    return [_group(ordered[i : i + size]) for i in range(0, full, size)]
