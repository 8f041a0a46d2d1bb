"""Test rig for store-and-forward: a `cellinspect hub` child process and central-store reads.

The hub runs as a real process on a free 127.0.0.1 port over a private PostgreSQL database;
stations' tokens come from the hub's users file, made before it starts.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from cellinspect.storage.models import ResultRow
from cellinspect.users import Role, add_user
from tests.servers.postgres import free_port

WAIT_S = 60.0
HUB_COMMAND = (sys.executable, "-m", "cellinspect", "hub")


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll `check` until true; a guard against hanging, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class HubProcess:
    """`cellinspect hub` as a child process; `token` is a station's (role operator)."""

    def __init__(self, data_dir: Path, db_url: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.token = add_user(data_dir / "users.yaml", "station", Role.OPERATOR)
        self.viewer_token = add_user(data_dir / "users.yaml", "viewer", Role.VIEWER)
        self.qa_token = add_user(data_dir / "users.yaml", "qa-anna", Role.QA)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (data_dir / "hub.log").open("w")
        env = {**os.environ, "CELLINSPECT_DB_URL": db_url, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*HUB_COMMAND, "--data-dir", str(data_dir), "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_for("the hub to answer", self._up)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"hub exited {self.proc.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def get(self, path: str) -> bytes:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.viewer_token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            body: bytes = reply.read()
            return body

    def review(self, result_id: str, body: bytes) -> int:
        """PUT a QA label on the hub as qa-anna; the HTTP status."""
        request = urllib.request.Request(
            f"{self.url}/results/{result_id}/review",
            data=body,
            method="PUT",
            headers={
                "Authorization": f"Bearer {self.qa_token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)

    def log(self) -> str:
        return (self.data_dir / "hub.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def central_rows(engine: Engine) -> list[tuple[str, str | None]]:
    """(result_id, station_id) of every central row, in central insertion order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(ResultRow.result_id, ResultRow.station_id).order_by(ResultRow.id)
        )
        return [(r[0], r[1]) for r in rows]


def central_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scrape(url: str) -> dict[str, float]:
    """GET /metrics of a station or hub, parsed by prometheus_client:
    `name{label="value"}` -> value."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    seen: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            seen[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return seen
