"""The line's final report and the per-part audit of gate actions against station verdicts.

The audit joins the two halves of the cell by part id: what the station decided and posted
(its records) and what the PLC received and did at the gate (its part log). A part passes the
audit when the gate's action is exactly what the station's verdict for that very part asks
for: PASS lets it through; FAIL, REVIEW and NO RESULT reject it; no verdict at all (a missed
trigger) rejects it. Anything else is a mismatch, and its cause is named.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cellinspect.line.config import LineConfig
from cellinspect.plc.registers import ResultCode
from cellinspect.plc.sim_plc import PartLog, PlcCounters, SimPlc
from cellinspect.plc.station_interface import StationInterface, StationRecord

if TYPE_CHECKING:
    from cellinspect.line.drift_report import DriftLead
    from cellinspect.station.robot_link import RobotCounters


class Mismatch(enum.StrEnum):
    ESCAPED_VERDICT = "gate passed a part the station rejected"
    LOST_PASS = "gate rejected a part the station passed"
    WRONG_CODE = "PLC received another code than the station posted"
    WRONG_ENCODER = "encoder echo differs from the latched count"
    WRONG_PART_AT_GATE = "another part was nearer the gate"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    part_id: int
    label: str
    station: ResultCode | None
    received: ResultCode | None
    gate_reject: bool
    problem: Mismatch | None
    cause: str = ""


@dataclass(frozen=True, slots=True)
class LineReport:
    """What `cellinspect line` prints at the end, plus the per-part audit."""

    parts: int
    gated: int
    rate_per_min: float
    achieved_per_min: float
    duration_s: float
    passed: int
    rejected: int
    results_pass: int
    results_fail: int
    results_review: int
    no_results: int
    correct_rejects: int
    escapes: int
    false_rejects: int
    late_results: int
    missed_triggers: int
    tracking_errors: int
    fail_safe_rejects: int
    link_errors: int
    reconnects: int
    station_errors: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    inspect_p50_ms: float | None
    inspect_p99_ms: float | None
    deadline_ms: float
    modbus_port: int
    audit: tuple[AuditEntry, ...]
    robot_sent: int | None = None  # pick targets sent (None: no robot on this line)
    robot_acknowledged: int | None = None
    robot_timed_out: int | None = None
    drift: DriftLead | None = None  # with `--drift`: when health alarmed, when errors rose
    # session.run inside those inspections: how far the whole inspection is from the models
    run_p50_ms: float | None = None
    run_p99_ms: float | None = None

    @property
    def mismatches(self) -> list[AuditEntry]:
        return [a for a in self.audit if a.problem is not None]

    @property
    def audit_ok(self) -> bool:
        """Every gate action matched its part's station verdict and no part went astray."""
        return not self.mismatches and self.gated == self.parts

    @property
    def clean(self) -> bool:
        """Audit passed and nothing was decided by timing: no late result, no missed trigger."""
        return self.audit_ok and self.late_results == 0 and self.missed_triggers == 0


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def _arrival_rate(plc: SimPlc) -> float:
    """Parts per minute at the photo-eye, first to last part (lead-in and gate travel aside)."""
    seen = sorted(p.seen_mono for p in plc.logs.values() if p.seen_mono is not None)
    if len(seen) < 2 or seen[-1] <= seen[0]:
        return 0.0
    return (len(seen) - 1) / (seen[-1] - seen[0]) * 60.0


def audit_part(part: PartLog, record: StationRecord | None) -> AuditEntry:
    """One part: does the gate's action follow the station's verdict for that part?"""
    station = record.code if record is not None else None
    expected_reject = station is None or station.rejects or not (record and record.delivered)
    gate_reject = bool(part.gate_reject)
    problem: Mismatch | None = None
    cause = ""
    if part.encoder_mismatch:
        problem = Mismatch.WRONG_ENCODER
    elif record is not None and part.result is not None and part.result is not record.code:
        problem = Mismatch.WRONG_CODE
    elif gate_reject != expected_reject:
        problem = Mismatch.LOST_PASS if gate_reject else Mismatch.ESCAPED_VERDICT
        if part.late_result is not None:
            cause = "result arrived after the gate"
        elif part.result is None:
            cause = "result never read by the PLC"
    if problem is None and part.wrong_part_at_gate:
        problem = Mismatch.WRONG_PART_AT_GATE
        cause = f"tracked part was {part.gate_error_mm:+.1f} mm from the gate"
    return AuditEntry(part.part_id, part.label, station, part.result, gate_reject, problem, cause)


def build_report(
    config: LineConfig,
    plc: SimPlc,
    station: StationInterface,
    duration_s: float,
    port: int,
    robot: RobotCounters | None = None,
) -> LineReport:
    records: dict[int, StationRecord] = {}
    for rec in station.records:
        records.setdefault(rec.part_id, rec)
    audit = tuple(
        audit_part(plc.logs[p.part_id], records.get(p.part_id))
        for p in sorted(plc.parts, key=lambda p: p.part_id)
        if plc.logs[p.part_id].gate_reject is not None
    )
    c: PlcCounters = plc.snapshot()
    latencies = [p.latency_ms for p in plc.logs.values() if p.latency_ms is not None]
    inspect_ms = [r.inspect_ms for r in station.records if r.inspect_ms is not None]
    fail_safe = sum(
        1
        for p in plc.logs.values()
        if p.gate_reject and (p.result is None or p.result is ResultCode.NO_RESULT)
        # rejected without a verdict to act on: missed trigger, NO RESULT, late or lost
    )
    return LineReport(
        parts=config.parts,
        gated=c.gated,
        rate_per_min=config.rate_per_min,
        achieved_per_min=_arrival_rate(plc),
        duration_s=duration_s,
        passed=c.passed,
        rejected=c.rejected,
        results_pass=c.results_pass,
        results_fail=c.results_fail,
        results_review=c.results_review,
        no_results=c.no_results,
        correct_rejects=c.correct_rejects,
        escapes=c.escapes,
        false_rejects=c.false_rejects,
        late_results=c.no_results + c.late_results,
        missed_triggers=c.missed_triggers,
        tracking_errors=c.tracking_errors,
        fail_safe_rejects=fail_safe,
        link_errors=c.link_errors,
        reconnects=c.reconnects,
        station_errors=c.station_errors,
        latency_p50_ms=_percentile(latencies, 50),
        latency_p99_ms=_percentile(latencies, 99),
        inspect_p50_ms=_percentile(inspect_ms, 50),
        inspect_p99_ms=_percentile(inspect_ms, 99),
        deadline_ms=config.deadline_ms,
        modbus_port=port,
        audit=audit,
        robot_sent=None if robot is None else robot.sent,
        robot_acknowledged=None if robot is None else robot.acknowledged,
        robot_timed_out=None if robot is None else robot.timed_out,
    )
