"""`cellinspect inspect` and `cellinspect bench` end to end on a small real station."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.entities import Frame, Verdict
from cellinspect.runtime.inspector import Inspector
from cellinspect.runtime.outputs import VERDICT_BGR, banner_height, banner_text
from tests.conftest import ROOT


def test_inspect_writes_results_and_summary(station: dict[str, Path], tmp_path: Path) -> None:
    jsonl, csv_path, overlays = tmp_path / "r.jsonl", tmp_path / "r.csv", tmp_path / "ov"
    result = CliRunner().invoke(
        app,
        [
            "inspect",
            str(station["images"]),
            "--recipe",
            str(station["recipe"]),
            "--jsonl",
            str(jsonl),
            "--csv",
            str(csv_path),
            "--overlays",
            str(overlays),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Inspection summary" in result.output
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["pass", "fail", "fail", "fail", "pass"]
    assert rows[2]["error"] and "zero-byte" in rows[2]["error"]
    with csv_path.open() as fh:
        assert len(list(csv.DictReader(fh))) == 5
    written = sorted(p.name for p in overlays.iterdir())
    assert len(written) == 1 and written[0].startswith("b_scratch_fail_")


def test_inspect_with_missing_path_is_a_clear_error(station: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        app, ["inspect", "/nonexistent/folder", "--recipe", str(station["recipe"])]
    )
    assert result.exit_code == 1
    assert "/nonexistent/folder" in result.output


def test_inspect_with_broken_model_names_the_file(station: dict[str, Path]) -> None:
    station["model"].write_bytes(b"garbage")
    result = CliRunner().invoke(
        app, ["inspect", str(station["images"]), "--recipe", str(station["recipe"])]
    )
    assert result.exit_code == 1
    assert "model.onnx" in result.output and "sha256" in result.output


def test_bench_reports_overhead_against_bare_session_run(
    station: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    good = [str(station["images"] / "a_good.png"), str(station["images"] / "b_scratch.png")]
    result = CliRunner().invoke(
        app,
        ["bench", *good, "--recipe", str(station["recipe"]), "--repeats", "2", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["repeats"] == 2
    assert {"decode", "preprocess", "inference", "total"} <= set(report["stages_ms"])
    assert report["bare_session_run_ms"]["p50"] > 0
    assert report["end_to_end_over_bare"] >= 1.0
    assert report["peak_rss_mb"] > 0


def test_bench_finds_images_in_class_folders(station: dict[str, Path], tmp_path: Path) -> None:
    dataset, out = tmp_path / "dataset", tmp_path / "bench.json"
    for label, names in (("good", ("a_good.png", "e_good.png")), ("scratch", ("b_scratch.png",))):
        (dataset / label).mkdir(parents=True)
        for name in names:
            shutil.copy(station["images"] / name, dataset / label / name)
    (dataset / "labels.csv").write_text("file,label\n")  # a sidecar, not an image
    result = CliRunner().invoke(
        app,
        ["bench", str(dataset), "-r", str(station["recipe"]), "--repeats", "1", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "bench: 3 images x 1 passes" in result.output
    report = json.loads(out.read_text())
    assert report["images"] == 3 and report["stages_ms"]["total"]["p50"] > 0


def test_bench_without_images_names_the_folder(station: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "no_images"
    (empty / "good").mkdir(parents=True)
    (empty / "labels.csv").write_text("file,label\n")
    result = CliRunner().invoke(app, ["bench", str(empty), "--recipe", str(station["recipe"])])
    assert result.exit_code == 1
    assert "no images" in result.output and str(empty) in result.output.replace("\n", "")
    assert "nan" not in result.output.lower()


def _reasons_column(output: str) -> str:
    """The text of the last column of the 'Parts not passed' table, cells joined by spaces."""
    table = output.split("Parts not passed", 1)[1].split("Inspection summary", 1)[0]
    cells = [line.split("│")[-2] for line in table.splitlines() if line.count("│") >= 4]
    return " ".join(" ".join(cells).replace("•", " ").split())


def test_inspect_lists_every_reason_of_a_part_in_full() -> None:
    labels = (ROOT / "sample_images" / "labels.csv").read_text().splitlines()
    missing = [line.split(",")[0] for line in labels if ",missing_hole," in line]
    assert missing
    part = ROOT / "sample_images" / missing[0]
    args = ["inspect", str(part), "--recipe", str(ROOT / "recipes" / "flange-measure.yaml")]
    wide = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert wide.exit_code == 0, wide.output
    assert "FAIL" in wide.output.split("Parts not passed", 1)[1]
    # the measurement reason that decided it, and the anomaly score, not just the first one
    assert "measure: hole_count 5, expected 6" in wide.output
    assert "flange-anomaly: anomaly score" in wide.output
    narrow = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.output.splitlines()) <= 80
    reasons = _reasons_column(narrow.output)
    assert "measure: hole_count 5, expected 6" in reasons
    assert "flange-anomaly: anomaly score" in reasons and ">= review threshold" in reasons


def test_overlays_carry_a_banner_in_the_verdict_colour_with_the_score(
    station: dict[str, Path], tmp_path: Path
) -> None:
    overlays, jsonl = tmp_path / "ov", tmp_path / "r.jsonl"
    args = ["inspect", str(station["images"]), "-r", str(station["recipe"])]
    args += ["--overlays", str(overlays), "--overlays-for-pass", "--jsonl", str(jsonl)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).stem: r for r in map(json.loads, jsonl.read_text().splitlines())}
    bh = banner_height(64)
    seen = set()
    for png in overlays.iterdir():
        stem = png.name.rsplit("_", 2)[0]
        verdict = Verdict(rows[stem]["verdict"])
        image = np.asarray(cv2.imread(str(png)), np.uint8)
        assert image.shape == (64 + bh, 64, 3)  # the banner sits above the whole picture
        banner = image[:bh].reshape(-1, 3)
        colours, counts = np.unique(banner, axis=0, return_counts=True)
        assert tuple(colours[counts.argmax()]) == VERDICT_BGR[verdict]
        assert (banner != VERDICT_BGR[verdict]).any(axis=1).sum() > 10  # the text is drawn
        seen.add(verdict)
    assert seen == {Verdict.PASS, Verdict.FAIL}
    assert VERDICT_BGR[Verdict.PASS] != VERDICT_BGR[Verdict.FAIL] != VERDICT_BGR[Verdict.REVIEW]


def test_banner_text_names_verdict_score_and_class(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    image = np.asarray(cv2.imread(str(station["images"] / "b_scratch.png")), np.uint8)
    result = inspector.inspect(Frame(image=image, frame_id=0, source="test")).result
    assert result.score is not None and result.verdict is Verdict.FAIL
    text = banner_text(result)
    assert text.startswith("FAIL") and f"score {result.score:.4g}" in text
