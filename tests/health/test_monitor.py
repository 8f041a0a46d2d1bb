"""The monitor on rendered flanges: baseline taken and stored, alarms raised with the
statistic that moved, listeners told, a stored baseline reused after a restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cellinspect.datagen.drift import Drift, DriftKind
from cellinspect.datagen.flange import plan_parts, render_part
from cellinspect.entities import ImageU8, InspectedFrame, InspectionResult, RoiDecision, Verdict
from cellinspect.errors import ConfigError
from cellinspect.health.config import HealthConfig
from cellinspect.health.monitor import HealthAlarm, HealthMonitor

# windows of the 20 rendered parts in turn: every window holds each part once
CONFIG = HealthConfig(baseline_parts=20, window=20, score_window=10, trend_parts=50)


@pytest.fixture(scope="module")
def goods() -> list[ImageU8]:
    return [render_part(s) for s in plan_parts(20, 4, 0.0)]


def _frame(image: ImageU8, part_id: int, score: float = 0.93) -> InspectedFrame:
    result = InspectionResult(
        result_id=f"r{part_id}",
        frame_id=part_id,
        source="test",
        verdict=Verdict.PASS,
        reasons=(),
        captured_wall=datetime.now(UTC),
        recipe_name="flange",
        recipe_sha256="0" * 64,
        rois=(RoiDecision("part", Verdict.PASS, (), scores={"m:anomaly": score}),),
        part_id=part_id,
    )
    return InspectedFrame(result, image)


def _run(monitor: HealthMonitor, goods: list[ImageU8], drift: Drift, parts: int) -> None:
    for pid in range(1, parts + 1):
        image = drift.apply(goods[(pid - 1) % len(goods)], pid, "good")
        monitor.observe(_frame(image, pid))


def _by_name(alarms: list[HealthAlarm]) -> dict[str, HealthAlarm]:
    return {a.name: a for a in alarms}


def test_a_dimming_lamp_alarms_brightness_and_is_stored_and_reused(
    tmp_path: Path, goods: list[ImageU8]
) -> None:
    heard: list[list[HealthAlarm]] = []
    monitor = HealthMonitor(CONFIG)
    monitor.add_listener(heard.append)
    monitor.use_recipe("flange-abc", None, tmp_path)
    _run(monitor, goods, Drift(DriftKind.LIGHT, start_part=20, full_part=60), 60)
    alarms = _by_name(monitor.alarms())
    assert alarms["brightness"].level == "alarm"
    assert alarms["brightness"].change < -0.10
    assert alarms["position"].level == "ok"
    falling = alarms["brightness"].prediction
    assert falling is not None and falling.per_part < 0
    assert alarms["brightness"].since_part is not None and alarms["brightness"].since_part > 20
    assert heard and any(a.name == "brightness" and a.level != "ok" for a in heard[-1])
    assert any(line.startswith("HEALTH_ALARM brightness") for line in monitor.alarm_lines())
    stored = json.loads((tmp_path / "baseline-flange-abc.json").read_text())
    assert stored["parts"] == 20 and stored["stats"]["brightness"] > 0

    again = HealthMonitor(CONFIG)
    again.use_recipe("flange-abc", None, tmp_path)
    assert again.baseline is not None
    assert again.baseline.stats == pytest.approx(stored["stats"])


def test_unchanged_parts_stay_ok(goods: list[ImageU8]) -> None:
    monitor = HealthMonitor(CONFIG)
    monitor.use_recipe("r", [0.93] * 20, None)
    _run(monitor, goods, Drift(DriftKind.FOCUS, start_part=10_000, full_part=20_000), 80)
    assert {a.name: a.level for a in monitor.alarms()} == dict.fromkeys(
        [a.name for a in monitor.alarms()], "ok"
    )
    assert monitor.first == {}


def test_a_creeping_score_raises_score_drift(goods: list[ImageU8]) -> None:
    monitor = HealthMonitor(CONFIG)
    monitor.use_recipe("r", [0.90 + 0.002 * i for i in range(30)], None)
    for pid in range(1, 71):
        score = 0.93 if pid <= 30 else 0.93 + 0.004 * (pid - 30)
        monitor.observe(_frame(goods[(pid - 1) % len(goods)], pid, score))
    drift = _by_name(monitor.alarms())["score_drift"]
    assert drift.level == "alarm" and drift.change > 0.35
    assert drift.since_part is not None and drift.since_part > 30


def test_a_damaged_baseline_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "baseline-r.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"baseline-r\.json"):
        HealthMonitor(CONFIG).use_recipe("r", None, tmp_path)


def test_frames_without_an_image_are_not_counted(goods: list[ImageU8]) -> None:
    monitor = HealthMonitor(CONFIG)
    monitor.use_recipe("r", None, None)
    frame = _frame(goods[0], 1)
    monitor.observe(InspectedFrame(frame.result, None))
    assert monitor.parts == 0
    monitor.observe(frame)
    assert monitor.parts == 1
