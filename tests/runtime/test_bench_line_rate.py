"""`cellinspect bench --interval`: bare session.run, the loop and line rate, side by side."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.config import load_recipe
from cellinspect.runtime.bench import run_line_rate_bench
from cellinspect.runtime.inspector import Inspector
from tests.conftest import ROOT

RECIPE = ROOT / "recipes" / "flange.yaml"
SAMPLES = sorted((ROOT / "sample_images").glob("*.bmp"))[:3]


def test_line_rate_bench_times_each_part_three_ways(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    good = [station["images"] / "a_good.png", station["images"] / "e_good.png"]
    started = time.perf_counter()
    report = run_line_rate_bench(inspector, good, interval_s=0.05, repeats=2)
    # the line-rate blocks wait for their slots: 2 blocks x 2 parts x 50 ms at least
    assert time.perf_counter() - started >= 0.2
    for values in (report.bare_ms, report.loop_ms, report.line_ms, report.line_cpu_ms):
        assert len(values) == 4
    assert all(v > 0 for v in report.bare_ms + report.loop_ms + report.line_ms)
    assert report.trunks == []  # one model: nothing to share
    data = report.to_dict()
    for key in ("bare_ms", "loop_ms", "line_ms"):
        figures = data[key]
        assert isinstance(figures, dict)
        assert figures["p99"] >= figures["p50"] > 0
        assert math.isclose(figures["p99_over_p50"], figures["p99"] / figures["p50"])
    assert data["interval_s"] == 0.05
    ratio = data["loop_over_bare"]
    assert ratio == report.figures(report.loop_ms)["p50"] / report.figures(report.bare_ms)["p50"]


def test_shipped_recipe_bench_runs_its_shared_trunk() -> None:
    recipe = load_recipe(RECIPE)
    recipe = recipe.model_copy(
        update={"runtime": recipe.runtime.model_copy(update={"warmup_runs": 0})}
    )
    inspector = Inspector.from_recipe(RECIPE, recipe=recipe)
    report = run_line_rate_bench(inspector, SAMPLES, interval_s=0.01, repeats=1)
    assert report.trunks == ["flange-anomaly+flange-classifier"]
    assert len(report.bare_ms) == len(report.loop_ms) == len(report.line_ms) == len(SAMPLES)


def test_cli_bench_interval_prints_and_writes_the_three_rows(
    station: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "line-rate.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(station["images"] / "a_good.png"),
            "--recipe",
            str(station["recipe"]),
            "--repeats",
            "1",
            "--interval",
            "0.02",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "inspector, parts 0.02 s apart" in result.output
    assert "bare session.run" in result.output
    data = json.loads(out.read_text())
    assert data["images"] == 1 and data["repeats"] == 1
    assert {"bare_ms", "loop_ms", "line_ms", "line_over_bare", "line_over_loop"} <= data.keys()
