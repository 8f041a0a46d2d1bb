"""The store benchmark runs end to end (a short run; its figures are reported, not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.storage.bench import main, run_bench


def test_short_bench_run_accounts_for_every_result(tmp_path: Path) -> None:
    report = run_bench(tmp_path / "data", seconds=0.3, image_size=32, rate=200.0, pool=8)
    assert report.submitted > 0
    assert report.written + report.spilled + report.dropped == report.submitted
    assert report.api_requests > 0
    assert report.api_errors == 0
    assert report.api_p99_ms is not None and report.api_p50_ms is not None
    assert report.api_p99_ms >= report.api_p50_ms
    text = "\n".join(report.lines())
    assert "results/s" in text and "GET /results under load" in text


def test_bench_entry_point_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--seconds", "0.2", "--size", "16", "--rate", "50", "--dir", str(tmp_path), "--json"])
        == 0
    )
    out = capsys.readouterr().out
    assert '"results_per_s"' in out
