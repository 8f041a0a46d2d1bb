"""Shadow runs on a real station: a candidate judges the same parts, and changes nothing live.

The station runs in-process (`StationRuntime`) on the shipped flange recipe and its sample
images (software triggers, one part at a time, in file order), with its store and API on a
free port. The candidate is the shipped `flange-anomaly` model re-sealed with much tighter
thresholds (`cellinspect models seal`), so it rejects good parts the live model passes.
Each test compares a run with a shadow against a run without one on the same parts.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cellinspect.cli.root import app
from cellinspect.entities import ImageU8, InspectedFrame
from cellinspect.lifecycle.shadow import (
    SKIP_NEXT_PART,
    SKIP_NO_TIME,
    SKIP_QUEUE_FULL,
    SKIP_STOPPED,
)
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.users import Role, add_user
from tests.conftest import ROOT
from tests.station.runner import stored_results, write_station

SLOT = "flange-anomaly"
SAMPLES = sorted((ROOT / "sample_images").glob("*.bmp"))
PARTS = 14  # the first sample images in file order: good and defective parts
# Generous part deadlines (the interface's; the recipe's own 500 ms still bounds the live
# inspector), so that on a busy shared machine the shadow rule, not load, decides what fits.
DEADLINE_MS = 5000.0
SLOW_DEADLINE_MS = 2000.0


@dataclass(frozen=True, slots=True)
class Run:
    """What a station run gave out: the PLC-side records and the stored live results."""

    records: list[tuple[int, int, str, bool]]  # part id, result code, verdict, delivered
    stored: list[tuple[str | None, str, str | None, float | None, tuple[str, ...]]]
    result_ids: dict[str, str]  # file name -> live result id
    data_dir: Path


def seal_candidate(tmp_path: Path, review_at: float, fail_at: float) -> Path:
    """A copy of the shipped anomaly model with other thresholds, re-sealed by the CLI."""
    folder = tmp_path / "candidate"
    shutil.copytree(ROOT / "models" / SLOT / "1", folder)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["thresholds"]["review_at"] = review_at
    manifest["thresholds"]["fail_at"] = fail_at
    manifest["version"] = "tight"
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    out = CliRunner().invoke(app, ["models", "seal", str(folder), "--by", "shadow-test"])
    assert out.exit_code == 0, out.output
    return folder


def package_sha(folder: Path) -> str:
    """The candidate's package hash, read from its manifest (what the rows must carry)."""
    seal = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["seal"]
    return str(seal["package_sha256"])


def station_file(tmp_path: Path, name: str, api: bool = False) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    source = folder / "images"
    source.mkdir()
    for image in SAMPLES[:PARTS]:
        shutil.copy(image, source / image.name)
    settings = folder / "settings.yaml"
    settings.write_text("pass_sample_rate: 1.0\n", encoding="utf-8")  # keep every image
    return write_station(
        folder / "station.yaml",
        source={"type": "folder", "path": str(source), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        api={"enabled": api, "host": "127.0.0.1", "port": 0},
        store={"data_dir": str(folder / "data"), "settings": str(settings)},
    )


def finish(runtime: StationRuntime, data_dir: Path) -> Run:
    records = [
        (r.part_id, int(r.code), r.verdict.value, r.delivered) for r in runtime.interface.records
    ]
    stored = stored_results(data_dir)
    return Run(
        records=records,
        stored=[
            (
                s.result.path and Path(s.result.path).name,
                s.result.verdict.value,
                s.result.defect_class,
                None if s.result.score is None else round(s.result.score, 5),
                tuple(m.sha256 for m in s.result.models),
            )
            for s in stored
        ],
        result_ids={Path(s.result.path or "").name: s.result.result_id for s in stored},
        data_dir=data_dir,
    )


def judge_parts(runtime: StationRuntime, gaps: bool = True, first_gapped: int = 0) -> None:
    """Trigger every part, one at a time; with `gaps` (or for the first `first_gapped`
    parts), the next only once the shadow is done.

    A conveyor leaves gaps between parts, in which a shadow runs; without them every part
    arrives as soon as the last one was posted, and the shadow yields to the line.
    """
    for part in range(1, PARTS + 1):
        runtime.trigger(part_id=part)
        if (gaps or part <= first_gapped) and runtime.shadow is not None:
            assert runtime.interface.wait_idle(60)  # the job ended: its frame was offered
            assert runtime.shadow.wait_idle(60)
    assert runtime.interface.wait_idle(60)


def start(path: Path, deadline_ms: float = DEADLINE_MS) -> StationRuntime:
    return StationRuntime(load_station(path), interface_overrides={"deadline_ms": deadline_ms})


def baseline(tmp_path: Path) -> Run:
    path = station_file(tmp_path, "baseline")
    with start(path) as runtime:
        judge_parts(runtime)
    return finish(runtime, path.parent / "data")


def shadow_rows(data_dir: Path) -> list[dict[str, Any]]:
    """Every shadow row, read with plain sqlite3 (not through the code under test)."""
    with sqlite3.connect(data_dir / "results.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM shadow_results ORDER BY id")]


