"""The station runtime follows camera health: a lamp dimming halfway through a folder of
sample parts raises the brightness alarm in runtime.alarms(), the Modbus health registers,
GET /station/health, and leaves a baseline in data_dir/health for the next start."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from cellinspect.health.frame_stats import Stat
from cellinspect.health.station_link import STAT_BITS
from cellinspect.plc.registers import Reg
from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from tests.conftest import ROOT
from tests.station.runner import write_station

TOKEN = "health-token-5c1e"


def _dimmed_line(folder: Path) -> None:
    """The 40 sample images as they are, then the same 40 at 55 % of the light."""
    folder.mkdir()
    samples = sorted((ROOT / "sample_images").glob("*.bmp"))
    for i, path in enumerate(samples + samples):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None
        if i >= len(samples):
            image = np.asarray(cv2.convertScaleAbs(image, alpha=0.55), dtype=np.uint8)
        cv2.imwrite(str(folder / f"part_{i:03d}.bmp"), image)


def test_a_dimming_lamp_alarms_everywhere_the_station_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLINSPECT_API_TOKEN", TOKEN)
    _dimmed_line(tmp_path / "parts")
    path = write_station(
        tmp_path / "station.yaml",
        source={"type": "folder", "path": str(tmp_path / "parts"), "pattern": "*.bmp"},
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
        health={"baseline_parts": 40, "window": 20, "score_window": 10},
    )
    runtime = StationRuntime(load_station(path), exit_when_source_ends=True)
    with runtime:
        assert runtime.wait(300), "the folder source should end"
        runtime.interface.wait_idle(60)
        alarms = {a.name: a for a in runtime.health.alarms()}
        assert alarms["brightness"].level == "alarm"
        assert alarms["brightness"].change == pytest.approx(-0.45, abs=0.05)
        assert any(a.startswith("HEALTH_ALARM brightness") for a in runtime.alarms())
        level, flags = runtime.image.get(Reg.HEALTH), runtime.image.get(Reg.HEALTH_FLAGS)
        assert level == 2 and flags & STAT_BITS[Stat.BRIGHTNESS]
        assert runtime.api is not None
        r = httpx.get(
            f"{runtime.api.url}/station/health",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["level"] == "alarm" and body["reference_scores"] == "manifest"
        shown = {a["name"]: a for a in body["alarms"]}
        assert shown["brightness"]["level"] == "alarm" and shown["brightness"]["since_part"]
        assert httpx.get(f"{runtime.api.url}/station/health", timeout=30).status_code == 401
    stored = list((tmp_path / "data" / "health").glob("baseline-flange-default-*.json"))
    assert len(stored) == 1
    assert json.loads(stored[0].read_text())["parts"] == 40


def test_recipe_select_follows_the_new_recipe_and_survives_a_damaged_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cellinspect.plc.registers import ErrorCode

    path = write_station(
        tmp_path / "station.yaml",
        recipes={
            1: str(ROOT / "recipes" / "flange.yaml"),
            2: str(ROOT / "recipes" / "flange-measure.yaml"),
        },
        source={"type": "folder", "path": str(ROOT / "sample_images"), "pattern": "*.bmp"},
        trigger={"mode": "software"},
    )
    with StationRuntime(load_station(path)) as runtime:
        first = runtime.health.recipe
        assert first.startswith("flange-default-")
        assert runtime.select_recipe(2) is ErrorCode.NONE
        second = runtime.health.recipe
        assert second.startswith("flange-measure-")
        assert runtime.select_recipe(1) is ErrorCode.NONE
        folder = tmp_path / "data" / "health"  # no part judged yet: no baseline stored
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"baseline-{second}.json").write_text("{broken")
        assert runtime.select_recipe(2) is ErrorCode.NONE  # the swap is not undone
        assert runtime.health.recipe == second and runtime.health.baseline is None
        assert f"baseline-{second}.json" in caplog.text
