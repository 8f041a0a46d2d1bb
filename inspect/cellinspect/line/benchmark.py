"""The highest part rate the simulated cell sustains with no late result and no missed trigger.

The rate is stepped up (doubling, then bisecting between the last clean and the first failing
rate) with a fresh run of the cell at each step. The belt pitch stays fixed, so the belt speed
grows with the rate, and the eye-to-gate travel time stays fixed, so every step has the same
deadline: what is measured is the station, its handshake and the PLC scan, not the belt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from cellinspect.line.audit import LineReport
from cellinspect.line.cell import run_cell
from cellinspect.line.config import LineConfig
from cellinspect.plc.sim_camera import PartCatalog
from cellinspect.runtime.protocols import ImageInspector


@dataclass(frozen=True, slots=True)
class RateStep:
    rate_per_min: float
    clean: bool
    late_results: int
    missed_triggers: int
    audit_ok: bool
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    @classmethod
    def of(cls, report: LineReport) -> RateStep:
        return cls(
            report.rate_per_min,
            report.clean,
            report.late_results,
            report.missed_triggers,
            report.audit_ok,
            report.latency_p50_ms,
            report.latency_p99_ms,
        )


@dataclass(frozen=True, slots=True)
class BenchmarkReport:
    steps: tuple[RateStep, ...]
    max_clean_rate_per_min: float | None


def search_rate(
    trial: Callable[[float], RateStep],
    start_per_min: float = 120.0,
    max_per_min: float = 12_000.0,
    bisect_steps: int = 3,
) -> BenchmarkReport:
    """Double the rate until a trial is not clean, then bisect; report every step."""
    steps: list[RateStep] = []

    def clean(rate: float) -> bool:
        step = trial(rate)
        steps.append(step)
        return step.clean

    good: float | None = None
    bad: float | None = None
    rate = start_per_min
    while rate <= max_per_min:
        if clean(rate):
            good = rate
            rate *= 2
        else:
            bad = rate
            break
    if good is not None and bad is not None:
        for _ in range(bisect_steps):
            mid = float(round((good + bad) / 2))
            if clean(mid):
                good = mid
            else:
                bad = mid
    return BenchmarkReport(tuple(steps), good)


def find_max_rate(
    inspector: ImageInspector,
    base: LineConfig,
    start_per_min: float = 120.0,
    max_per_min: float = 12_000.0,
    bisect_steps: int = 3,
    catalog: PartCatalog | None = None,
    on_step: Callable[[RateStep], None] | None = None,
) -> BenchmarkReport:
    """Run the cell at rising rates (fresh run per step) and find the highest clean one."""

    def trial(rate: float) -> RateStep:
        report = run_cell(replace(base, rate_per_min=rate), inspector, catalog=catalog)
        step = RateStep.of(report)
        if on_step is not None:
            on_step(step)
        return step

    return search_rate(trial, start_per_min, max_per_min, bisect_steps)
