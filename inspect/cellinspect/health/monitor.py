"""The station's health monitor: every judged frame in, `alarms()` out.

`observe` runs on the job path after the verdict went out (about 0.5 ms a 320x320 frame):
the frame statistics go into a sliding window whose medians are compared with the baseline,
the anomaly scores of passed parts into the score-drift window. Levels move with hysteresis
on every part; the trend fit behind the prediction runs only when `alarms()` is asked.
Listeners (`add_listener`) hear every level change: the PLC register, OPC UA, and later MQTT
(issue 22) hang there.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.health.baseline import Baseline, baseline_path, load_baseline, save_baseline
from cellinspect.health.config import HealthConfig
from cellinspect.health.frame_stats import FRAME_STATS, FrameStats, Stat, frame_stats
from cellinspect.health.levels import Level, next_level
from cellinspect.health.score_drift import ks_statistic, median_shift
from cellinspect.health.trend import Prediction, predict

log = logging.getLogger(__name__)

UNITS: dict[Stat, str] = {
    **dict.fromkeys(FRAME_STATS, "%"),
    Stat.CLIPPING: "",
    Stat.POSITION: "px",
    Stat.SCORE_DRIFT: "",
    Stat.SCORE_SHIFT: "sd",
}


@dataclass(frozen=True, slots=True)
class HealthAlarm:
    """One statistic's state: its value now and at baseline, its change, levels and trend.

    `change` is what the levels apply to (relative for focus, brightness, contrast, noise;
    absolute for clipping; pixels off the baseline position; the KS statistic for score
    drift; the median's shift in reference standard deviations for score shift, where
    `value` is the window's median score and `baseline` the reference's). `since` is when
    the current level was entered (None while ok from the start).
    """

    name: str
    level: str
    value: float
    baseline: float
    change: float
    warn_at: float
    alarm_at: float
    since: datetime | None
    since_part: int | None
    prediction: Prediction | None
    prediction_text: str

    def to_dict(self) -> dict[str, Any]:
        pred = self.prediction
        return {
            "name": self.name,
            "level": self.level,
            "value": _finite(self.value),
            "baseline": _finite(self.baseline),
            "change": _finite(self.change),
            "warn_at": self.warn_at,
            "alarm_at": self.alarm_at,
            "since": self.since.isoformat() if self.since else None,
            "since_part": self.since_part,
            "prediction": None
            if pred is None
            else {
                "per_hour": pred.per_hour,
                "per_part": pred.per_part,
                "hours_to_alarm": pred.hours_to_alarm,
                "parts_to_alarm": pred.parts_to_alarm,
                "text": self.prediction_text,
            },
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def anomaly_score(inspected: InspectedFrame) -> float | None:
    """The highest anomaly score among the result's ROIs (None: no anomaly model)."""
    scores = [
        v for roi in inspected.result.rois for k, v in roi.scores.items() if k.endswith(":anomaly")
    ]
    return max(scores) if scores else None


@dataclass(slots=True)
class _State:
    level: Level = Level.OK
    since: datetime | None = None
    since_part: int | None = None
    value: float = math.nan
    change: float = 0.0


Listener = Callable[[list[HealthAlarm]], None]


