"""The background writer never loses a result silently: flush on close, spill, crash safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.errors import StoreError
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ResultFilter
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.storage.writer import AsyncResultWriter, SubmitOutcome, replay_spill

ROOT = Path(__file__).resolve().parents[2]


def frames(n: int, start: int = 0) -> list[InspectedFrame]:
    return [
        synthetic_frame(synthetic_result(i, Verdict.FAIL, defect_class="dent"), size=16)
        for i in range(start, start + n)
    ]


def stored_ids(store: SqlResultStore) -> set[str]:
    return {s.result.result_id for s in store.query(ResultFilter(), limit=500).items}


class GatedStore:
    """A real store whose add_many waits for a gate: the database is 'slow' on demand."""

    def __init__(self, inner: SqlResultStore) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def add_many(self, batch: Sequence[InspectedFrame]) -> list[str]:
        self.entered.set()
        self.gate.wait(10)
        return self.inner.add_many(batch)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class BrokenStore:
    """A store whose database is gone."""

    def __init__(self) -> None:
        self.calls = 0

    def add_many(self, batch: Sequence[InspectedFrame]) -> list[str]:
        self.calls += 1
        raise StoreError("database unreachable: disk I/O error")


def test_close_flushes_everything_queued(store: SqlResultStore) -> None:
    writer = AsyncResultWriter(store, batch_size=7)
    writer.start()
    for f in frames(40):
        assert writer.submit(f) is SubmitOutcome.QUEUED
    writer.close()
    assert len(stored_ids(store)) == 40
    s = writer.stats
    assert (s.submitted, s.written, s.spilled, s.dropped, s.queue_depth) == (40, 40, 0, 0, 0)
    assert s.batches >= 40 // 7
    with pytest.raises(StoreError, match="closed"):
        writer.submit(frames(1)[0])


def test_flush_waits_for_the_commit(store: SqlResultStore) -> None:
    with AsyncResultWriter(store) as writer:
        for f in frames(5):
            writer.submit(f)
        assert writer.flush(5.0)
        assert len(stored_ids(store)) == 5


def test_listeners_hear_of_new_results_only(store: SqlResultStore) -> None:
    heard: list[str] = []
    with AsyncResultWriter(store) as writer:
        writer.add_listener(lambda rs: heard.extend(r.result_id for r in rs))
        writer.add_listener(lambda rs: (_ for _ in ()).throw(RuntimeError("bad listener")))
        for f in frames(3) + frames(2):  # the last two are duplicates
            writer.submit(f)
        writer.flush()
    assert sorted(heard) == ["r000000", "r000001", "r000002"]
    assert writer.stats.duplicates == 2


def test_full_queue_spills_and_the_spill_is_replayed(store: SqlResultStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    gated = GatedStore(store)
    writer = AsyncResultWriter(
        gated,  # type: ignore[arg-type]
        queue_size=2,
        batch_size=1,
        max_block_s=0.01,
        spill_path=spill,
    )
    writer.start()
    batch = frames(5)
    outcomes = [writer.submit(batch[0])]
    assert gated.entered.wait(5)  # the thread holds r0 and waits on the 'database'
    outcomes += [writer.submit(f) for f in batch[1:]]
    assert outcomes == [SubmitOutcome.QUEUED] * 3 + [SubmitOutcome.SPILLED] * 2
    lines = [json.loads(line) for line in spill.read_text().splitlines()]
    assert [x["result"]["result_id"] for x in lines] == ["r000003", "r000004"]
    assert all(x["reason"] == "queue full" for x in lines)
    gated.gate.set()
    writer.close()
    assert stored_ids(store) == {"r000000", "r000001", "r000002"}
    assert writer.stats.spilled == 2
    # The next start replays the spill file (results without images) and removes it.
    again = AsyncResultWriter(store, spill_path=spill)
    again.start()
    again.close()
    assert stored_ids(store) == {f"r{i:06d}" for i in range(5)}
    assert again.stats.replayed == 2
    assert not spill.exists()
    assert store.get("r000004").images == {}


def test_full_queue_without_spill_file_drops_and_counts(store: SqlResultStore) -> None:
    gated = GatedStore(store)
    writer = AsyncResultWriter(gated, queue_size=1, batch_size=1, max_block_s=0)  # type: ignore[arg-type]
    writer.start()
    batch = frames(4)
    writer.submit(batch[0])
    assert gated.entered.wait(5)
    outcomes = [writer.submit(f) for f in batch[1:]]
    assert outcomes == [SubmitOutcome.QUEUED, SubmitOutcome.DROPPED, SubmitOutcome.DROPPED]
    gated.gate.set()
    writer.close()
    assert writer.stats.dropped == 2
    assert writer.stats.written == 2


def test_database_failure_retries_once_then_spills(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    broken = BrokenStore()
    writer = AsyncResultWriter(broken, spill_path=spill, retry_wait_s=0.0)  # type: ignore[arg-type]
    writer.start()
    writer.submit(frames(1)[0])
    writer.close()
    assert broken.calls == 2
    assert writer.stats.failed_batches == 1
    assert writer.stats.spilled == 1
    assert "database error" in spill.read_text()


def test_replay_keeps_unreadable_lines_aside(store: SqlResultStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    good = synthetic_result(9, Verdict.REVIEW, defect_class="dent")
    spill.write_text(
        json.dumps({"result": good.to_dict()}) + "\n\nnot json\n" + json.dumps({"x": 1}) + "\n"
    )
    assert replay_spill(store, spill) == 1
    assert stored_ids(store) == {"r000009"}
    assert not spill.exists()
    rejected = (tmp_path / "spill.jsonl.rejected").read_text().splitlines()
    assert rejected == ["not json", '{"x": 1}']


def test_spill_and_replay_keep_the_station(store: SqlResultStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    result = replace(synthetic_result(4), station_id="st-07", line="line-2", site="plant-north")
    writer = AsyncResultWriter(BrokenStore(), spill_path=spill, retry_wait_s=0.0)  # type: ignore[arg-type]
    writer.start()
    writer.submit(InspectedFrame(result))
    writer.close()
    assert writer.stats.spilled == 1
    assert replay_spill(store, spill) == 1
    assert store.get("r000004").result == result
    page = store.query(ResultFilter(station_id="st-07"))
    assert [s.result.result_id for s in page.items] == ["r000004"]


def test_replay_failure_keeps_the_spill_file(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    spill.write_text(json.dumps({"result": synthetic_result(1).to_dict()}) + "\n")
    writer = AsyncResultWriter(BrokenStore(), spill_path=spill)  # type: ignore[arg-type]
    writer.start()
    writer.close()
    assert spill.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_block_s": -1.0}, "max_block_s"),
    ],
)
def test_bad_writer_settings(store: SqlResultStore, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AsyncResultWriter(store, **kwargs)  # type: ignore[arg-type]


CRASHING_STATION = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from cellinspect.entities import Verdict
    from cellinspect.settings import StationSettings
    from cellinspect.storage.factory import open_store
    from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
    from cellinspect.storage.writer import AsyncResultWriter

    settings = StationSettings(data_dir=Path(sys.argv[1]), disk_budget_mb=None)
    writer = AsyncResultWriter(open_store(settings), batch_size=8)
    writer.start()
    for i in range(30):
        writer.submit(synthetic_frame(synthetic_result(i, Verdict.FAIL, defect_class="d"), 16))
    assert writer.flush(30)
    print("committed", flush=True)
    for i in range(30, 60):
        writer.submit(synthetic_frame(synthetic_result(i, Verdict.FAIL, defect_class="d"), 16))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_crash_loses_no_committed_result(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "inspect")}
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_STATION, str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == -9, proc.stderr
    assert "committed" in proc.stdout
    reopened = open_store(StationSettings(data_dir=data, disk_budget_mb=None))
    got = stored_ids(reopened)
    with reopened.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    reopened.close()
    # Every result committed before the kill is there; later ones may or may not be.
    assert {f"r{i:06d}" for i in range(30)} <= got
    assert got <= {f"r{i:06d}" for i in range(60)}
