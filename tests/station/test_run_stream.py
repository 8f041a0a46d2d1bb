"""`cellinspect run` on a live MJPEG-over-HTTP stream that goes away and comes back.

A real ffmpeg serves one sample image as an endless MJPEG stream (`-f mpjpeg -listen 1`) on a
free loopback port; a real `cellinspect run` subprocess reads it in free run through OpenCV's
FFmpeg backend. Mid-run the server is killed: the station must record the outage as fail-safe
results (the failed grab, then one per failed reconnect attempt) instead of a silent gap, show
the camera as reconnecting, and pick the stream up again once ffmpeg listens on the same port.

ffmpeg's `-listen 1` HTTP server serves exactly one client and exits when that client goes,
so "restart" is a new ffmpeg process on the same URL; nothing may connect to it before the
station (a probe connection would be its one client), which is why readiness is read from the
kernel's socket table instead of by connecting.

Verdicts are not asserted for the stream's frames: the shipped detector is JPEG-sensitive
(docs/benchmarks/jpeg-quality.md), so a good part over a lossy stream may be REVIEW. What is
asserted is which results carry an error, their order, and that none of those is PASS.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cellinspect.entities import InspectionResult, Verdict
from tests.conftest import ROOT
from tests.station.runner import StationProcess, stored_results, write_station

SAMPLE = ROOT / "sample_images" / "part_0001_good.bmp"
FPS = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serving(port: int) -> bool | None:
    """Whether 127.0.0.1:`port` listens or has taken its client (None: no /proc/net/tcp).

    ffmpeg's one-client server closes its listening socket once it accepts, and the station
    may connect between two looks, so an established connection on the port counts too.
    """
    try:
        lines = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    except OSError:
        return None
    wanted = f"0100007F:{port:04X}"
    listen, established = "0A", "01"
    return any(
        fields[1] == wanted and fields[3] in (listen, established)
        for fields in (line.split() for line in lines)
    )


class MjpegServer:
    """ffmpeg looping one image as MJPEG over HTTP at `url`, for a single client."""

    def __init__(self, port: int, log_file: Path) -> None:
        ffmpeg = shutil.which("ffmpeg")
        assert ffmpeg is not None, "ffmpeg not installed (apt-get install ffmpeg)"
        self.url = f"http://127.0.0.1:{port}/feed"
        self.port = port
        self.log_file = log_file
        self.cmd = [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "warning",
            "-re", "-loop", "1", "-framerate", str(FPS), "-i", str(SAMPLE),
            "-f", "mpjpeg", "-q:v", "2", "-listen", "1", self.url,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start ffmpeg and return once it serves (without connecting to it)."""
        assert self.proc is None or self.proc.poll() is not None
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        end = time.monotonic() + timeout
        while True:
            up = _serving(self.port)
            if up is None:  # no socket table to read: give ffmpeg a moment instead
                time.sleep(1.0)
                return
            if up:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"ffmpeg exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > end:
                raise TimeoutError(f"ffmpeg not serving after {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")[-4000:]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MjpegServer]:
    srv = MjpegServer(_free_port(), tmp_path / "ffmpeg.log")
    try:
        yield srv
    finally:
        srv.kill()


def _wait_status(
    proc: StationProcess, ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The first status snapshot (from now on) for which `ok` holds."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no status with {what} in {timeout} s\n{proc.log_text()}")
        status = proc.wait_for("status", timeout=left).get("status")
        if isinstance(status, dict) and ok(status):
            return status


def _camera_state(status: dict[str, Any]) -> str:
    return str(status["links"]["camera"]["state"])


def _stream_station(tmp_path: Path, url: str) -> Path:
    return write_station(
        tmp_path / "station.yaml",
        source={"type": "stream", "url": url, "reconnect_initial_s": 0.2, "reconnect_max_s": 0.5},
        trigger={"mode": "free_run"},
    )


