"""ShadowRunner alone: the candidate really loaded into the shipped recipe, rows in a real store.

The bounded queue is filled without a race: the candidate waits at a gate inside its first
inspection, so the test knows exactly which frames are in hand, queued, or refused.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.config import load_recipe
from cellinspect.entities import Frame, ImageU8, InspectedFrame, Verdict
from cellinspect.errors import CellInspectError, ConfigError
from cellinspect.lifecycle.shadow import (
    SKIP_ERROR,
    SKIP_NEXT_PART,
    SKIP_NO_TIME,
    SKIP_QUEUE_FULL,
    SKIP_STOPPED,
    ShadowRunner,
    candidate_inspector,
    candidate_recipe,
    fits,
)
from cellinspect.lifecycle.shadow_report import shadow_report
from cellinspect.lifecycle.shadow_store import ShadowRecord, ShadowStore
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.settings import load_settings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ReviewInput, ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from tests.conftest import ROOT
from tests.lifecycle.test_shadow_station import SAMPLES, SLOT, package_sha, shadow_rows

RECIPE = ROOT / "recipes" / "flange.yaml"
MODEL_DIR = ROOT / "models" / SLOT / "1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlResultStore]:
    opened = open_store(load_settings(None, data_dir=tmp_path / "data"))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def runner_parts() -> tuple[ImageInspector, list[tuple[Frame, InspectedFrame]]]:
    """The candidate inspector (shipped model in its own slot) and real frames it judged."""
    inspector = candidate_inspector(RECIPE, load_recipe(RECIPE), SLOT, MODEL_DIR)
    parts = []
    for i, path in enumerate(SAMPLES[:6]):
        raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert raw is not None
        image: ImageU8 = np.asarray(raw, dtype=np.uint8)
        frame = Frame(image=image, frame_id=i, source="test", path=str(path), part_id=i + 1)
        live = inspector.inspect_image(image, name=str(path), part_id=i + 1)
        parts.append((frame, live))
    return inspector, parts


class Gate:
    """The real candidate, held at a gate in each inspection until the test opens it."""

    def __init__(self, inner: ImageInspector) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.open = threading.Event()

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
        self.entered.set()
        assert self.open.wait(60), "the test never opened the gate"
        return self.inner.inspect_image(image, name=name, part_id=part_id, encoder=encoder)


class Broken(Gate):
    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        raise RuntimeError("candidate bug")


def now() -> float:
    return time.monotonic()


def far() -> float:
    """A part deadline an hour away: only the queue decides in these tests."""
    return time.monotonic() + 3600.0


def test_a_full_queue_refuses_frames_and_counts_them(
    store: SqlResultStore,
    runner_parts: tuple[ImageInspector, list[tuple[Frame, InspectedFrame]]],
) -> None:
    inspector, parts = runner_parts
    gate = Gate(inspector)
    runner = ShadowRunner(SLOT, "1", "sha-x", gate, ShadowStore(store.engine), queue_size=1)
    runner.start()
    frame, live = parts[0]
    runner.offer(frame, live, now(), far())
    assert gate.entered.wait(60)  # the worker holds frame 0
    for frame, live in parts[1:5]:  # frame 1 waits in the queue, 2-4 find it full
        runner.offer(frame, live, now(), far())
    gate.open.set()
    assert runner.wait_idle(60)  # frames 0 and 1 judged (close would skip a queued one)
    runner.close()
    stats = runner.stats()
    rows = shadow_rows(Path(str(store.engine.url.database)).parent)
    by_id = {r["live_result_id"]: r for r in rows}
    ids = [live.result.result_id for _, live in parts[:5]]
    assert sorted(by_id) == sorted(ids)
    assert [by_id[i]["skipped_reason"] for i in ids] == [None, None, *[SKIP_QUEUE_FULL] * 3]
    for _, live in parts[:2]:  # the same model on the same frame: the same verdict and score
        row = by_id[live.result.result_id]
        assert row["verdict"] == live.result.verdict.value
        assert row["score"] == pytest.approx(live.result.score)
        assert row["latency_ms"] > 0 and row["candidate_sha256"] == "sha-x"
    assert stats.offered == 5 and stats.judged == 2 and stats.skipped == {SKIP_QUEUE_FULL: 3}
    assert stats.written == 5 and stats.unwritten == 0 and stats.lost == 0
    runner.offer(*parts[5], now(), far())  # after close: not taken, not counted
    assert runner.stats().offered == 5


def test_late_overtaken_and_failing_candidates_are_recorded_not_judged(
    store: SqlResultStore,
    runner_parts: tuple[ImageInspector, list[tuple[Frame, InspectedFrame]]],
) -> None:
    inspector, parts = runner_parts
    broken = Broken(inspector)
    newest = [0.0]  # when the newest live part was accepted
    runner = ShadowRunner(
        SLOT, "1", "sha-y", broken, ShadowStore(store.engine), last_trigger=lambda: newest[0]
    ).start()
    (frame0, live0), (frame1, live1), (frame2, live2) = parts[:3]
    runner.offer(frame0, live0, now(), far() - 7200.0)  # deadline gone: no time
    accepted = now()
    newest[0] = accepted + 0.001  # the line accepted the next part already
    runner.offer(frame2, live2, accepted, far())
    newest[0] = accepted = now()
    runner.offer(frame1, live1, accepted, far())
    assert runner.wait_idle(60)
    runner.close()
    rows = {
        r["live_result_id"]: r for r in shadow_rows(Path(str(store.engine.url.database)).parent)
    }
    assert rows[live0.result.result_id]["skipped_reason"] == SKIP_NO_TIME
    assert rows[live2.result.result_id]["skipped_reason"] == SKIP_NEXT_PART
    failed = rows[live1.result.result_id]
    assert failed["skipped_reason"] == SKIP_ERROR and "candidate bug" in failed["error"]
    assert failed["verdict"] is None


def test_frames_still_queued_at_close_are_recorded_as_stopped(
    store: SqlResultStore,
    runner_parts: tuple[ImageInspector, list[tuple[Frame, InspectedFrame]]],
) -> None:
    inspector, parts = runner_parts
    runner = ShadowRunner(SLOT, "1", "sha-z", inspector, ShadowStore(store.engine))
    for frame, live in parts[:3]:  # no worker started: all three wait in the queue
        runner.offer(frame, live, now(), far())
    runner.close()
    rows = shadow_rows(Path(str(store.engine.url.database)).parent)
    assert sorted(r["live_result_id"] for r in rows) == sorted(
        live.result.result_id for _, live in parts[:3]
    )
    assert {r["skipped_reason"] for r in rows} == {SKIP_STOPPED}
    assert runner.stats().skipped == {SKIP_STOPPED: 3}


def test_the_fit_rule_counts_the_frames_ahead() -> None:
    assert fits(now=10.0, deadline=10.3, ahead=0, estimate_ms=300.0)
    assert not fits(now=10.0, deadline=10.3, ahead=1, estimate_ms=200.0)
    assert not fits(now=10.5, deadline=10.3, ahead=0, estimate_ms=0.0)


def test_a_candidate_that_cannot_load_says_why(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPE)
    with pytest.raises(ConfigError, match=r"no model slot 'nope'.*flange-anomaly"):
        candidate_recipe(recipe, "nope", MODEL_DIR, str(RECIPE))
    with pytest.raises(ConfigError, match="missing-package: model package folder not found"):
        candidate_recipe(recipe, SLOT, tmp_path / "missing-package", str(RECIPE))
    tampered = tmp_path / "tampered"
    shutil.copytree(MODEL_DIR, tampered)
    text = (tampered / "manifest.json").read_text(encoding="utf-8")
    (tampered / "manifest.json").write_text(text.replace('"review_at": 1.0088', '"review_at": 2'))
    with pytest.raises(CellInspectError, match=r"manifest\.json.*thresholds"):
        candidate_inspector(RECIPE, recipe, SLOT, tampered)


def _record(live_id: str, live: Verdict, cand: Verdict | None, reason: str | None) -> ShadowRecord:
    return ShadowRecord(
        live_result_id=live_id,
        slot=SLOT,
        candidate_version="2",
        candidate_sha256=package_sha(MODEL_DIR),
        recipe_name="flange-default",
        live_verdict=live,
        live_score=0.5,
        verdict=cand,
        score=None if cand is None else 0.9,
        defect_class=None,
        error=None,
        latency_ms=None if cand is None else 12.0,
        skipped_reason=reason,
        created_at=datetime.now(UTC),
    )


def test_review_verdicts_are_neither_escapes_nor_false_rejects(
    store: SqlResultStore,
    runner_parts: tuple[ImageInspector, list[tuple[Frame, InspectedFrame]]],
) -> None:
    _, parts = runner_parts
    lives = [live for _, live in parts[:5]]
    store.add_many(lives)
    ids = [live.result.result_id for live in lives]
    plan = [  # live verdict, candidate verdict, QA label
        (Verdict.PASS, Verdict.REVIEW, ReviewLabel.DEFECT),  # live escape; REVIEW holds it
        (Verdict.FAIL, Verdict.REVIEW, ReviewLabel.GOOD),  # live false reject; REVIEW is not
        (Verdict.REVIEW, Verdict.PASS, ReviewLabel.DEFECT),  # candidate escape
        (Verdict.REVIEW, Verdict.FAIL, ReviewLabel.GOOD),  # candidate false reject
        (Verdict.PASS, Verdict.PASS, None),  # agreed, not reviewed
    ]
    for rid, (_, _, label) in zip(ids, plan, strict=True):
        if label is not None:
            store.set_review(
                rid,
                ReviewInput(
                    label=label,
                    reviewer="qa",
                    defect_class="scratch" if label is ReviewLabel.DEFECT else None,
                ),
            )
    records = [_record(i, live, cand, None) for i, (live, cand, _) in zip(ids, plan, strict=True)]
    records.append(_record("not-stored", Verdict.PASS, None, SKIP_QUEUE_FULL))
    ShadowStore(store.engine).add_many(records)
    report = shadow_report(store, SLOT, "2")
    assert (report.compared, report.agreed, report.reviewed) == (5, 1, 4)
    assert (report.escapes_live, report.escapes_candidate) == (1, 1)
    assert (report.false_rejects_live, report.false_rejects_candidate) == (1, 1)
    assert report.skipped == 1 and report.skipped_by_reason == {SKIP_QUEUE_FULL: 1}
    assert report.latency_p50_ms == report.latency_p99_ms == 12.0
    assert [d.live_result_id for d in report.disagreements] == ids[:4]
    assert [d.qa_label for d in report.disagreements] == [p[2] for p in plan[:4]]
    assert shadow_report(store.engine, SLOT, "3").compared == 0
