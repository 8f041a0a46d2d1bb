"""The CSV result file names the station that judged each part (empty when none did)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.runtime.outputs import CSV_COLUMNS, ResultFiles, csv_row
from cellinspect.storage.synthetic import synthetic_result


def test_csv_row_has_every_column_and_the_station() -> None:
    result = replace(synthetic_result(1, Verdict.FAIL, defect_class="dent"), station_id="st-07")
    row = csv_row(InspectedFrame(result))
    assert tuple(row) == CSV_COLUMNS
    assert row["station_id"] == "st-07"
    assert csv_row(InspectedFrame(synthetic_result(2)))["station_id"] == ""


def test_csv_file_keeps_the_station(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    with ResultFiles(csv_path=path) as files:
        files.write(InspectedFrame(replace(synthetic_result(1), station_id="st-07")))
        files.write(InspectedFrame(synthetic_result(2)))
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["station_id"] for r in rows] == ["st-07", ""]
