"""Did the health monitor speak before the line's error rate moved, and by how many parts?

The error onset is the first drifted part at which the trailing `ONSET_WINDOW` drifted parts
hold more escapes and false rejects (on the station's verdicts) than the undrifted parts'
rate explains: the binomial tail of that count under the undrifted rate is below
`ONSET_P` (1 %). The lead is that part minus the part that first raised a health alarm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cellinspect.datagen.drift import GOOD, Drift
from cellinspect.health.levels import Level
from cellinspect.health.monitor import HealthMonitor
from cellinspect.plc.registers import ResultCode

if TYPE_CHECKING:
    from cellinspect.line.audit import AuditEntry

_VERDICTS = (ResultCode.PASS, ResultCode.FAIL, ResultCode.REVIEW)
ONSET_WINDOW = 30
ONSET_P = 0.01


@dataclass(frozen=True, slots=True)
class DriftLead:
    """When the drift began, when health warned and alarmed, and when errors rose."""

    kind: str
    start_part: int
    warn_part: int | None
    warn_stat: str | None
    alarm_part: int | None
    alarm_stat: str | None
    onset_part: int | None  # None: the error rate never moved in this run
    onset_errors: int  # errors in ONSET_WINDOW drifted parts that count as the rate moving
    errors_before: int  # escapes + false rejects on the undrifted parts
    parts_before: int

    @property
    def lead_parts(self) -> int | None:
        """Parts from the health alarm to the error onset (None: either did not happen)."""
        if self.alarm_part is None or self.onset_part is None:
            return None
        return self.onset_part - self.alarm_part

    def rows(self) -> list[tuple[str, str]]:
        def at(part: int | None, stat: str | None) -> str:
            return "-" if part is None else f"part {part} ({stat})"

        lead = self.lead_parts
        return [
            ("drift", f"{self.kind} from part {self.start_part}"),
            ("health warn", at(self.warn_part, self.warn_stat)),
            ("health alarm", at(self.alarm_part, self.alarm_stat)),
            (
                "errors before the drift",
                f"{self.errors_before} in {self.parts_before} parts",
            ),
            (
                f"error onset ({self.onset_errors} in {ONSET_WINDOW} drifted parts)",
                "-" if self.onset_part is None else f"part {self.onset_part}",
            ),
            ("alarm lead", "-" if lead is None else f"{lead} parts before the errors rose"),
        ]


def is_error(entry: AuditEntry) -> bool:
    """An escape or a false reject on the station's verdict.

    Parts rejected without a verdict (missed trigger, deadline) are the timing's doing, not
    the drift's, and `cellinspect line` counts them apart (fail-safe rejects).
    """
    if entry.station not in _VERDICTS:
        return False
    return entry.gate_reject if entry.label == GOOD else not entry.gate_reject


def onset_errors(errors_before: int, parts_before: int, window: int = ONSET_WINDOW) -> int:
    """Fewest errors in `window` parts that the undrifted rate explains with odds < ONSET_P.

    The undrifted rate is taken as (errors + 1) / (parts + 2), so a clean start still
    allows for the odd error.
    """
    p = (errors_before + 1) / (parts_before + 2)
    tail = 1.0
    for k in range(window + 1):
        if tail < ONSET_P:
            return k
        tail -= math.comb(window, k) * p**k * (1 - p) ** (window - k)
    return window + 1


def error_onset(audit: Sequence[AuditEntry], start_part: int, errors_needed: int) -> int | None:
    drifted = sorted((e for e in audit if e.part_id > start_part), key=lambda e: e.part_id)
    for i, entry in enumerate(drifted):
        window = drifted[max(0, i - ONSET_WINDOW + 1) : i + 1]
        if sum(is_error(e) for e in window) >= errors_needed:
            return entry.part_id
    return None


def drift_lead(drift: Drift, health: HealthMonitor, audit: Sequence[AuditEntry]) -> DriftLead:
    before = [e for e in audit if e.part_id <= drift.start_part]
    alarm = health.first.get(Level.ALARM)
    warn = health.first.get(Level.WARN)
    errors_before = sum(is_error(e) for e in before)
    needed = onset_errors(errors_before, len(before))
    return DriftLead(
        kind=drift.kind.value,
        start_part=drift.start_part,
        warn_part=warn[0] if warn else None,
        warn_stat=warn[1] if warn else None,
        alarm_part=alarm[0] if alarm else None,
        alarm_stat=alarm[1] if alarm else None,
        onset_part=error_onset(audit, drift.start_part, needed),
        onset_errors=needed,
        errors_before=errors_before,
        parts_before=len(before),
    )
