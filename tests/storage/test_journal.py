"""The result journal: durable before output, replayed exactly once, pruned once committed.

Everything runs on real files and a real SQLite store; a full disk is a real write failure
(RLIMIT_FSIZE in a child process turns writes past the limit into EFBIG, like ENOSPC), and a
stalled database is a real exclusive lock held by the test.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.journal import REPLAYED_NO_IMAGES, ResultJournal, replay_journal
from cellinspect.storage.records import ResultFilter
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.storage.writer import AsyncResultWriter, SubmitOutcome

ROOT = Path(__file__).resolve().parents[2]


def results(n: int, start: int = 0) -> list[InspectedFrame]:
    return [
        synthetic_frame(synthetic_result(i, Verdict.FAIL, defect_class="dent"), size=16)
        for i in range(start, start + n)
    ]


def sqlite_store(data_dir: Path) -> SqlResultStore:
    return open_store(StationSettings(data_dir=data_dir, disk_budget_mb=None))


def all_stored(store: SqlResultStore) -> list[str]:
    return [s.result.result_id for s in store.query(ResultFilter(), limit=500).items]


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("results-*.jsonl"))


def test_a_crashed_journal_is_replayed_exactly_once(tmp_path: Path) -> None:
    """Appended, never committed, never closed (a kill): the next open stores each once."""
    folder = tmp_path / "journal"
    crashed = ResultJournal(folder)
    crashed.open()
    frames = results(5)
    for f in frames:
        crashed.append(f.result)
    # The process dies here: no close(), no commit. A new process opens the same folder.
    store = sqlite_store(tmp_path / "data")
    try:
        again = ResultJournal(folder)
        again.open()
        assert again.pending == 5
        assert replay_journal(store, again) == 5
        assert again.pending == 0
        assert replay_journal(store, again) == 0
        third = ResultJournal(folder)  # an interrupted replay runs again: nothing doubles
        third.open()
        assert replay_journal(store, third) == 0
        ids = all_stored(store)
        assert sorted(ids) == sorted(f.result.result_id for f in frames)
        again.close()
        third.close()
    finally:
        store.close()
    assert segments(folder) == []  # every segment committed: nothing left on disk


def test_replayed_results_say_why_their_pictures_are_missing(tmp_path: Path) -> None:
    """The journal holds no pictures: a replayed reject (whose images the default retention
    keeps) records why it has none; a replayed PASS (images not kept anyway) is unchanged."""
    folder = tmp_path / "journal"
    crashed = ResultJournal(folder)
    crashed.open()
    reject = synthetic_result(1, Verdict.FAIL, defect_class="dent")
    good = synthetic_result(2, Verdict.PASS)
    for r in (reject, good):
        crashed.append(r)
    store = sqlite_store(tmp_path / "data")
    try:
        again = ResultJournal(folder)
        again.open()
        assert replay_journal(store, again) == 2
        stored = {s.result.result_id: s for s in store.query(ResultFilter(), limit=10).items}
        assert REPLAYED_NO_IMAGES in stored[reject.result_id].result.reasons
        assert stored[reject.result_id].images == {}
        assert stored[good.result_id].result.reasons == good.reasons
        again.close()
    finally:
        store.close()


def test_segments_rotate_and_go_once_committed(tmp_path: Path) -> None:
    journal = ResultJournal(tmp_path / "j", segment_bytes=2048)
    journal.open()
    frames = results(12)
    for f in frames:
        journal.append(f.result)
    assert len(segments(tmp_path / "j")) > 2
    journal.committed(f.result.result_id for f in frames[:-1])
    left = segments(tmp_path / "j")
    assert len(left) == 1  # the current segment holds the last result
    journal.committed([frames[-1].result.result_id])
    journal.close()
    assert segments(tmp_path / "j") == []


def test_torn_last_line_is_skipped_and_bad_lines_kept_aside(tmp_path: Path) -> None:
    """A write the process died in was never acted on; a corrupt line is never dropped."""
    folder = tmp_path / "journal"
    folder.mkdir()
    good = [f.result for f in results(3)]
    lines = [json.dumps(r.to_dict()) for r in good]
    text = f"{lines[0]}\n{{not json\n{lines[1]}\n{lines[2][:40]}"  # torn in the middle
    (folder / "results-00000001.jsonl").write_text(text, encoding="utf-8")
    journal = ResultJournal(folder)
    journal.open()
    assert {r.result_id for r in journal.pending_results()} == {
        good[0].result_id,
        good[1].result_id,
    }
    rejected = folder / "results-00000001.jsonl.rejected"
    assert rejected.read_text(encoding="utf-8") == "{not json\n"
    journal.close()


def test_the_last_line_of_a_result_id_wins(tmp_path: Path) -> None:
    """A deadline placeholder superseded by the late verdict under the same id."""
    journal = ResultJournal(tmp_path / "j")
    journal.open()
    first = results(1)[0].result
    placeholder = replace(first, verdict=Verdict.REVIEW, error="deadline missed: NO RESULT")
    late = replace(first, verdict=Verdict.FAIL, error="deadline missed: NO RESULT (late fail)")
    journal.append(placeholder)
    journal.append(late)
    [pending] = journal.pending_results()
    assert pending.verdict is Verdict.FAIL and pending.error == late.error
    journal.close()


def test_writer_defers_to_the_journal_while_the_database_is_locked(tmp_path: Path) -> None:
    """The DB stalls (an exclusive lock held by the test): nothing spilled, nothing dropped;
    the journal holds the results, and the writer's close stores them exactly once."""
    data = tmp_path / "data"
    store = sqlite_store(data)
    store.engine.dispose()
    journal = ResultJournal(data / "journal")
    journal.open()
    spill = data / "spill.jsonl"
    writer = AsyncResultWriter(
        store, queue_size=2, batch_size=2, max_block_s=0.0, spill_path=spill, retry_wait_s=0.0
    )
    writer.attach_journal(journal)
    lock = sqlite3.connect(data / "results.db", timeout=0.1)
    lock.execute("PRAGMA busy_timeout = 100")
    writer.start()
    try:
        lock.execute("BEGIN EXCLUSIVE")
        frames = results(20)
        outcomes = []
        for f in frames:
            journal.append(f.result)  # the station's order: journal first, then the writer
            outcomes.append(writer.submit(f))
        assert SubmitOutcome.DEFERRED in outcomes
        assert SubmitOutcome.DROPPED not in outcomes and SubmitOutcome.SPILLED not in outcomes
    finally:
        lock.rollback()
        lock.close()
    writer.close()
    journal.close()
    stats = writer.stats
    assert stats.dropped == 0 and stats.spilled == 0 and stats.deferred > 0
    assert not spill.exists()
    ids = all_stored(store)
    assert sorted(ids) == sorted(f.result.result_id for f in frames)  # each exactly once
    assert segments(data / "journal") == []
    store.close()