def _stored(tmp_path: Path, proc: StationProcess, url: str) -> list[InspectionResult]:
    """The stored results in the order the source yielded them, checked for what always holds.

    Every result carries the station id and the stream's name, none with an error is PASS,
    the store holds what the station counted, and every item the source yielded became one
    result (frame ids 0..n-1, none skipped).
    """
    stopped = proc.stopped()["status"]
    results = sorted(
        (s.result for s in stored_results(tmp_path / "data")), key=lambda r: r.frame_id
    )
    assert len(results) == stopped["parts"], proc.log_text()
    assert stopped["errors"] == sum(r.error is not None for r in results)
    assert stopped["links"]["camera"]["state"] == "closed"
    assert all(r.station_id == "test-station" for r in results)
    assert all(r.source == f"stream:{url}" for r in results)
    assert not [r for r in results if r.error is not None and r.verdict is Verdict.PASS]
    assert [r.frame_id for r in results] == list(range(len(results)))
    return results


def _flags(results: list[InspectionResult]) -> str:
    """One character per result: E with an error (fail-safe), . judged from a frame."""
    return "".join("E" if r.error is not None else "." for r in results)


def test_stream_outage_is_recorded_and_the_station_reconnects(
    tmp_path: Path, server: MjpegServer
) -> None:
    station = _stream_station(tmp_path, server.url)
    server.start()
    with StationProcess(station) as proc:
        running = proc.wait_running()
        assert running["trigger"] == "free_run"
        assert running["links"]["camera"]["name"] == f"stream:{server.url}"

        # Frames flow: parts are judged without errors and the camera is open.
        before = _wait_status(
            proc,
            lambda s: s["parts"] >= 4 and _camera_state(s) == "open",
            "4 parts from an open stream",
        )
        assert before["errors"] == 0, proc.log_text()

        # The server dies: the failed grab and each failed reconnect attempt are results.
        server.kill()
        outage = _wait_status(
            proc,
            lambda s: _camera_state(s) == "reconnecting" and s["errors"] >= 3,
            "the camera reconnecting and 3 fail-safe results",
        )
        assert "cannot open" in (outage["links"]["camera"]["last_error"] or "")

        # The server comes back on the same URL: the station picks the stream up again.
        server.start()
        good_before = outage["parts"] - outage["errors"]
        _wait_status(
            proc,
            lambda s: _camera_state(s) == "open" and s["parts"] - s["errors"] >= good_before + 4,
            "4 more judged parts from the reopened stream",
        )
        assert proc.stop(signal.SIGTERM, timeout=60) == 0, proc.log_text()
        assert proc.other_lines == [], "stderr must be JSON lines only"

    results = _stored(tmp_path, proc, server.url)
    # Good frames, then one unbroken run of fail-safe results, then good frames again.
    flags = _flags(results)
    first, last = flags.index("E"), flags.rindex("E")
    assert first >= 4 and len(results) - last - 1 >= 4, flags
    assert flags[first : last + 1] == "E" * (last + 1 - first), flags
    gap = [str(r.error) for r in results[first : last + 1]]
    assert "grab failed" in gap[0], gap[0]
    attempts = gap[1:]
    assert len(attempts) >= 2, gap
    for number, reason in enumerate(attempts, start=1):
        assert f"stream {server.url}: reconnect attempt {number} failed" in reason, reason


def test_a_stream_that_is_not_up_yet_is_fail_safe_until_it_comes(
    tmp_path: Path, server: MjpegServer
) -> None:
    station = _stream_station(tmp_path, server.url)
    with StationProcess(station) as proc:
        proc.wait_running()
        waiting = _wait_status(
            proc,
            lambda s: _camera_state(s) == "reconnecting" and s["errors"] >= 2,
            "the camera reconnecting and 2 fail-safe results",
        )
        assert waiting["parts"] == waiting["errors"]

        server.start()
        _wait_status(
            proc,
            lambda s: _camera_state(s) == "open" and s["parts"] - s["errors"] >= 3,
            "3 judged parts once the stream is up",
        )
        assert proc.stop(signal.SIGTERM, timeout=60) == 0, proc.log_text()
        assert proc.other_lines == [], "stderr must be JSON lines only"

    results = _stored(tmp_path, proc, server.url)
    flags = _flags(results)
    gap = len(flags) - len(flags.lstrip("E"))
    assert gap >= 2 and flags[gap:] == "." * (len(flags) - gap), flags
    reasons = [str(r.error) for r in results[:gap]]
    assert f"stream {server.url}: connect failed" in reasons[0], reasons[0]
    for number, reason in enumerate(reasons[1:], start=1):
        assert f"stream {server.url}: reconnect attempt {number} failed" in reason, reason