class HealthMonitor:
    """Follows one recipe at a time (`use_recipe`); thread-safe."""

    def __init__(
        self,
        config: HealthConfig,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.recipe = ""
        self._path: Path | None = None
        self._manifest_reference: list[float] | None = None
        self.baseline: Baseline | None = None
        self._reset()

    def _reset(self) -> None:
        cfg = self.config
        self.parts = 0
        self._collect: list[FrameStats] = []
        self._collect_scores: list[float] = []
        self._recent: deque[FrameStats] = deque(maxlen=cfg.window)
        self._scores: deque[float] = deque(maxlen=cfg.score_window)
        self._history: dict[Stat, deque[tuple[float, float, float]]] = {
            s: deque(maxlen=cfg.trend_parts) for s in Stat
        }
        self._states = {s: _State() for s in Stat}
        self.first: dict[Level, tuple[int, str]] = {}  # (part, statistic) first at each level

    # ------------------------------------------------------------------ setup

    def add_listener(self, listener: Listener) -> None:
        """Called (outside the lock) with every statistic's state after any level change."""
        self._listeners.append(listener)

    def use_recipe(
        self, key: str, reference_scores: list[float] | None, folder: Path | None
    ) -> None:
        """Follow a newly live recipe: its stored baseline (in `folder`) or a fresh one."""
        with self._lock:
            self.recipe = key
            self._manifest_reference = reference_scores
            self._path = baseline_path(folder, key) if folder is not None else None
            self.baseline = load_baseline(self._path) if self._path is not None else None
            self._reset()
        if self.baseline is not None:
            log.info("health: baseline for %s from %s", key, self._path)

    @property
    def reference_scores(self) -> list[float]:
        if self._manifest_reference:
            return self._manifest_reference
        return self.baseline.passed_scores if self.baseline is not None else []

    # ------------------------------------------------------------------ observe

    def observe(self, inspected: InspectedFrame) -> None:
        """One judged part; frames that could not be read say nothing about the camera."""
        if not self.config.enabled or inspected.image is None:
            return
        stats = frame_stats(inspected.image)
        score = anomaly_score(inspected)
        passed = inspected.result.verdict is Verdict.PASS and score is not None
        changed = False
        with self._lock:
            self.parts += 1
            part = inspected.result.part_id or self.parts
            if self.baseline is None:
                self._collect_baseline(stats, score if passed else None)
                return
            self._recent.append(stats)
            if passed and score is not None:
                self._scores.append(score)
            if len(self._recent) == self._recent.maxlen:
                changed = self._evaluate(part)
        if changed:
            alarms = self.alarms()
            for listener in self._listeners:
                try:
                    listener(alarms)
                except Exception:
                    log.exception("health: a listener failed")

    def _collect_baseline(self, stats: FrameStats, score: float | None) -> None:
        self._collect.append(stats)
        if score is not None:
            self._collect_scores.append(score)
        if len(self._collect) < self.config.baseline_parts:
            return
        self.baseline = Baseline.from_frames(self.recipe, self._collect, self._collect_scores)
        self._collect, self._collect_scores = [], []
        log.info("health: baseline taken on %d parts for %s", self.baseline.parts, self.recipe)
        if self._path is not None:
            try:
                save_baseline(self._path, self.baseline)
            except OSError as err:
                log.error("health: baseline not saved to %s (%s)", self._path, err)

    def _changes(self) -> dict[Stat, tuple[float, float]]:
        """(value now, change from baseline) per statistic, from the windows."""
        assert self.baseline is not None
        base = self.baseline.stats
        out: dict[Stat, tuple[float, float]] = {}
        for stat in FRAME_STATS:
            now = float(np.median([f.value(stat) for f in self._recent]))
            ref = base[stat.value]
            if stat is Stat.CLIPPING:
                out[stat] = (now, now - ref)
            else:
                out[stat] = (now, (now - ref) / ref if ref > 0 else 0.0)
        xs = np.array([f.x for f in self._recent])
        ys = np.array([f.y for f in self._recent])
        if np.isfinite(xs).any() and math.isfinite(base["x"]):
            dx = float(np.nanmedian(xs)) - base["x"]
            dy = float(np.nanmedian(ys)) - base["y"]
            out[Stat.POSITION] = (math.hypot(dx, dy), math.hypot(dx, dy))
        ref_scores = self.reference_scores
        if len(self._scores) == self._scores.maxlen and ref_scores:
            scores = list(self._scores)
            median = float(np.median(scores))
            out[Stat.SCORE_DRIFT] = (median, ks_statistic(scores, ref_scores))
            out[Stat.SCORE_SHIFT] = (median, median_shift(scores, ref_scores))
        return out

    def _evaluate(self, part: int) -> bool:
        now_s = self._clock()
        changed = False
        for stat, (value, change) in self._changes().items():
            state = self._states[stat]
            state.value, state.change = value, change
            self._history[stat].append((now_s, float(self.parts), change))
            level = next_level(
                state.level,
                abs(change),
                self.config.levels_for(stat),
                self.config.clear_fraction,
            )
            if level is not state.level:
                log.log(
                    logging.WARNING if level > state.level else logging.INFO,
                    "health: %s %s -> %s (change %.3g) at part %d",
                    stat.value,
                    state.level.label,
                    level.label,
                    change,
                    part,
                )
                state.level, state.since, state.since_part = level, self._wall(), part
                for passed in range(Level.WARN, level + 1):  # straight to alarm warns too
                    self.first.setdefault(Level(passed), (part, stat.value))
                changed = True
        return changed

    # ------------------------------------------------------------------ report

    def level(self) -> Level:
        """The worst level of any statistic (the Modbus health register)."""
        with self._lock:
            return max(s.level for s in self._states.values())

    def alarms(self) -> list[HealthAlarm]:
        """Every statistic's state, with the trend and when it would reach its alarm level."""
        with self._lock:
            base = dict(self.baseline.stats) if self.baseline is not None else {}
            ref = self.reference_scores
            base["score"] = float(np.median(ref)) if ref else math.nan
            rows = [(s, _State(**_fields(self._states[s])), list(self._history[s])) for s in Stat]
        out: list[HealthAlarm] = []
        for stat, state, history in rows:
            levels = self.config.levels_for(stat)
            pred = None
            if history:
                t, p, c = zip(*history, strict=True)
                pred = predict(t, p, c, levels.alarm)
            unit = UNITS[stat]
            out.append(
                HealthAlarm(
                    name=stat.value,
                    level=state.level.label,
                    value=state.value,
                    baseline=_baseline_value(stat, base),
                    change=state.change,
                    warn_at=levels.warn,
                    alarm_at=levels.alarm,
                    since=state.since,
                    since_part=state.since_part,
                    prediction=pred,
                    prediction_text=pred.describe(stat.value, unit) if pred else "",
                )
            )
        return out

    def alarm_lines(self) -> list[str]:
        """Statistics at warn or alarm, one line each, for the station's alarms list."""
        lines = []
        for a in self.alarms():
            if a.level == Level.OK.label:
                continue
            text = f"HEALTH_{a.level.upper()} {a.name}: change {a.change:+.3g}"
            text += f" (warn {a.warn_at:g}, alarm {a.alarm_at:g}) since part {a.since_part}"
            if a.prediction_text:
                text += f"; {a.prediction_text}"
            lines.append(text)
        return lines

    def status(self) -> dict[str, Any]:
        """GET /station/health: baseline, the worst level and every statistic."""
        with self._lock:
            baseline = self.baseline
            collecting = len(self._collect)
        return {
            "enabled": self.config.enabled,
            "recipe": self.recipe,
            "level": self.level().label,
            "parts": self.parts,
            "baseline": None
            if baseline is None
            else {"parts": baseline.parts, "created": baseline.created, "stats": baseline.stats},
            "baseline_collecting": None
            if baseline is not None
            else {"parts": collecting, "of": self.config.baseline_parts},
            "reference_scores": "manifest" if self._manifest_reference else "baseline",
            "alarms": [a.to_dict() for a in self.alarms()],
        }


def _fields(state: _State) -> dict[str, Any]:
    return {
        "level": state.level,
        "since": state.since,
        "since_part": state.since_part,
        "value": state.value,
        "change": state.change,
    }


def _baseline_value(stat: Stat, base: dict[str, float]) -> float:
    if stat is Stat.POSITION:
        return 0.0 if "x" in base else math.nan  # the change is the distance moved
    if stat in (Stat.SCORE_DRIFT, Stat.SCORE_SHIFT):
        return base["score"]  # the reference's median score; `value` is the window's
    return base.get(stat.value, math.nan)