def test_a_full_disk_fails_the_append_with_the_file_named(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes past 3000 bytes fail (EFBIG), like a full disk: append and
    probe raise JournalError naming the segment; the lines written before stay whole."""
    script = textwrap.dedent(
        f"""
        import resource
        from pathlib import Path
        from cellinspect.entities import Verdict
        from cellinspect.storage.journal import JournalError, ResultJournal
        from cellinspect.storage.synthetic import synthetic_result

        journal = ResultJournal(Path({str(tmp_path / "j")!r}))
        journal.open()
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
        ok = 0
        try:
            for i in range(100):
                journal.append(synthetic_result(i, Verdict.FAIL, defect_class="dent"))
                ok += 1
        except JournalError as err:
            print("APPEND", ok, err)
        try:
            journal.probe()
        except JournalError as err:
            print("PROBE", err)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    append_line, probe_line = out.stdout.splitlines()
    _, ok, message = append_line.split(" ", 2)
    assert int(ok) > 0
    assert "results-00000001.jsonl: cannot write the result journal" in message
    assert "File too large" in message
    assert "cannot write the result journal" in probe_line or "journal segment" in probe_line
    reopened = ResultJournal(tmp_path / "j")
    reopened.open()
    assert len(reopened.pending_results()) == int(ok)  # whole lines only, all readable
    reopened.close()
