"""The station's result journal: a verdict is on disk before any output acts on it.

Why: the database can stall (a lock, a server away) and the writer's queue lives in memory,
so a kill -9 lost verdicts the PLC had already read. The station therefore appends every
result as one JSON line to the current journal segment and fsyncs it *before* it posts the
verdict to the PLC, OPC UA, the robot or an API caller. The database is fed from the same
results (the writer's queue is the fast path); at every start the journal is replayed into
the store, and since `result_id` is unique there, a result lands exactly once however often
the replay runs.

Segments (`results-00000001.jsonl`, ...) rotate at `segment_bytes`; a closed segment whose
results are all committed is deleted. A torn last line (the process died inside a write,
before the fsync returned) was never acted on and is skipped on replay; a line that cannot be
read anywhere else goes to `<segment>.rejected` and is logged.

When a write or fsync fails (disk full, file too large, I/O error), `append` raises
`JournalError`; the station then refuses to act on the verdict and goes to its safe state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from cellinspect.entities import InspectedFrame, InspectionResult
from cellinspect.storage.codec import result_from_dict
from cellinspect.storage.errors import StoreError
from cellinspect.storage.protocols import ResultStore

log = logging.getLogger(__name__)

SEGMENT_GLOB = "results-*.jsonl"
PROBE_BYTES = 4096  # about one result line: what must fit before the station judges a part


class JournalError(StoreError):
    """A result could not be made durable in the journal (disk full, I/O error)."""


def _segment_number(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _fsync_dir(folder: Path) -> None:
    """Make a created or removed file name durable, not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ResultJournal:
    """Append-only fsynced JSON Lines segments under `folder`; thread-safe."""

    def __init__(self, folder: Path, segment_bytes: int = 4 * 1024 * 1024) -> None:
        if segment_bytes < 1024:
            raise ValueError(f"segment_bytes must be >= 1024, got {segment_bytes}")
        self.folder = folder
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._opened = False
        self._reported: set[Path] = set()
        self._segment = 0
        self._size = 0
        self._outstanding: dict[int, set[str]] = {}  # segment -> ids not yet committed
        self._where: dict[str, set[int]] = {}  # id -> segments holding it
        self.appended = 0
        self.failures = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Index the segments left from before (all outstanding) and start a new segment."""
        with self._lock:
            if self._opened:
                return
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise JournalError(
                    f"{self.folder}: cannot create the journal folder: {err}"
                ) from err
            for path in self._segments():
                ids = {r.result_id for r in self._read(path)}
                number = _segment_number(path)
                self._segment = max(self._segment, number)
                if not ids:
                    self._remove(path)
                    continue
                self._outstanding[number] = ids
                for rid in ids:
                    self._where.setdefault(rid, set()).add(number)
            self._opened = True
            self._start_segment()

    def close(self) -> None:
        """Close the current segment; delete it when everything in it is committed."""
        with self._lock:
            self._opened = False
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            self._drop_if_done(self._segment, force_closed=True)

    # ------------------------------------------------------------------ writing

    def append(self, result: InspectionResult) -> None:
        """Write one result and fsync; returns only once it is durable (JournalError else)."""
        line = json.dumps(result.to_dict(), separators=(",", ":")) + "\n"
        with self._lock:
            self._write(line.encode("utf-8"))
            self._outstanding.setdefault(self._segment, set()).add(result.result_id)
            self._where.setdefault(result.result_id, set()).add(self._segment)
            self.appended += 1

    def probe(self) -> None:
        """Can the journal take a result right now? Writes a blank result-sized line, fsyncs,
        then cuts it off again (JournalError when it cannot)."""
        with self._lock:
            before = self._size
            self._write(b" " * (PROBE_BYTES - 1) + b"\n")
            assert self._fd is not None
            try:
                os.ftruncate(self._fd, before)
                self._size = before
            except OSError:  # a blank line stays: replay skips it
                log.debug("journal: cannot cut the probe line off", exc_info=True)

    def _write(self, data: bytes) -> None:
        if not self._opened:
            raise JournalError(f"{self.folder}: the journal is not open")
        if self._fd is None:  # the last write failed: go on in a fresh segment
            self._start_segment()
        elif self._size > 0 and self._size + len(data) > self.segment_bytes:
            self._rotate()
        assert self._fd is not None
        path = self._path(self._segment)
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError as err:
            self.failures += 1
            self.last_error = f"{path}: cannot write the result journal: {err}"
            self._abandon_segment()
            raise JournalError(self.last_error) from err
        self._size += len(data)
        self.last_error = None

    def _abandon_segment(self) -> None:
        """After a failed write: cut the half-written line off, or else close the segment.

        A segment cut back to whole lines takes the next write; one that could not be cut is
        closed and the next write starts a new segment, so a torn line never runs into the
        next result's line.
        """
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            return
        except OSError:
            log.debug("journal: cannot truncate %s back", self._path(self._segment), exc_info=True)
        try:
            os.close(self._fd)
        except OSError:
            log.debug("journal: closing %s failed", self._path(self._segment), exc_info=True)
        self._fd = None

    def _rotate(self) -> None:
        assert self._fd is not None
        old = self._segment
        os.close(self._fd)
        self._fd = None
        self._drop_if_done(old, force_closed=True)
        self._start_segment()

    def _start_segment(self) -> None:
        self._segment += 1
        path = self._path(self._segment)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fsync_dir(self.folder)
        except OSError as err:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.failures += 1
            self.last_error = f"{path}: cannot start a journal segment: {err}"
            raise JournalError(self.last_error) from err
        self._size = 0

    # ------------------------------------------------------------------ committing

    def committed(self, result_ids: Iterable[str]) -> None:
        """These results are in the store: closed segments with nothing left go away."""
        with self._lock:
            touched: set[int] = set()
            for rid in result_ids:
                for number in self._where.pop(rid, ()):
                    self._outstanding.get(number, set()).discard(rid)
                    touched.add(number)
            for number in touched:
                self._drop_if_done(number)

    def holds(self, result_id: str) -> bool:
        """True while the result is journaled and not yet committed to the store."""
        with self._lock:
            return result_id in self._where

    @property
    def pending(self) -> int:
        """Results journaled but not yet committed to the store."""
        with self._lock:
            return len(self._where)

    def pending_results(self) -> list[InspectionResult]:
        """Every journaled result not yet committed, the last line of each id winning."""
        with self._lock:
            numbers = sorted(n for n, ids in self._outstanding.items() if ids)
            wanted = set(self._where)
        latest: dict[str, InspectionResult] = {}
        for number in numbers:
            for result in self._read(self._path(number)):
                if result.result_id in wanted:
                    latest[result.result_id] = result
        return list(latest.values())

    def _drop_if_done(self, number: int, force_closed: bool = False) -> None:
        if self._outstanding.get(number):
            return
        if number == self._segment and self._fd is not None and not force_closed:
            return  # the current segment stays until it rotates
        self._outstanding.pop(number, None)
        self._remove(self._path(number))

    def _remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            _fsync_dir(self.folder)
        except OSError as err:
            log.warning("journal: cannot remove the committed segment %s (%s)", path, err)

    def _read(self, path: Path) -> list[InspectionResult]:
        """A segment's results; its torn or bad lines are reported once per process."""
        report = path not in self._reported
        self._reported.add(path)
        return _read_segment(path, report)

    def _path(self, number: int) -> Path:
        return self.folder / f"results-{number:08d}.jsonl"

    def _segments(self) -> list[Path]:
        return sorted(self.folder.glob(SEGMENT_GLOB), key=_segment_number)


