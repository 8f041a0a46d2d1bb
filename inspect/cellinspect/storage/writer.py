"""Background writer: the inspection path hands results over and goes on; one thread commits.

Full-queue policy (explicit, counted, never silent):
1. `submit` puts the frame on a bounded queue; when the queue is full it waits at most
   `max_block_s` for room (0: not at all).
2. Still full: the result (without its images) is appended to the spill file, a JSON Lines file
   that `start()` replays into the store at the next start. Counted as `spilled`.
3. No spill file configured: the result is dropped, logged and counted as `dropped`.
A batch the database refuses twice is spilled the same way (counted in `failed_batches`).
`close()` stops taking new results, commits everything queued, then returns.

With a result journal attached (a station's store), a result the journal already holds is
never spilled or dropped: it is `deferred` to the journal, which the writer replays into the
store once a commit goes through again, at `close()` and at the next start. While the
database is away (a server down) the writer backs off: batches go straight to the journal
and it tries again after `retry_wait_s`, doubling up to `max_backoff_s`, also when no new
result arrives. The outage is logged once when it starts and once when it ends, and shows in
`stats` (`store_failing`, `last_error`).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cellinspect.entities import InspectedFrame, InspectionResult
from cellinspect.errors import CellInspectError
from cellinspect.storage.codec import result_from_dict
from cellinspect.storage.errors import StoreError
from cellinspect.storage.journal import ResultJournal, replay_journal
from cellinspect.storage.protocols import ResultStore

if TYPE_CHECKING:
    from cellinspect.settings import StationSettings

log = logging.getLogger(__name__)

Listener = Callable[[list[InspectionResult]], None]


class SubmitOutcome(enum.StrEnum):
    QUEUED = "queued"
    SPILLED = "spilled"
    DROPPED = "dropped"
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class WriterStats:
    submitted: int
    written: int
    duplicates: int
    spilled: int
    dropped: int
    failed_batches: int
    replayed: int
    batches: int
    queue_depth: int
    queue_size: int
    deferred: int = 0
    journal_pending: int = 0
    store_failing: bool = False
    last_error: str | None = None


class _Stop:
    """Queue sentinel: everything before it is written, then the thread ends."""


def make_writer(settings: StationSettings, store: ResultStore) -> AsyncResultWriter:
    """The writer as the station settings size it (here, not in the API: a station without
    its API would otherwise import FastAPI and every router to get one)."""
    return AsyncResultWriter(
        store,
        queue_size=settings.writer_queue_size,
        batch_size=settings.writer_batch_size,
        max_block_s=settings.writer_max_block_ms / 1000.0,
        spill_path=settings.resolved_spill_file,
    )


class AsyncResultWriter:
    """Commits InspectedFrames to a ResultStore in batches from one background thread."""

    def __init__(
        self,
        store: ResultStore,
        *,
        queue_size: int = 1024,
        batch_size: int = 64,
        max_block_s: float = 0.05,
        spill_path: Path | None = None,
        retry_wait_s: float = 0.2,
        max_backoff_s: float = 5.0,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError(
                f"queue_size and batch_size must be >= 1, got {queue_size}, {batch_size}"
            )
        if max_block_s < 0:
            raise ValueError(f"max_block_s must be >= 0, got {max_block_s}")
        self._store = store
        self._queue: queue.Queue[InspectedFrame | _Stop] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._max_block_s = max_block_s
        self._spill_path = spill_path
        self._retry_wait_s = retry_wait_s
        self._spill_lock = threading.Lock()
        self._done = threading.Condition()
        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._journal: ResultJournal | None = None
        self._catch_up = threading.Event()
        self._max_backoff_s = max(max_backoff_s, retry_wait_s)
        self._backoff_s = 0.0  # > 0: the store is failing; wait this long between tries
        self._next_try = 0.0  # monotonic time of the next try while failing
        self._last_error: str | None = None
        self._n = dict.fromkeys(
            (
                "submitted",
                "accepted",
                "finished",
                "written",
                "duplicates",
                "spilled",
                "dropped",
                "failed_batches",
                "replayed",
                "batches",
                "deferred",
            ),
            0,
        )

    # ------------------------------------------------------------------ lifecycle

    def attach_journal(self, journal: ResultJournal) -> None:
        """Feed the store from `journal` too: replayed at start, committed ids reported back."""
        if self._thread is not None:
            raise StoreError("attach the journal before the writer starts")
        self._journal = journal

    def start(self) -> None:
        """Replay the journal and a spill file left from before, then start the thread."""
        if self._thread is not None:
            return
        self._replay_journal("start")
        if self._spill_path is not None and self._spill_path.exists():
            try:
                self._count("replayed", replay_spill(self._store, self._spill_path))
            except CellInspectError as err:
                log.error("cannot replay %s yet (%s); the file is kept", self._spill_path, err)
        self._thread = threading.Thread(target=self._run, name="result-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting results and commit everything queued (within `timeout`)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._queue.put(_Stop())
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("result writer did not finish within %.1f s; queued results remain", timeout)
            return
        if self._replay_journal("stop"):
            self._store_back()

    def _replay_journal(self, when: str) -> bool:
        """Store what only the journal holds; False (and the journal kept) when that fails."""
        if self._journal is None or self._journal.pending == 0:
            return True
        try:
            self._count("replayed", replay_journal(self._store, self._journal))
        except CellInspectError as err:
            # While an outage is known and logged, a failed retry is no news.
            quiet = when == "catch-up" and self._backoff_s > 0
            (log.debug if quiet else log.error)(
                "journal: %d result(s) cannot be stored at %s (%s); they stay in %s",
                self._journal.pending,
                when,
                err,
                self._journal.folder,
            )
            return False
        return True

    def __enter__(self) -> AsyncResultWriter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(results)` after each commit with the newly stored results."""
        self._listeners.append(listener)

    def _count(self, key: str, n: int) -> None:
        with self._done:
            self._n[key] += n
            if key == "finished":
                self._done.notify_all()

    # ------------------------------------------------------------------ the caller's side

    def submit(self, frame: InspectedFrame) -> SubmitOutcome:
        """Hand a result over; blocks at most `max_block_s`, never raises for a full queue."""
        if self._closed:
            raise StoreError("result writer is closed")
        self._count("submitted", 1)
        try:
            if self._max_block_s > 0:
                self._queue.put(frame, timeout=self._max_block_s)
            else:
                self._queue.put_nowait(frame)
        except queue.Full:
            return self._overflow([frame.result], "queue full")
        self._count("accepted", 1)
        return SubmitOutcome.QUEUED

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is committed (or spilled); False on timeout."""
        with self._done:
            target = self._n["accepted"]
            return self._done.wait_for(lambda: self._n["finished"] >= target, timeout)

    @property
    def stats(self) -> WriterStats:
        with self._done:
            n = dict(self._n)
        return WriterStats(
            submitted=n["submitted"],
            written=n["written"],
            duplicates=n["duplicates"],
            spilled=n["spilled"],
            dropped=n["dropped"],
            failed_batches=n["failed_batches"],
            replayed=n["replayed"],
            batches=n["batches"],
            queue_depth=self._queue.qsize(),
            queue_size=self._queue.maxsize,
            deferred=n["deferred"],
            journal_pending=0 if self._journal is None else self._journal.pending,
            store_failing=self._backoff_s > 0,
            last_error=self._last_error,
        )

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=self._idle_wait())
            except queue.Empty:  # the store was failing and no result came: try it again
                self._retry_journal()
                continue
            if isinstance(first, _Stop):
                break
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    stop = True
                    break
                batch.append(item)
            self._write(batch)

    def _idle_wait(self) -> float | None:
        """How long the thread may wait for a result: until the next try while failing."""
        if self._backoff_s == 0 or not self._catch_up.is_set():
            return None
        return max(self._next_try - time.monotonic(), 0.01)

    def _retry_journal(self) -> None:
        if time.monotonic() < self._next_try:
            return
        if self._replay_journal("catch-up"):
            self._catch_up.clear()
            self._store_back()
        else:
            self._store_failed("journal catch-up failed")

    def _store_failed(self, error: str) -> None:
        """Log the start of an outage once; back off (doubling) before the next try."""
        self._last_error = error
        if self._backoff_s == 0:
            log.error(
                "result store unreachable (%s); results wait in the journal, retrying every "
                "%.1f-%.1f s",
                error,
                self._retry_wait_s,
                self._max_backoff_s,
            )
            self._backoff_s = max(self._retry_wait_s, 0.01)
        else:
            self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)
        self._next_try = time.monotonic() + self._backoff_s

    def _store_back(self) -> None:
        if self._backoff_s > 0:
            log.warning(
                "result store reachable again; %d result(s) still in the journal",
                0 if self._journal is None else self._journal.pending,
            )
        self._backoff_s = 0.0
        self._last_error = None

    def _write(self, batch: list[InspectedFrame]) -> None:
        backing_off = self._backoff_s > 0 and time.monotonic() < self._next_try
        if backing_off and self._defer_quietly(batch):
            self._count("finished", len(batch))
            return
        try:
            new_ids = self._commit(batch)
        except CellInspectError as err:
            self._count("failed_batches", 1)
            journal = self._journal
            if journal is not None and all(journal.holds(f.result.result_id) for f in batch):
                self._store_failed(str(err))
                self._defer_quietly(batch)
            else:
                log.error("writing %d results failed twice (%s); spilling them", len(batch), err)
                self._overflow([f.result for f in batch], f"database error: {err}")
            new_ids = []
        else:
            self._store_back()
            self._count("written", len(new_ids))
            self._count("duplicates", len(batch) - len(new_ids))
            self._count("batches", 1)
            if self._journal is not None:
                self._journal.committed(f.result.result_id for f in batch)
                if self._catch_up.is_set() and self._replay_journal("catch-up"):
                    self._catch_up.clear()
        self._count("finished", len(batch))
        if new_ids:
            by_id = {f.result.result_id: f.result for f in batch}
            self._notify([by_id[rid] for rid in new_ids])

    def _defer_quietly(self, batch: list[InspectedFrame]) -> bool:
        """Leave a batch to the journal without a log line each (the outage is logged once)."""
        journal = self._journal
        if journal is None or not all(journal.holds(f.result.result_id) for f in batch):
            return False
        self._count("deferred", len(batch))
        self._catch_up.set()
        return True

    def _commit(self, batch: list[InspectedFrame]) -> list[str]:
        try:
            return self._store.add_many(batch)
        except CellInspectError as err:
            if self._backoff_s > 0:  # known to be failing: one try, then back off again
                raise
            log.warning("writing %d results failed (%s); retrying once", len(batch), err)
            time.sleep(self._retry_wait_s)
            return self._store.add_many(batch)

    def _notify(self, results: list[InspectionResult]) -> None:
        for listener in self._listeners:
            try:
                listener(results)
            except Exception:
                log.exception("result listener %r failed", listener)

    def _overflow(self, results: list[InspectionResult], reason: str) -> SubmitOutcome:
        journal = self._journal
        if journal is not None and all(journal.holds(r.result_id) for r in results):
            self._count("deferred", len(results))
            self._catch_up.set()
            log.warning(
                "result writer: %s; %d result(s) left to the journal, stored once a commit "
                "goes through",
                reason,
                len(results),
            )
            return SubmitOutcome.DEFERRED
        if self._spill_path is None:
            self._count("dropped", len(results))
            log.error(
                "result writer: %s and no spill file; dropped %d results (%s), %d dropped so far",
                reason,
                len(results),
                ", ".join(r.result_id for r in results[:5]),
                self._n["dropped"],
            )
            return SubmitOutcome.DROPPED
        try:
            append_spill(self._spill_path, results, reason, self._spill_lock)
        except OSError as err:
            self._count("dropped", len(results))
            log.error(
                "result writer: cannot spill to %s (%s); dropped %d",
                self._spill_path,
                err,
                len(results),
            )
            return SubmitOutcome.DROPPED
        self._count("spilled", len(results))
        log.warning(
            "result writer: %s; spilled %d results to %s", reason, len(results), self._spill_path
        )
        return SubmitOutcome.SPILLED


def append_spill(
    path: Path, results: list[InspectionResult], reason: str, lock: threading.Lock
) -> None:
    """Append results as JSON Lines and fsync, so a spilled result survives a crash."""
    at = datetime.now(UTC).isoformat()
    lines = "".join(
        json.dumps({"reason": reason, "at": at, "result": r.to_dict()}, separators=(",", ":"))
        + "\n"
        for r in results
    )
    with lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())


def replay_spill(store: ResultStore, path: Path, batch_size: int = 200) -> int:
    """Import a spill file into the store, then remove it; bad lines go to `<path>.rejected`.

    Returns the number of results newly stored. Results already in the store are skipped, so
    a replay interrupted half-way can simply run again.
    """
    frames: list[InspectedFrame] = []
    rejected: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            frames.append(InspectedFrame(result_from_dict(json.loads(line)["result"])))
        except (json.JSONDecodeError, KeyError, TypeError, StoreError) as err:
            log.error("%s:%d: unreadable spilled result (%s); kept in .rejected", path, number, err)
            rejected.append(line)
    stored = 0
    for start in range(0, len(frames), batch_size):
        stored += len(store.add_many(frames[start : start + batch_size]))
    if rejected:
        bad = path.with_name(path.name + ".rejected")
        with bad.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(rejected) + "\n")
    path.unlink()
    log.info("replayed %d spilled results from %s", stored, path)
    return stored