def live_table_count(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "results.db") as db:
        return int(db.execute("SELECT count(*) FROM results").fetchone()[0])


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seal_candidate(tmp_path_factory.mktemp("tight"), review_at=0.2, fail_at=0.3)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return baseline(tmp_path_factory.mktemp("base"))


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Users are made per station (in its data_dir) by `with_users`; none from the env."""
    monkeypatch.delenv("CELLINSPECT_API_TOKEN", raising=False)
    yield {}


def with_users(data_dir: Path, tokens: dict[str, str]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, role in (("quinn", Role.QA), ("vera", Role.VIEWER)):
        tokens[name] = add_user(data_dir / "users.yaml", name, role)


def test_shadow_changes_no_output_and_the_report_matches_the_rows(
    tmp_path: Path, tight: Path, base: Run, tokens: dict[str, str]
) -> None:
    path = station_file(tmp_path, "shadow", api=True)
    data_dir = path.parent / "data"
    with_users(data_dir, tokens)
    with start(path) as runtime:
        runtime.set_shadow(SLOT, tight, "tight")
        judge_parts(runtime)
        runner = runtime.shadow
        assert runner is not None
        shown = runtime.status()["shadow"]  # GET /station and the status log show the counts
        assert shown["slot"] == SLOT and shown["version"] == "tight"
        assert shown["offered"] == PARTS
        runtime.clear_shadow()
        assert runtime.status()["shadow"] is None
        stats = runner.stats()
        assert runtime.api is not None
        url = runtime.api.url
        run = finish_after_writer(runtime, data_dir)
        qa_labels = post_labels(url, tokens["quinn"], run.result_ids)
        report = httpx.get(
            f"{url}/models/{SLOT}/shadow/tight/report",
            headers={"Authorization": f"Bearer {tokens['vera']}"},
            timeout=60,
        )
        assert report.status_code == 200, report.text
        body = report.json()
        images = [
            httpx.get(
                f"{url}{d['image_url']}",
                headers={"Authorization": f"Bearer {tokens['vera']}"},
                timeout=60,
            )
            for d in body["disagreements"]
            if d["image_url"]
        ]
        anonymous = httpx.get(f"{url}/models/{SLOT}/shadow/tight/report", timeout=60)

    # (a) what went out is what went out without a shadow, and only live rows are results
    assert run.records == base.records
    assert run.stored == base.stored
    assert live_table_count(data_dir) == PARTS
    live_sha = base.stored[0][4]
    assert all(s[4] == live_sha for s in run.stored)

    # (b) one shadow row per posted part, judged with the candidate's sealed package
    rows = shadow_rows(data_dir)
    assert sorted(r["live_result_id"] for r in rows) == sorted(run.result_ids.values())
    judged = [r for r in rows if r["verdict"] is not None]
    assert len(judged) == PARTS, f"with gaps between parts every frame fits: {stats}"
    assert {r["candidate_sha256"] for r in rows} == {package_sha(tight)}
    assert package_sha(tight) not in live_sha
    assert stats.offered == PARTS and stats.judged == len(judged)

    # (c) the report counts what the rows and the labels say, computed here independently
    by_id = {r["live_result_id"]: r for r in judged}
    expected = {
        "compared": len(judged),
        "agreed": sum(r["verdict"] == r["live_verdict"] for r in judged),
        "reviewed": sum(rid in qa_labels for rid in by_id),
        "escapes_live": 0,
        "escapes_candidate": 0,
        "false_rejects_live": 0,
        "false_rejects_candidate": 0,
        "skipped": len(rows) - len(judged),
    }
    for rid, row in by_id.items():
        label = qa_labels[rid]
        for who, verdict in (("live", row["live_verdict"]), ("candidate", row["verdict"])):
            expected[f"escapes_{who}"] += label == "defect" and verdict == "pass"
            expected[f"false_rejects_{who}"] += label == "good" and verdict == "fail"
    assert {k: body[k] for k in expected} == expected
    assert expected["false_rejects_candidate"] > expected["false_rejects_live"]
    disagreeing = {rid for rid, r in by_id.items() if r["verdict"] != r["live_verdict"]}
    assert disagreeing and {d["live_result_id"] for d in body["disagreements"]} == disagreeing
    for d in body["disagreements"]:
        assert d["qa_label"] == qa_labels[d["live_result_id"]]
        assert d["candidate_score"] == pytest.approx(by_id[d["live_result_id"]]["score"])
    assert len(images) == len(body["disagreements"])  # every live image kept (settings)
    assert all(i.status_code == 200 for i in images)
    assert all(i.headers["content-type"].startswith("image/") for i in images)
    assert body["latency_p50_ms"] is not None and body["candidate_sha256"] == [package_sha(tight)]
    assert anonymous.status_code == 401

    # the CLI reads the same store and says the same
    out = CliRunner().invoke(
        app, ["models", "shadow-report", SLOT, "tight", "--data-dir", str(data_dir), "--json"]
    )
    assert out.exit_code == 0, out.output
    cli = json.loads(out.stdout)
    assert {k: cli[k] for k in expected} == expected
    table = CliRunner().invoke(
        app, ["models", "shadow-report", SLOT, "tight", "--data-dir", str(data_dir)]
    )
    assert table.exit_code == 0 and "false rejects" in table.stdout
    missing = CliRunner().invoke(
        app, ["models", "shadow-report", SLOT, "nope", "--data-dir", str(data_dir)]
    )
    assert missing.exit_code == 1 and "no shadow results" in missing.output


def finish_after_writer(runtime: StationRuntime, data_dir: Path) -> Run:
    """The run's outputs once the writer has committed every live result."""
    assert runtime.writer is not None
    assert runtime.interface.wait_idle(60)  # every result handed to the writer
    assert runtime.writer.flush(timeout=60)
    return finish(runtime, data_dir)


