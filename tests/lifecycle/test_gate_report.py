"""The promotion gate on a real shadow report: stored live results, QA labels, shadow rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cellinspect.entities import Verdict
from cellinspect.lifecycle import promotion
from cellinspect.lifecycle.promotion import GateRefusedError
from cellinspect.lifecycle.registry import ModelRegistry, State
from cellinspect.lifecycle.shadow_report import shadow_report
from cellinspect.lifecycle.shadow_store import ShadowRecord, ShadowStore
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ReviewInput, ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from tests.lifecycle.test_registry import SHIPPED, SLOT, resealed


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlResultStore]:
    opened = open_store(StationSettings(data_dir=tmp_path / "data"))
    yield opened
    opened.close()


def judged(
    store: SqlResultStore,
    version: str,
    parts: int,
    reviewed: int,
    live_escapes: int,
    candidate_escapes: int,
) -> None:
    """`parts` live results, the first `reviewed` labelled by QA (every other one a defect);
    of the defective ones, the first `live_escapes` passed live, `candidate_escapes` passed
    by the candidate; every other verdict is right."""
    frames, records = [], []
    defects = 0
    for i in range(parts):
        defect = i % 2 == 0
        if defect and i < reviewed:
            defects += 1
        live = (
            Verdict.PASS
            if not defect or (i < reviewed and defects <= live_escapes)
            else Verdict.FAIL
        )
        cand = (
            Verdict.PASS
            if not defect or (i < reviewed and defects <= candidate_escapes)
            else Verdict.FAIL
        )
        result = synthetic_result(i, live, part_id=i)
        frames.append(synthetic_frame(result, with_images=False))
        records.append(
            ShadowRecord(
                live_result_id=result.result_id,
                slot=SLOT,
                candidate_version=version,
                candidate_sha256="c" * 64,
                recipe_name="flange-default",
                live_verdict=live,
                live_score=0.5,
                verdict=cand,
                score=0.5,
                defect_class=None,
                error=None,
                latency_ms=10.0,
                skipped_reason=None,
                created_at=datetime.now(UTC),
            )
        )
    store.add_many(frames)
    for i, frame in enumerate(frames[:reviewed]):
        review = (
            ReviewInput(ReviewLabel.DEFECT, "quinn", "dent")
            if i % 2 == 0
            else ReviewInput(ReviewLabel.GOOD, "quinn")
        )
        store.set_review(frame.result.result_id, review)
    ShadowStore(store.engine).add_many(records)


def candidate(tmp_path: Path, store: SqlResultStore) -> ModelRegistry:
    registry = promotion.registry_for(store.engine, tmp_path / "data")
    registry.ensure_live(SLOT, SHIPPED / "model.onnx")
    registry.add(SLOT, resealed(tmp_path, "c", 0.9), "ann")
    registry.set_state(SLOT, "c", State.SHADOW, "quinn", action="shadow")
    return registry


def test_enough_reviewed_parts_and_no_more_escapes_pass(
    tmp_path: Path, store: SqlResultStore
) -> None:
    registry = candidate(tmp_path, store)
    judged(store, "c", parts=24, reviewed=20, live_escapes=1, candidate_escapes=1)
    report = shadow_report(store, SLOT, "c")
    assert (report.compared, report.reviewed, report.escapes_live) == (24, 20, 1)
    assert report.escapes_candidate == 1
    assert promotion.gate_problems(store.engine, SLOT, "c", 20) == []
    change = promotion.promote(registry, SLOT, "c", "ada")
    assert change.live.version == "c" and registry.audit(SLOT)[-1].reason == ""


def test_too_few_reviewed_parts_are_refused(tmp_path: Path, store: SqlResultStore) -> None:
    registry = candidate(tmp_path, store)
    judged(store, "c", parts=24, reviewed=19, live_escapes=0, candidate_escapes=0)
    with pytest.raises(GateRefusedError, match="19 QA-reviewed part"):
        promotion.promote(registry, SLOT, "c", "ada")
    assert registry.get(SLOT, "c").state is State.SHADOW


def test_more_escapes_than_live_are_refused_unless_overridden(
    tmp_path: Path, store: SqlResultStore
) -> None:
    registry = candidate(tmp_path, store)
    judged(store, "c", parts=30, reviewed=30, live_escapes=0, candidate_escapes=2)
    report = shadow_report(store, SLOT, "c")
    assert (report.reviewed, report.escapes_live, report.escapes_candidate) == (30, 0, 2)
    with pytest.raises(GateRefusedError, match=r"2 escape.*live model's 0"):
        promotion.promote(registry, SLOT, "c", "ada", min_reviewed=20)
    change = promotion.promote(registry, SLOT, "c", "ada", override_reason="known fixture flaw")
    assert change.live.version == "c"
    assert "gate overridden: known fixture flaw" in registry.audit(SLOT)[-1].reason
    assert "2 escape(s)" in registry.audit(SLOT)[-1].reason
