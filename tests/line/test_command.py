"""The CLI entry points: `line` on a recipe, and `plc-sim` against a separately served station."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.line.command import run_line, run_plc_sim, serve_station


@pytest.fixture
def recipe(tmp_path: Path, brightness_model: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"name: cmd-test\nmodels:\n  - name: brightness\n    path: {brightness_model}\n"
        "decision:\n  fail_safe: review\nruntime:\n  deadline_ms: 400\n",
        encoding="utf-8",
    )
    return path


def test_run_line_on_a_recipe_with_rendered_parts(recipe: Path) -> None:
    seen: list[int] = []
    report = run_line(
        recipe, parts=8, rate_per_min=200.0, seed=3, on_result=lambda r: seen.append(1)
    )
    assert report.gated == 8 and report.audit_ok, report.mismatches
    assert report.deadline_ms == 400.0
    assert len(seen) == 8
    truth_defects = sum(1 for a in report.audit if a.label != "good")
    assert report.correct_rejects + report.escapes == truth_defects


def test_plc_sim_drives_a_separately_served_station(recipe: Path) -> None:
    stop = threading.Event()
    bound: list[int] = []
    ready = threading.Event()

    def on_ready(port: int) -> None:
        bound.append(port)
        ready.set()

    server = threading.Thread(
        target=serve_station,
        kwargs={
            "recipe_path": recipe,
            "port": 0,
            "parts": 8,
            "seed": 5,
            "stop": stop,
            "ready": on_ready,
        },
        daemon=True,
    )
    server.start()
    try:
        assert ready.wait(30)
        counters = run_plc_sim(
            port=bound[0], parts=8, rate_per_min=200.0, seed=5, gate_travel_s=0.8
        )
    finally:
        stop.set()
        server.join(10)
    assert counters.gated == 8 and counters.results + counters.missed_triggers == 8
    assert counters.passed + counters.rejected == 8
    assert counters.unmatched_results == 0 and counters.tracking_errors == 0


@contextmanager
def _served_station(recipe: Path, parts: int, seed: int) -> Iterator[int]:
    """A station served in this process on a free Modbus port; yields the port."""
    stop, ready, bound = threading.Event(), threading.Event(), []

    def on_ready(port: int) -> None:
        bound.append(port)
        ready.set()

    kwargs = {"recipe_path": recipe, "port": 0, "parts": parts, "seed": seed}
    server = threading.Thread(
        target=serve_station, kwargs={**kwargs, "stop": stop, "ready": on_ready}, daemon=True
    )
    server.start()
    try:
        assert ready.wait(30)
        yield bound[0]
    finally:
        stop.set()
        server.join(10)


def test_plc_sim_command_ends_with_a_table_of_its_counters(recipe: Path) -> None:
    with _served_station(recipe, parts=6, seed=5) as port:
        args = ["plc-sim", "--port", str(port), "--parts", "6", "--rate", "200", "--seed", "5"]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "PlcCounters(" not in result.output  # no raw repr
    lines = result.output.splitlines()
    assert any("cellinspect plc-sim" in line for line in lines)
    row = next(line for line in lines if "parts at the gate / planned" in line)
    assert row.startswith("│") and row.rstrip().endswith("6 / 6 │")
    gate = next(line for line in lines if "gate: passed / rejected" in line)
    passed, rejected = (int(n) for n in gate.split("│")[2].split("/"))
    assert passed + rejected == 6
    for name in ("escapes (defective passed)", "missed triggers", "link errors", "PLC scans"):
        assert any(name in line for line in lines), name
