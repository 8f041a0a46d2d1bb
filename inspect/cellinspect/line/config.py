"""What the simulated cell runs: part count and rate, conveyor geometry, injected faults.

Its own module so that the cell (`line/cell.py`) and its audit (`line/audit.py`) both read it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cellinspect.datagen.drift import Drift
from cellinspect.entities import Verdict
from cellinspect.plc.conveyor import ConveyorConfig
from cellinspect.plc.sim_plc import LinkFault


@dataclass(frozen=True, slots=True)
class LineConfig:
    """The simulated cell: how many parts, how fast, and which faults to inject."""

    parts: int = 100
    rate_per_min: float = 120.0
    seed: int = 0
    defect_rate: float = 0.3
    pitch_mm: float = 150.0
    spacing_jitter: float = 0.3
    gate_travel_s: float = 1.5
    counts_per_mm: float = 10.0
    encoder_offset: int = 0
    scan_ms: float = 10.0
    deadline_ms: float = 500.0
    heartbeat_timeout_s: float | None = 1.0
    fail_safe: Verdict = Verdict.FAIL
    buffer_results: bool = True
    drop_probability: float = 0.0
    drop_parts: tuple[int, ...] = ()
    faults: tuple[LinkFault, ...] = ()
    samples: Path | None = None
    host: str = "127.0.0.1"
    modbus_port: int = 0
    timeout_s: float | None = None
    drift: Drift | None = None  # a slow camera or part fault (`--drift`), docs/health.md
    new_defect: str | None = None  # a defect kind the shipped models never saw (`--new-defect`)
    new_defect_share: float = 0.5  # of the defective parts, seeded

    def __post_init__(self) -> None:
        if self.parts < 1:
            raise ValueError(f"parts must be >= 1, got {self.parts}")
        if self.rate_per_min <= 0:
            raise ValueError(f"rate_per_min must be > 0, got {self.rate_per_min}")
        if self.gate_travel_s * 1000.0 <= self.deadline_ms:
            raise ValueError(
                f"deadline_ms ({self.deadline_ms}) must be shorter than the eye-to-gate travel "
                f"({self.gate_travel_s * 1000:.0f} ms), or no result could arrive in time"
            )

    @property
    def speed_mm_s(self) -> float:
        """Belt speed that brings one part per pitch at the asked rate."""
        return self.rate_per_min * self.pitch_mm / 60.0

    def conveyor(self) -> ConveyorConfig:
        return ConveyorConfig(
            speed_mm_s=self.speed_mm_s,
            counts_per_mm=self.counts_per_mm,
            gate_mm=self.speed_mm_s * self.gate_travel_s,
            encoder_offset=self.encoder_offset,
        )

    @property
    def expected_duration_s(self) -> float:
        return self.parts * 60.0 / self.rate_per_min + self.gate_travel_s + 1.0
