"""The simulated conveyor: belt speed, encoder, and parts placed at random spacing.

Positions are in mm along the belt, measured from the camera's photo-eye (negative: not
there yet). The belt moves at a constant speed from the run's start; the encoder counts
`counts_per_mm` per mm from `encoder_offset` and wraps at 2^32 like a PLC's DINT counter, so
tracking code must compare encoder counts modulo 2^32.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from cellinspect.plc.registers import U32_MAX


@dataclass(frozen=True, slots=True)
class ConveyorConfig:
    """Belt geometry and speed; the gate lies `gate_mm` downstream of the photo-eye."""

    speed_mm_s: float = 300.0
    counts_per_mm: float = 10.0
    gate_mm: float = 300.0
    encoder_offset: int = 0

    def __post_init__(self) -> None:
        if self.speed_mm_s <= 0 or self.counts_per_mm <= 0 or self.gate_mm <= 0:
            raise ValueError(
                f"speed_mm_s, counts_per_mm and gate_mm must be > 0, got {self.speed_mm_s}, "
                f"{self.counts_per_mm}, {self.gate_mm}"
            )
        if not 0 <= self.encoder_offset <= U32_MAX:
            raise ValueError(f"encoder_offset must be a u32, got {self.encoder_offset}")

    @property
    def gate_counts(self) -> int:
        return round(self.gate_mm * self.counts_per_mm)

    def travel_mm(self, elapsed_s: float) -> float:
        return self.speed_mm_s * max(0.0, elapsed_s)

    def encoder(self, elapsed_s: float) -> int:
        return self.encoder_at(self.travel_mm(elapsed_s))

    def encoder_at(self, travel_mm: float) -> int:
        """The count after `travel_mm` of belt travel (what a hardware latch captures)."""
        return (self.encoder_offset + int(travel_mm * self.counts_per_mm)) & U32_MAX

    def travel_at(self, count: int) -> float:
        """Belt travel in mm at encoder `count` (inverse of encoder_at, within 2^31 counts)."""
        return encoder_diff(count, self.encoder_offset) / self.counts_per_mm


def encoder_diff(later: int, earlier: int) -> int:
    """Signed counts from `earlier` to `later`, correct across the 2^32 wrap."""
    d = (later - earlier) & U32_MAX
    return d - (1 << 32) if d & 0x8000_0000 else d


@dataclass(frozen=True, slots=True)
class BeltPart:
    """A part on the belt with its ground truth; `start_mm` is its position at time 0."""

    part_id: int
    label: str
    start_mm: float

    @property
    def defective(self) -> bool:
        return self.label != "good"

    def position(self, travel_mm: float) -> float:
        return self.start_mm + travel_mm


def place_parts(
    labels: Sequence[str],
    pitch_mm: float,
    seed: int = 0,
    jitter: float = 0.3,
    min_gap_mm: float = 70.0,
    lead_in_mm: float = 50.0,
    first_id: int = 1,
) -> list[BeltPart]:
    """Parts upstream of the eye at random spacing: pitch x U(1-jitter, 1+jitter), >= min_gap.

    The first part is `lead_in_mm` before the eye; part ids count up from `first_id` in belt
    order, so id order is arrival order (the PLC does not rely on it: it tracks by encoder).
    """
    if pitch_mm < min_gap_mm:
        raise ValueError(f"pitch_mm ({pitch_mm}) is below the minimum gap ({min_gap_mm} mm)")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    rng = random.Random(seed)
    parts: list[BeltPart] = []
    pos = -lead_in_mm
    for i, label in enumerate(labels):
        if i:
            pos -= max(min_gap_mm, pitch_mm * rng.uniform(1.0 - jitter, 1.0 + jitter))
        parts.append(BeltPart(first_id + i, label, pos))
    return parts