def post_labels(url: str, token: str, result_ids: dict[str, str]) -> dict[str, str]:
    """QA labels from the sample names (part_NNNN_<class>.bmp), through the real API."""
    labels: dict[str, str] = {}
    for name, rid in result_ids.items():
        kind = name.removesuffix(".bmp").split("_", 2)[2]
        body: dict[str, Any] = {"label": "good"} if kind == "good" else {"label": "defect"}
        if kind != "good":
            body["defect_class"] = kind
        reply = httpx.put(
            f"{url}/results/{rid}/review",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        labels[rid] = body["label"]
    return labels


class SlowCandidate:
    """The real candidate inspector, made slower than the whole part deadline."""

    def __init__(self, inner: ImageInspector, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.calls = 0
        self.lock = threading.Lock()

    @property
    def recipe_name(self) -> str:
        return self.inner.recipe_name

    @property
    def recipe_sha256(self) -> str:
        return self.inner.recipe_sha256

    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay_s)
        return self.inner.inspect_image(image, name=name, part_id=part_id, encoder=encoder)


def test_a_candidate_too_slow_for_the_deadline_is_skipped_and_counted(
    tmp_path: Path, tight: Path, base: Run
) -> None:
    path = station_file(tmp_path, "slow")
    data_dir = path.parent / "data"
    deadline_s = SLOW_DEADLINE_MS / 1000.0
    with start(path, SLOW_DEADLINE_MS) as runtime:
        runtime.set_shadow(SLOT, tight, "slow", queue_size=1)
        runner = runtime.shadow
        assert runner is not None
        slow = SlowCandidate(runner.inspector, delay_s=deadline_s * 1.2)
        runner.inspector = slow
        # The first part gets a gap, so the candidate is timed once (the shared trunk leaves
        # the shadow no room otherwise); then parts back to back: no gap for the shadow.
        judge_parts(runtime, gaps=False, first_gapped=1)
        runtime.clear_shadow()
        stats = runner.stats()
        run = finish_after_writer(runtime, data_dir)

    assert run.records == base.records and run.stored == base.stored  # live path unaffected
    assert live_table_count(data_dir) == PARTS
    rows = shadow_rows(data_dir)
    assert sorted(r["live_result_id"] for r in rows) == sorted(run.result_ids.values())
    skipped = [r for r in rows if r["skipped_reason"] is not None]
    judged = [r for r in rows if r["verdict"] is not None]
    # Once one frame was measured slower than a whole deadline, no later frame fits.
    assert len(judged) <= 2 and len(skipped) >= PARTS - 2
    assert {r["skipped_reason"] for r in skipped} <= {
        SKIP_NO_TIME,
        SKIP_QUEUE_FULL,
        SKIP_NEXT_PART,
        SKIP_STOPPED,  # still queued when the shadow was cleared
    }
    assert all(r["verdict"] is None and r["latency_ms"] is None for r in skipped)
    assert slow.calls == len(judged)
    assert stats.judged == len(judged) and sum(stats.skipped.values()) == len(skipped)
    assert stats.estimate_ms is not None and stats.estimate_ms >= deadline_s * 1000
