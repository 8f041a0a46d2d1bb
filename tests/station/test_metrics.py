"""Station metrics in-process: a real station judges real parts, GET /metrics is read over HTTP.

The figures a scrape shows are compared with what the station itself counted
(`runtime.counts`, the PLC interface's records) and with what its store holds, so a metric
that counted a part twice, missed one or labelled it wrongly fails here.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.health.monitor import HealthAlarm
from cellinspect.runtime.inspector import Inspector
from cellinspect.station.config import load_station
from cellinspect.station.metrics import REASON_KINDS, STAGES, _Bounded
from cellinspect.station.runtime import StationRuntime
from tests.conftest import ROOT
from tests.station.runner import stored_results, write_station

PARTS = (
    "part_0000_stain.bmp",
    "part_0001_good.bmp",
    "part_0002_scratch.bmp",
    "part_0003_good.bmp",
    "part_0024_missing_hole.bmp",
    "part_0026_good.bmp",
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of GET /metrics, keyed by (name, sorted labels)."""
    reply = httpx.get(f"{url}/metrics", timeout=30.0)
    reply.raise_for_status()
    out: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def values(samples: Samples, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(labels), value)
        for (n, labels), value in samples.items()
        if n == name and all(dict(labels).get(k) == v for k, v in match.items())
    ]


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for _, v in values(samples, name, **match))


def _wait_stored(data_dir: Path, n: int) -> None:
    end = time.monotonic() + 120.0
    while len(stored_results(data_dir)) < n:
        assert time.monotonic() < end, "results did not reach the store"
        time.sleep(0.1)


def _station(tmp_path: Path, **fields: Any) -> Path:
    folder = tmp_path / "parts"
    folder.mkdir()
    for name in PARTS:
        shutil.copy(ROOT / "sample_images" / name, folder / name)
    data: dict[str, Any] = {
        "source": {"type": "folder", "path": str(folder), "pattern": "*.bmp"},
        "modbus": {"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": None},
        "api": {"enabled": True, "host": "127.0.0.1", "port": 0},
    }
    return write_station(tmp_path / "station.yaml", **{**data, **fields})


def test_a_scrape_counts_what_the_station_judged_and_stored(tmp_path: Path) -> None:
    opcua = {"enabled": True, "port": 0, "security_policies": ["none"], "allow_anonymous": True}
    path = _station(tmp_path, opcua=opcua)
    runtime = StationRuntime(load_station(path), exit_when_source_ends=True)
    seen: list[InspectedFrame] = []
    runtime.extra_on_result = seen.append
    with runtime:
        assert runtime.wait(300), "the folder source should end"
        assert runtime.interface.wait_idle(120)
        _wait_stored(tmp_path / "data", len(PARTS))
        assert runtime.api is not None
        samples = scrape(runtime.api.url)
        records = list(runtime.interface.records)
        inspector = runtime.interface.inspector
        assert isinstance(inspector, Inspector)
        live = {r.ref.name: r.ref for r in inspector.runners}

    counts = runtime.counts
    assert counts.parts == len(PARTS)
    name = "cellinspect_station_verdicts_total"
    for verdict in Verdict:
        assert total(samples, name, verdict=verdict.value) == counts.verdicts[verdict], verdict
    stored = Counter(s.result.verdict.value for s in stored_results(tmp_path / "data"))
    assert {v: total(samples, name, verdict=v) for v in stored} == dict(stored)
    by_class = Counter((r.result.verdict.value, r.result.defect_class or "none") for r in seen)
    for (verdict_value, defect), n in by_class.items():
        assert total(samples, name, verdict=verdict_value, defect_class=defect) == n
    assert {labels["reason"] for labels, _ in values(samples, name)} <= set(REASON_KINDS)
    assert total(samples, name, reason="none") == sum(r.result.error is None for r in seen)

    # Posted parts and their latency: one observation per PLC record.
    assert total(samples, "cellinspect_station_posted_total") == len(records)
    assert samples[("cellinspect_station_part_latency_seconds_count", ())] == len(records)
    latency_sum = samples[("cellinspect_station_part_latency_seconds_sum", ())]
    assert latency_sum == pytest.approx(sum(r.latency_ms for r in records) / 1000.0)
    late = sum(r.late for r in records)
    assert samples[("cellinspect_station_deadline_misses_total", ())] == late

    # Stage timings: one observation per judged part and stage it went through.
    for stage in STAGES:
        n = sum(stage in r.result.timings_ms for r in seen)
        got = values(samples, "cellinspect_station_stage_duration_seconds_count", stage=stage)
        assert (got[0][1] if got else 0) == n, stage
    assert all(
        labels["stage"] in STAGES
        for labels, _ in values(samples, "cellinspect_station_stage_duration_seconds_count")
    )

    # Model scores per model version, and the live models as an info gauge.
    for model, ref in live.items():
        n = sum(
            1 for r in seen for roi in r.result.rois for k in roi.scores if k.split(":")[0] == model
        )
        got = values(samples, "cellinspect_station_model_score_count", model=model)
        assert sum(v for _, v in got) == n > 0, model
        assert {(lab["version"], lab["sha"]) for lab, _ in got} == {(ref.version, ref.sha256[:12])}
        info = values(samples, "cellinspect_station_model_info", model=model)
        assert info == [
            (
                {
                    "recipe": inspector.recipe_name,
                    "model": model,
                    "version": ref.version,
                    "sha": ref.sha256[:12],
                },
                1.0,
            )
        ]

    # Link states at the scrape: exactly one state of each link is 1.
    states = values(samples, "cellinspect_station_link_state")
    links = {labels["link"] for labels, _ in states}
    assert {"modbus", "plc", "camera", "journal", "api", "opcua", "opcua_machine"} <= links
    for link in links:
        assert sum(v for labels, v in states if labels["link"] == link) == 1.0, link
    state = "cellinspect_station_link_state"
    assert samples[(state, (("link", "modbus"), ("state", "listening")))] == 1.0
    assert samples[(state, (("link", "journal"), ("state", "ok")))] == 1.0
    assert samples[(state, (("link", "opcua"), ("state", "listening")))] == 1.0
    assert samples[("cellinspect_station_journal_pending", ())] == 0.0
    assert samples[("cellinspect_station_store_lag_seconds", ())] == 0.0
    assert samples[("cellinspect_station_missed_triggers_total", ())] == 0.0
    assert samples[("cellinspect_station_dispatch_queue_depth", ())] == 0.0
    assert ("cellinspect_writer_queue_depth", ()) in samples  # the API's own metrics stay
    # An unsupervised PLC link (no heartbeat timeout, no client) has no heartbeat age.
    assert not values(samples, "cellinspect_station_plc_heartbeat_age_seconds")


