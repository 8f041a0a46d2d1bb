"""The station file's `health:` section: window sizes, warn and alarm levels per statistic.

Its own module (pydantic only) so the station file can embed it without importing the monitor.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cellinspect.health.frame_stats import Stat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Levels(_Strict):
    """Where a statistic's change from its baseline warns and where it alarms."""

    warn: float = Field(gt=0, description="Change (see the statistic's unit) that warns.")
    alarm: float = Field(gt=0, description="Change that alarms; at least `warn`.")

    @model_validator(mode="after")
    def _ordered(self) -> Levels:
        if self.alarm < self.warn:
            raise ValueError(f"alarm ({self.alarm}) must be >= warn ({self.warn})")
        return self


def default_levels() -> dict[Stat, Levels]:
    """Units: relative change (0.2 = 20 %) for focus, brightness, contrast and noise; fraction
    of clipped pixels for clipping; pixels for position; the KS statistic for score_drift;
    robust standard deviations of the reference scores for score_shift."""
    return {
        Stat.FOCUS: Levels(warn=0.10, alarm=0.15),
        Stat.BRIGHTNESS: Levels(warn=0.06, alarm=0.10),
        Stat.CONTRAST: Levels(warn=0.08, alarm=0.12),
        Stat.NOISE: Levels(warn=0.15, alarm=0.25),
        Stat.CLIPPING: Levels(warn=0.02, alarm=0.05),
        Stat.POSITION: Levels(warn=2.5, alarm=3.5),
        Stat.SCORE_DRIFT: Levels(warn=0.25, alarm=0.35),
        Stat.SCORE_SHIFT: Levels(warn=0.5, alarm=0.8),
    }


class HealthConfig(_Strict):
    """Camera health and score drift (docs/health.md)."""

    enabled: bool = Field(default=True, description="Follow camera health and score drift.")
    baseline_parts: int = Field(
        default=40,
        ge=5,
        description="Parts that make the baseline when none is stored for the live recipe "
        "(the first parts after start; stored in data_dir/health/ when the station has a store).",
    )
    window: int = Field(
        default=40,
        ge=5,
        description="Recent parts whose median is compared with the baseline.",
    )
    score_window: int = Field(
        default=40,
        ge=10,
        description="Anomaly scores of recently passed parts tested against the model's "
        "held-out good parts (two-sample Kolmogorov-Smirnov statistic).",
    )
    trend_parts: int = Field(
        default=200,
        ge=10,
        description="Recent parts the trend fit (prediction of the alarm) looks at.",
    )
    clear_fraction: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="Hysteresis: a level clears only once the change is below this fraction "
        "of it, so a statistic near a level does not flap.",
    )
    levels: dict[Stat, Levels] = Field(
        default_factory=default_levels,
        description="Warn and alarm levels per statistic; unnamed statistics keep the defaults.",
    )

    def levels_for(self, stat: Stat) -> Levels:
        return self.levels.get(stat) or default_levels()[stat]
