"""The station runtime in-process: the terminal status line, and the Modbus exposure warning."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.station.status import StatusReporter, status_line
from tests.conftest import ROOT
from tests.station.runner import write_station


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_status_line_is_redrawn_in_place_with_counts_and_links(tmp_path: Path) -> None:
    path = write_station(
        tmp_path / "station.yaml",
        source={"type": "folder", "path": str(ROOT / "sample_images"), "pattern": "*.bmp"},
        modbus={"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": None},
        store={"enabled": False},
    )
    runtime = StationRuntime(load_station(path), exit_when_source_ends=True)
    terminal = _Terminal()
    with runtime:
        reporter = StatusReporter(runtime, stream=terminal, every_s=0.05).start()
        assert runtime.wait(300), "the folder source should end"
    reporter.stop()  # as `run` does: after the ordered stop, so the last line is final
    text = terminal.getvalue()
    assert text.startswith("\r\x1b[2K") and text.endswith("\n")
    last = text.rsplit("\r\x1b[2K", 1)[1]
    expected = status_line(runtime.status()).split(" | ")
    shown = last.rstrip("\n").split(" | ")
    assert shown[:2] == expected[:2] and shown[3] == expected[3]  # [2]: rate, still moving
    assert "test-station r1 free_run | parts 40 " in last
    assert "modbus:closed" in last and "camera:" in last  # drawn after the ordered stop
    v = runtime.counts.verdicts
    assert sum(v.values()) == runtime.counts.parts == 40


def test_modbus_on_all_interfaces_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_station(
        tmp_path / "station.yaml",
        source={"type": "folder", "path": str(ROOT / "sample_images"), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        modbus={"enabled": True, "host": "0.0.0.0", "port": 0, "heartbeat_timeout_s": None},
        store={"enabled": False},
    )
    with caplog.at_level(logging.WARNING), StationRuntime(load_station(path)) as runtime:
        assert runtime.modbus_port
        snap = runtime.status()
    assert snap["links"]["modbus"]["address"] == f"0.0.0.0:{runtime.modbus_port}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no authentication" in w and "0.0.0.0" in w for w in warnings), warnings