def _alarm(name: str, level: str) -> HealthAlarm:
    return HealthAlarm(name, level, 1.0, 0.5, 1.0, 0.2, 0.5, None, 3, None, "")


def test_health_alarms_and_stalled_store_show_on_a_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Health check levels and store lag are read at scrape time."""
    path = _station(tmp_path)
    runtime = StationRuntime(load_station(path), exit_when_source_ends=True)
    with runtime:
        alarms = [_alarm("brightness", "warn"), _alarm("score_drift", "alarm")]
        monkeypatch.setattr(runtime.health, "alarms", lambda: alarms)
        assert runtime.wait(300)
        assert runtime.interface.wait_idle(120)
        _wait_stored(tmp_path / "data", len(PARTS))
        assert runtime.api is not None and runtime.journal is not None
        # A result the store has not committed yet: journaled, handed over, still pending.
        pending = runtime.interface.fail_safe_result(None, "not inspected: test")
        runtime.journal.append(pending.result)
        runtime.metrics.result(pending)
        samples = scrape(runtime.api.url)
        runtime.journal.committed([pending.result.result_id])
        after = scrape(runtime.api.url)
    health = values(samples, "cellinspect_station_health_level")
    assert sorted((labels["name"], v) for labels, v in health) == [
        ("brightness", 1.0),
        ("score_drift", 2.0),
    ]
    raised = {labels["name"] for labels, v in values(samples, "cellinspect_station_alarm")}
    assert {"HEALTH_WARN brightness", "HEALTH_ALARM score_drift"} <= raised
    assert samples[("cellinspect_station_journal_pending", ())] == 1.0
    assert samples[("cellinspect_station_store_lag_seconds", ())] > 0.0
    assert after[("cellinspect_station_journal_pending", ())] == 0.0
    assert after[("cellinspect_station_store_lag_seconds", ())] == 0.0
    reason = values(samples, "cellinspect_station_verdicts_total", reason="not_inspected")
    assert sum(v for _, v in reason) == 1.0


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_label_values_beyond_the_limit_share_other(limit: int) -> None:
    bounded = _Bounded(limit)
    got = [bounded(v) for v in ("a", "b", "a", "c", "d", "b")]
    kept = list(dict.fromkeys(v for v in ("a", "b", "c", "d")))[:limit]
    assert got == [v if v in kept else "other" for v in ("a", "b", "a", "c", "d", "b")]


class _SlowInspector:
    """The shipped recipe's inspector, made slower than the deadline by a fixed sleep."""

    def __init__(self, inner: Inspector, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    @property
    def recipe_name(self) -> str:
        return self.inner.recipe_name

    @property
    def recipe_sha256(self) -> str:
        return self.inner.recipe_sha256

    def inspect_image(
        self,
        image: Any,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        time.sleep(self.delay_s)
        return self.inner.inspect_image(image, name=name, part_id=part_id, encoder=encoder)

    def close(self) -> None:
        self.inner.close()


def test_late_parts_count_as_deadline_misses_with_their_reason(tmp_path: Path) -> None:
    """An inspector slower than the deadline: every part is a NO RESULT, counted as such."""
    path = _station(
        tmp_path,
        trigger={"mode": "software"},
        store={"enabled": False},
        api={"enabled": False},
    )
    station = load_station(path)
    recipe = station.recipes[1]
    runtime = StationRuntime(
        station,
        inspector_factory=lambda _: _SlowInspector(Inspector.from_recipe(recipe), 0.4),
        interface_overrides={"deadline_ms": 20.0},
    )
    registry = CollectorRegistry()
    runtime.metrics.register(registry)
    parts = 3
    with runtime:
        results = [runtime.trigger(part_id=i + 1) for i in range(parts)]
        assert runtime.interface.wait_idle(120)
        records = list(runtime.interface.records)

    def get(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert all(r.result.error is not None for r in results)
    assert sum(r.late for r in records) == parts
    assert get("cellinspect_station_deadline_misses_total") == parts
    assert get("cellinspect_station_posted_total", code="no_result") == parts
    by_verdict = Counter(r.result.verdict.value for r in results)
    for verdict, n in by_verdict.items():
        got = sum(
            get(
                "cellinspect_station_verdicts_total",
                verdict=verdict,
                defect_class=d,
                reason="deadline",
            )
            for d in {r.result.defect_class or "none" for r in results}
        )
        assert got == n, verdict
    assert (
        get(
            "cellinspect_station_verdicts_total", verdict="pass", defect_class="none", reason="none"
        )
        == 0
    )
    assert runtime.counts.parts == parts
