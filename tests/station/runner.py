"""Run `cellinspect run` as a real subprocess and read what it says and stores.

The station writes one JSON object per log line when stderr is not a terminal; the line with
`event: running` carries the status snapshot, from which a test reads the ports the station
bound (station files in tests ask for port 0). The store is read back afterwards from the
station's own SQLite database.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from cellinspect.settings import load_settings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ResultFilter, StoredResult
from tests.conftest import ROOT


def write_station(path: Path, **fields: Any) -> Path:
    """A station file with test defaults (free ports, store beside the file) and `fields`."""
    data: dict[str, Any] = {
        "station_id": "test-station",
        "line": "test-line",
        "recipes": {1: str(ROOT / "recipes" / "flange.yaml")},
        "active_recipe": 1,
        "api": {"enabled": False},
        "store": {"data_dir": str(path.parent / "data")},
        "status_every_s": 0.5,
    }
    data.update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class StationProcess:
    """A `cellinspect run` child process with its stderr parsed into JSON log records."""

    def __init__(
        self,
        station_file: Path,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """`preexec_fn` runs in the child before exec (a resource limit, for example)."""
        self.station_file = station_file
        self.records: list[dict[str, Any]] = []
        self.other_lines: list[str] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cellinspect", "run", str(station_file), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=str(station_file.parent),
            preexec_fn=preexec_fn,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.running: dict[str, Any] | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            try:
                record = json.loads(line)
            except ValueError:
                self.other_lines.append(line)
                continue
            if isinstance(record, dict):
                self.records.append(record)
                self._lines.put(record)
        self._lines.put(None)

    def wait_for(
        self, event: str | None = None, timeout: float = 120.0, **match: Any
    ) -> dict[str, Any]:
        """The first log record (from now on) with this `event` or msg fragment in `match`."""
        end = time.monotonic() + timeout
        fragment = match.get("msg")
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no {event or fragment!r} record in {timeout} s\n{self.log_text()}"
                )
            try:
                record = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if record is None:
                code = self.proc.wait()
                what = event or fragment
                raise RuntimeError(f"station exited ({code}) before {what!r}\n{self.log_text()}")
            if event is not None and record.get("event") == event:
                return record
            if fragment is not None and fragment in str(record.get("msg", "")):
                return record

    def wait_running(self, timeout: float = 120.0) -> dict[str, Any]:
        """Block until the station announces it runs; returns its status snapshot."""
        self.running = self.wait_for("running", timeout)["status"]
        return self.running

    def port(self, link: str) -> int:
        """The port a link bound (modbus, opcua, api), read from the running announcement."""
        assert self.running is not None, "call wait_running() first"
        info = self.running["links"][link]
        address = info.get("address") or info.get("endpoint") or info.get("url")
        return int(str(address).rstrip("/").rsplit(":", 1)[1].split("/")[0])

    def wait_parts(self, parts: int, timeout: float = 120.0) -> dict[str, Any]:
        """Block until a status record shows at least `parts` parts; returns that status."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            record = self.wait_for("status", timeout=max(end - time.monotonic(), 0.1))
            status = record.get("status")
            if isinstance(status, dict) and status.get("parts", 0) >= parts:
                return status
        raise TimeoutError(f"fewer than {parts} parts in {timeout} s\n{self.log_text()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 120.0) -> int:
        """Send `sig` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 120.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(timeout=10)
        return code

    def stopped(self) -> dict[str, Any]:
        """The final `event: stopped` record (after exit)."""
        for record in self.records:
            if record.get("event") == "stopped":
                return record
        raise AssertionError(f"no 'stopped' record\n{self.log_text()}")

    def log_text(self) -> str:
        lines = [json.dumps(r) for r in self.records[-40:]] + self.other_lines[-40:]
        return "\n".join(lines)

    def __enter__(self) -> StationProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stored_results(data_dir: Path, station_id: str | None = None) -> list[StoredResult]:
    """Every result in a station's store (oldest first), optionally of one station."""
    store = open_store(load_settings(None, data_dir=data_dir))
    try:
        out: list[StoredResult] = []
        cursor: str | None = None
        while True:
            page = store.query(ResultFilter(station_id=station_id), limit=500, cursor=cursor)
            out.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return list(reversed(out))
    finally:
        store.close()


def iter_statuses(proc: StationProcess) -> Iterator[dict[str, Any]]:
    for record in proc.records:
        status = record.get("status")
        if isinstance(status, dict):
            yield status
