"""Watch a folder and yield each new image once it is completely written, and only once.

Polling, not inotify: it needs no extra dependency and works the same on network shares,
where change notifications are unreliable. Rules:

- A file is read when its size, mtime and inode have not changed for `settle_ms`. A file that
  changed while it was read goes back to waiting. A file moved into place by a rename (the
  safe way to publish a file) appears complete and is taken after one settle period.
- A settled file that does not decode (zero bytes, truncated, not yet an image) is taken as
  still being written: it stays pending, and is read again as soon as it changes. It becomes a
  FrameFailure only once it has stayed unchanged, and undecodable, for `give_up_ms` since its
  last change (never sooner than `settle_ms`). So a writer that stalls mid-file for longer
  than `settle_ms` but less than `give_up_ms` gives one result, when the file is complete.
- Each file is judged at most once: a path already yielded (as a frame or a failure) is not
  yielded again when its size or mtime change afterwards (a writer appending to or rewriting
  it in place). Only a *replaced* file, one with a new inode (written elsewhere and renamed
  over it, or deleted and created again), is a new part and is judged again. A file deleted
  and recreated within one poll interval can get the same inode number back from the file
  system and is then taken as the same file: publish new versions by rename.
- Files present at the start count as already judged unless `include_existing`.
- The idle timeout never ends the watch while a file is pending, so nothing is dropped at the
  end; bookkeeping only covers files still in the folder, so memory stays bounded when another
  process clears the folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cellinspect.entities import Frame, FrameFailure, SourceItem
from cellinspect.errors import FrameReadError, SourceError
from cellinspect.sources.base import SourceState
from cellinspect.sources.decode import decode_image_bytes
from cellinspect.sources.lifecycle import Lifecycle, LifecycleSource, StateListener
from cellinspect.sources.listing import (
    CATCH_ALL,
    check_folder,
    check_pattern,
    is_input_name,
    natural_key,
)

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]
"""(mtime_ns, size, inode) of a file version."""

_MAX_OPEN_RETRIES = 3


def _inode(sig: Signature) -> int:
    return sig[2]


@dataclass(slots=True)
class _Pending:
    signature: Signature
    since: float  # when the signature last changed (or the file was last found changing)
    open_failures: int = 0
    undecodable: str | None = None  # why the settled file at `signature` did not decode


class HotFolderSource(LifecycleSource):
    """Yields new files in `path` as they complete, until close() or `idle_timeout_s` idle.

    Idle means: no file appeared, changed or was yielded for `idle_timeout_s` seconds, and
    none is pending. If the folder cannot be listed (a network share went away) the source is
    RECONNECTING and keeps polling; after `max_scan_failures` failed scans in a row it is
    FAILED. See the module docstring for when a file is taken and when it is judged again.
    """

    def __init__(
        self,
        path: Path | str,
        pattern: str = CATCH_ALL,
        settle_ms: int = 200,
        poll_ms: int = 100,
        include_existing: bool = False,
        idle_timeout_s: float | None = None,
        name: str | None = None,
        max_scan_failures: int = 50,
        on_state: StateListener | None = None,
        give_up_ms: int = 3000,
    ) -> None:
        if settle_ms < 0 or poll_ms <= 0 or give_up_ms < 0:
            raise SourceError(
                f"hot folder {path}: need settle_ms >= 0, poll_ms > 0 and give_up_ms >= 0"
            )
        if idle_timeout_s is not None and idle_timeout_s <= 0:
            raise SourceError(f"hot folder {path}: idle_timeout_s must be > 0 or None")
        self.path = check_folder(Path(path))
        self.pattern = check_pattern(pattern)
        self.name = name or f"hot_folder:{self.path}"
        self._settle_s = settle_ms / 1000.0
        self._poll_s = poll_ms / 1000.0
        self._give_up_s = max(give_up_ms, settle_ms) / 1000.0
        self._idle_timeout_s = idle_timeout_s
        self._max_scan_failures = max_scan_failures
        self._life = Lifecycle(self.name, on_state)
        self._done: dict[Path, int] = {}  # path -> inode of the file judged there
        if not include_existing:
            try:
                self._done = {p: _inode(sig) for p, sig in self._scan().items()}
            except OSError as err:
                raise SourceError(f"cannot list folder {self.path}: {err.strerror or err}") from err

    def _scan(self) -> dict[Path, Signature]:
        """Current input files and their signatures; raises OSError if the folder is gone."""
        found: dict[Path, Signature] = {}
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not is_input_name(entry.name, self.pattern):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                    inode = entry.inode()
                except OSError:  # vanished between listing and stat: not there
                    continue
                found[Path(entry.path)] = (st.st_mtime_ns, st.st_size, inode)
        return found

    def _due(self, waiting: _Pending, now: float) -> bool:
        """Whether a pending file with an unchanged signature should be read now."""
        wait_s = self._settle_s if waiting.undecodable is None else self._give_up_s
        return now - waiting.since >= wait_s

    def _run(self) -> Iterator[SourceItem]:
        life = self._life
        if not life.move(SourceState.OPEN, f"watching {self.path}"):
            return
        pending: dict[Path, _Pending] = {}
        frame_id = 0
        scan_failures = 0
        last_activity = time.monotonic()
        try:
            while not life.stopping:
                try:
                    listing = self._scan()
                except OSError as err:
                    scan_failures += 1
                    why = f"cannot list {self.path}: {err.strerror or err}"
                    if scan_failures >= self._max_scan_failures:
                        life.fail(f"{why} ({scan_failures} scans in a row)")
                        return
                    life.move(SourceState.RECONNECTING, why)
                    life.wait(self._poll_s)
                    continue
                if scan_failures:
                    scan_failures = 0
                    life.move(SourceState.OPEN, f"{self.path} is back")
                now = time.monotonic()
                self._done = {p: i for p, i in self._done.items() if p in listing}
                for gone in [p for p in pending if p not in listing]:
                    del pending[gone]
                ready: list[Path] = []
                for path, sig in listing.items():
                    if self._done.get(path) == _inode(sig):
                        continue  # judged already; changed in place is not a new part
                    waiting = pending.get(path)
                    if waiting is None or waiting.signature != sig:
                        pending[path] = _Pending(sig, now)
                        last_activity = now
                    elif self._due(waiting, now):
                        ready.append(path)
                ready.sort(key=lambda p: (listing[p][0], natural_key(p.name)))
                for path in ready:
                    if life.stopping:
                        return
                    item = self._take(path, pending[path], frame_id)
                    if item is None:
                        continue
                    yield item
                    frame_id += 1
                    self._done[path] = _inode(pending.pop(path).signature)
                    last_activity = time.monotonic()
                if pending:
                    last_activity = max(last_activity, time.monotonic())
                idle_for = time.monotonic() - last_activity
                if self._idle_timeout_s is not None and idle_for >= self._idle_timeout_s:
                    life.close(f"idle for {idle_for:.1f} s")
                    return
                life.wait(self._poll_s)
        finally:
            life.move(SourceState.CLOSED, "stopped watching")

    def _take(self, path: Path, waiting: _Pending, frame_id: int) -> SourceItem | None:
        """Read a settled file; None when it turns out not to be finished (or is gone)."""
        captured_mono, captured_wall = time.monotonic(), datetime.now(UTC)
        try:
            with path.open("rb") as fh:
                data = fh.read()
                st = os.fstat(fh.fileno())
        except FileNotFoundError:
            log.warning("source %s: %s vanished before it could be read", self.name, path)
            waiting.since = time.monotonic()  # forgotten on the next scan if really gone
            return None
        except OSError as err:  # e.g. still locked by its writer (Windows shares)
            waiting.open_failures += 1
            if waiting.open_failures < _MAX_OPEN_RETRIES:
                waiting.since = time.monotonic()
                return None
            return self._failure(
                path, frame_id, f"{path}: cannot open ({err.strerror or err})", captured_mono
            )
        current: Signature = (st.st_mtime_ns, st.st_size, st.st_ino or waiting.signature[2])
        if current != waiting.signature or len(data) != st.st_size:
            waiting.signature, waiting.since = current, time.monotonic()
            waiting.undecodable = None
            return None  # still being written: wait for it to settle again
        try:
            if not data:
                raise FrameReadError(f"{path}: zero-byte file")
            image = decode_image_bytes(data, str(path))
        except FrameReadError as err:
            if waiting.undecodable is None and self._give_up_s > self._settle_s:
                # Maybe a writer that stalled mid-file: wait for a change, or for give_up_ms.
                waiting.undecodable = str(err)
                log.info("source %s: %s not decodable yet, waiting: %s", self.name, path, err)
                return None
            return self._failure(path, frame_id, str(err), captured_mono)
        return Frame(
            image=image,
            frame_id=frame_id,
            source=self.name,
            captured_mono=captured_mono,
            captured_wall=captured_wall,
            path=str(path),
        )

    def _failure(self, path: Path, frame_id: int, reason: str, mono: float) -> FrameFailure:
        log.warning("source %s: frame %d failed: %s", self.name, frame_id, reason)
        return FrameFailure(
            frame_id=frame_id, source=self.name, reason=reason, captured_mono=mono, path=str(path)
        )
