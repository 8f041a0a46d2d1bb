"""Promotion and rollback on a running station, through the real API, with no part lost.

The station runs in-process (`StationRuntime`) on the shipped flange recipe with its store and
API on a free port; a thread triggers parts one after another (software triggers, the sample
images in file order) while the test promotes a candidate over HTTP. The candidate is the
shipped `flange-anomaly` model re-sealed with other thresholds, so its package hash differs.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.users import Role, add_user
from tests.conftest import ROOT
from tests.lifecycle.test_registry import resealed
from tests.station.runner import stored_results, write_station

SLOT = "flange-anomaly"
SAMPLES = sorted((ROOT / "sample_images").glob("*.bmp"))
DEADLINE_MS = 5000.0  # generous: the swap, not a loaded machine, is what is under test
AFTER_SWAP = 4  # parts judged after the promotion returned


def station_file(tmp_path: Path) -> Path:
    source = tmp_path / "images"
    source.mkdir()
    for image in SAMPLES:
        shutil.copy(image, source / image.name)
    return write_station(
        tmp_path / "station.yaml",
        source={"type": "folder", "path": str(source), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
        store={"data_dir": str(tmp_path / "data")},
    )


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.delenv("CELLINSPECT_API_TOKEN", raising=False)
    users = tmp_path / "data" / "users.yaml"
    users.parent.mkdir(parents=True)
    yield {
        name: add_user(users, name, role)
        for name, role in (("ada", Role.ADMIN), ("quinn", Role.QA))
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Line:
    """Triggers parts one after another on its own thread until told to stop."""

    def __init__(self, runtime: StationRuntime, limit: int) -> None:
        self.runtime = runtime
        self.limit = limit
        self.judged = 0
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-line")

    def _run(self) -> None:
        for part in range(1, self.limit + 1):
            if self.stop.is_set():
                return
            self.runtime.trigger(part_id=part)
            with self.cond:
                self.judged = part
                self.cond.notify_all()

    def wait_for(self, parts: int) -> int:
        with self.cond:
            assert self.cond.wait_for(
                lambda: self.judged >= parts or not self.thread.is_alive(), 120
            )
            return self.judged


@pytest.mark.slow
def test_a_promotion_mid_run_loses_and_double_judges_no_part(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    candidate = resealed(tmp_path, "loose", 0.95)
    path = station_file(tmp_path)
    data_dir = tmp_path / "data"
    runtime = StationRuntime(load_station(path), interface_overrides={"deadline_ms": DEADLINE_MS})
    with runtime:
        assert runtime.api is not None
        url = runtime.api.url
        with httpx.Client(base_url=url, timeout=120) as http:
            versions = http.get("/models/versions", headers=auth(tokens["quinn"])).json()
            old_sha = next(v["sha256"] for v in versions if v["slot"] == SLOT)
            added = http.post(
                f"/models/{SLOT}/versions",
                json={"path": str(candidate)},
                headers=auth(tokens["ada"]),
            )
            assert added.status_code == 201, added.text
            new_sha = added.json()["sha256"]
            assert new_sha != old_sha

            line = Line(runtime, limit=len(SAMPLES))
            line.thread.start()
            line.wait_for(3)
            # QA may not promote; without a shadow report the gate refuses even an admin
            denied = http.post(
                f"/models/{SLOT}/versions/loose/promote", json={}, headers=auth(tokens["quinn"])
            )
            refused = http.post(
                f"/models/{SLOT}/versions/loose/promote", json={}, headers=auth(tokens["ada"])
            )
            promoted = http.post(
                f"/models/{SLOT}/versions/loose/promote",
                json={"override_reason": "test line, candidate checked offline"},
                headers=auth(tokens["ada"]),
            )
            at_swap = line.judged
            line.wait_for(at_swap + AFTER_SWAP)
            line.stop.set()
            line.thread.join(120)
            audit = http.get("/models/audit", params={"slot": SLOT}, headers=auth(tokens["quinn"]))
        assert runtime.interface.wait_idle(60)
        assert runtime.writer is not None and runtime.writer.flush(timeout=60)
        triggered = line.judged

    assert denied.status_code == 403, denied.text
    assert refused.status_code == 409 and "no shadow report" in refused.text
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["swapped"] is True
    assert promoted.json()["live"]["sha256"] == new_sha

    stored = stored_results(data_dir)
    part_ids = sorted(s.result.part_id or 0 for s in stored)
    assert part_ids == list(range(1, triggered + 1))  # each part exactly once, none missing
    by_part = sorted(stored, key=lambda s: s.result.part_id or 0)
    hashes = [{m.sha256 for m in s.result.models} for s in by_part]
    assert all(s.result.verdict.value in ("pass", "fail", "review") for s in by_part)
    uses_old = [old_sha in h for h in hashes]
    uses_new = [new_sha in h for h in hashes]
    assert all(a != b for a, b in zip(uses_old, uses_new, strict=True))  # one or the other
    first_new = uses_new.index(True)
    assert first_new >= 3 and all(uses_old[:first_new]) and all(uses_new[first_new:])
    assert triggered - first_new >= AFTER_SWAP  # parts after the swap carry the new hash
    # every part judged by a whole inspector: both of the recipe's models, each sealed
    assert all(len(s.result.models) == 2 for s in by_part)

    events = [(e["version"], e["action"], e["to_state"], e["actor"]) for e in audit.json()]
    assert events[-2:] == [("1", "promote", "retired", "ada"), ("loose", "promote", "live", "ada")]
    assert audit.json()[-1]["reason"].startswith("gate overridden: test line")

    # a restart loads the live version from the registry, not the recipe's path; rollback
    # (one call) returns the previous one without a restart
    runtime = StationRuntime(load_station(path), interface_overrides={"deadline_ms": DEADLINE_MS})
    with runtime:
        assert runtime.api is not None
        after_restart = runtime.trigger(part_id=1001)
        with httpx.Client(base_url=runtime.api.url, timeout=120) as http:
            back = http.post(
                f"/models/{SLOT}/rollback", json={"reason": "undo"}, headers=auth(tokens["ada"])
            )
        after_rollback = runtime.trigger(part_id=1002)
    assert new_sha in {m.sha256 for m in after_restart.result.models}
    assert back.status_code == 200, back.text
    assert back.json()["live"]["version"] == "1" and back.json()["retired"]["version"] == "loose"
    assert old_sha in {m.sha256 for m in after_rollback.result.models}