def _read_segment(path: Path, report: bool = True) -> list[InspectionResult]:
    """Results of one segment in order; a torn last line is skipped, bad lines set aside."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = raw.split(b"\n")
    torn = lines.pop() if lines else b""  # after the last newline: b"" or a torn write
    if torn.strip() and report:
        log.warning("%s: skipped a torn last line (the write never completed)", path)
    out: list[InspectionResult] = []
    rejected: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(result_from_dict(json.loads(line)))
        except (ValueError, TypeError, StoreError) as err:
            if report:
                log.error(
                    "%s:%d: unreadable journal line (%s); kept in .rejected", path, number, err
                )
            rejected.append(line)
    if rejected and report:
        with path.with_name(path.name + ".rejected").open("ab") as fh:
            fh.write(b"\n".join(rejected) + b"\n")
    return out


def replay_journal(store: ResultStore, journal: ResultJournal, batch_size: int = 200) -> int:
    """Store every journaled result not yet committed; returns how many were new.

    The one recovery path, run at every start (and at a clean stop for results the writer
    had to leave to the journal). Results already stored are skipped by result_id, so an
    interrupted replay simply runs again.
    """
    results = journal.pending_results()
    stored = 0
    for start in range(0, len(results), batch_size):
        batch = results[start : start + batch_size]
        stored += len(store.add_many([InspectedFrame(_replayed(store, r)) for r in batch]))
        journal.committed(r.result_id for r in batch)
    if results:
        log.info(
            "journal: %d result(s) replayed into the store, %d already there",
            stored,
            len(results) - stored,
        )
    return stored


REPLAYED_NO_IMAGES = "images not kept: stored from the journal (the pictures were not written)"


def _replayed(store: ResultStore, result: InspectionResult) -> InspectionResult:
    """A journaled result as stored by replay: the journal holds no pictures, so say why.

    Only where the store's retention would have kept them; a reviewer looking for the image of
    a rejected part then reads why there is none instead of guessing.
    """
    retention = getattr(store, "retention", None)
    if retention is None or not retention.keeps_images(result):
        return result
    if REPLAYED_NO_IMAGES in result.reasons:
        return result
    return dataclasses.replace(result, reasons=(*result.reasons, REPLAYED_NO_IMAGES))
