"""Writing labelled sets: files, labels.csv, layouts, progress, overwrite and bad folders."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.datagen.flange import (
    BOLT_HOLE_COUNT,
    LABEL_COLUMNS,
    DatagenError,
    generate_dataset,
    plan_parts,
    read_labels,
    render_part,
)


def _rows(labels: Path) -> list[dict[str, str]]:
    with labels.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_flat_set_matches_its_labels(tmp_path: Path) -> None:
    out = tmp_path / "set"
    labels = generate_dataset(out, count=6, seed=4, defect_rate=0.5)
    assert labels == out / "labels.csv"
    rows = _rows(labels)
    specs = plan_parts(6, seed=4, defect_rate=0.5)
    assert [r["label"] for r in rows] == [s.label for s in specs]
    assert list(rows[0]) == list(LABEL_COLUMNS)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file"] for r in rows)
    for row, spec in zip(rows, specs, strict=True):
        assert row["file"] == f"part_{spec.index:04d}_{spec.label}.png"
        assert (int(row["seed"]), int(row["index"])) == (4, spec.index)
        assert float(row["centre_x_px"]) == spec.centre_x_px
        assert float(row["angle_deg"]) == spec.angle_deg
        assert float(row["outer_diameter_mm"]) == spec.outer_diameter_mm
        assert float(row["px_per_mm"]) == pytest.approx(spec.px_per_mm, abs=1e-6)
        holes = BOLT_HOLE_COUNT - (spec.label == "missing_hole")
        assert int(row["hole_count"]) == holes
        box = [row[k] for k in ("defect_x_px", "defect_y_px", "defect_w_px", "defect_h_px")]
        if spec.is_good:
            assert box == ["", "", "", ""]
        else:
            assert all(int(v) >= 0 for v in box) and int(box[2]) > 0
        # PNG is lossless: the file holds exactly what render_part gives.
        image = cv2.imread(str(out / row["file"]), cv2.IMREAD_COLOR)
        assert image is not None
        assert np.array_equal(image, render_part(spec))


def test_class_folders_layout(tmp_path: Path) -> None:
    labels = generate_dataset(tmp_path, count=8, seed=1, defect_rate=0.5, layout="class_folders")
    rows = _rows(labels)
    for row in rows:
        assert row["file"].startswith(row["label"] + "/")
        assert (tmp_path / row["file"]).is_file()
    folders = Counter(p.parent.name for p in tmp_path.rglob("*.png"))
    assert folders == Counter(r["label"] for r in rows)
    assert folders["good"] == 4


def test_progress_is_reported_per_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_dataset(tmp_path, 3, 0, 0.0, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_empty_set_writes_only_the_header(tmp_path: Path) -> None:
    labels = generate_dataset(tmp_path / "empty", count=0, seed=0, defect_rate=0.3)
    assert labels.read_text(encoding="utf-8").strip() == ",".join(LABEL_COLUMNS)
    assert read_labels(labels) == []


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(DatagenError, match="a_file: output folder is an existing file"):
        generate_dataset(target, 1, 0, 0.0)


def test_existing_set_needs_overwrite_and_only_its_files_go(tmp_path: Path) -> None:
    generate_dataset(tmp_path, 4, 0, 0.5)
    keep = tmp_path / "notes.txt"
    keep.write_text("mine", encoding="utf-8")
    with pytest.raises(DatagenError, match="already holds a generated set"):
        generate_dataset(tmp_path, 2, 1, 0.0)
    generate_dataset(tmp_path, 2, 1, 0.0, overwrite=True)
    assert len(list(tmp_path.glob("*.png"))) == 2
    assert keep.read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": -1}, "count must be >= 0"),
        ({"defect_rate": 1.2}, "defect_rate must be in"),
        ({"classes": ["warp"]}, "unknown defect classes"),
        ({"layout": "nested"}, "layout must be one of"),
    ],
)
def test_bad_arguments_write_nothing(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"count": 2, "seed": 0, "defect_rate": 0.5} | kwargs
    out = tmp_path / "never"
    with pytest.raises(DatagenError, match=message):
        generate_dataset(out, **args)  # type: ignore[arg-type]
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "lacks columns"), ("name,kind\na.png,good\n", "lacks columns \\['file', 'label'\\]")],
)
def test_read_labels_refuses_broken_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatagenError, match=message):
        read_labels(path)


def test_read_labels_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatagenError, match=r"nope\.csv: cannot read labels file"):
        read_labels(tmp_path / "nope.csv")
