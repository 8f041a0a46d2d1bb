"""Export of labelled samples: class folders, manifest columns, de-duplication, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.export import (
    MANIFEST_COLUMNS,
    ExportError,
    ManifestFormat,
    export_dataset,
    read_manifest,
)
from cellinspect.export.command import format_report, run_export
from cellinspect.export.dataset import model_confidence
from cellinspect.settings import StationSettings
from cellinspect.storage.records import ImageKind, ReviewInput, ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_image, synthetic_result

V = Verdict


def seed(store: SqlResultStore) -> None:
    """r0 PASS, r1 FAIL scratch .9, r2 REVIEW crack .6, r3 FAIL dent .4, r4 = r1's pixels."""
    frames = [
        synthetic_frame(synthetic_result(0, V.PASS, score=0.1)),
        synthetic_frame(synthetic_result(1, V.FAIL, defect_class="scratch", score=0.9)),
        synthetic_frame(synthetic_result(2, V.REVIEW, defect_class="crack", score=0.6)),
        synthetic_frame(synthetic_result(3, V.FAIL, defect_class="dent", score=0.4)),
    ]
    twin = synthetic_result(4, V.FAIL, defect_class="scratch", score=0.95)
    image = synthetic_image("r000001")
    frames.append(InspectedFrame(twin, image, image))
    store.add_many(frames)
    store.set_review("r000002", ReviewInput(ReviewLabel.DEFECT, "ann", "crack"))
    store.set_review("r000003", ReviewInput(ReviewLabel.GOOD, "bob"))


def test_reviewed_results_become_class_folders(store: SqlResultStore, tmp_path: Path) -> None:
    seed(store)
    out = tmp_path / "ds"
    report = export_dataset(store, out)
    assert report.written == 2
    assert report.by_label == {"crack": 1, "good": 1}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "crack/r000002.png",
        "good/r000003.png",
    ]
    rows = read_manifest(report.manifest)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert [(r["result_id"], r["label"], r["label_source"], r["reviewer"]) for r in rows] == [
        ("r000002", "crack", "review", "ann"),
        ("r000003", "good", "review", "bob"),
    ]
    assert rows[0]["model_version"] == "anomaly@1.0.0;classifier@1.0.0"
    assert rows[0]["captured_wall"] == "2026-01-05T08:00:02+00:00"
    for row in rows:
        data = (out / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["image_sha256"]
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    assert not list(tmp_path.glob(".ds.partial-*"))


def test_confident_unreviewed_results_and_dedup(store: SqlResultStore, tmp_path: Path) -> None:
    seed(store)
    report = export_dataset(store, tmp_path / "ds", 0.5, manifest_format=ManifestFormat.JSONL)
    rows = read_manifest(report.manifest)
    got = {r["result_id"]: (r["label"], r["label_source"]) for r in rows}
    # r1 scratch .9 (model); r4 has r1's pixels -> duplicate; r3 reviewed good; r2 reviewed.
    # r0 PASS has no ':good' score and r3's model score .4 is below, so neither by model.
    assert got == {
        "r000001": ("scratch", "model"),
        "r000002": ("crack", "review"),
        "r000003": ("good", "review"),
    }
    assert report.duplicates == 1
    assert report.below_confidence == 1  # r0
    assert report.manifest.name == "manifest.jsonl"


def test_a_review_beats_a_model_label_for_the_same_image(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seed(store)
    store.set_review("r000004", ReviewInput(ReviewLabel.DEFECT, "cy", "burr"))
    report = export_dataset(store, tmp_path / "ds", 0.5)
    rows = {r["image_sha256"]: r for r in read_manifest(report.manifest)}
    twin = rows[store.get("r000004").images[ImageKind.IMAGE].sha256]
    assert (twin["result_id"], twin["label"], twin["label_source"]) == ("r000004", "burr", "review")
    assert report.label_conflicts == 1


def test_nothing_to_export_is_a_clear_error(store: SqlResultStore, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="nothing to export: no reviewed results"):
        export_dataset(store, tmp_path / "ds")
    store.add_many([synthetic_frame(synthetic_result(1, V.REVIEW, defect_class="dent"))])
    with pytest.raises(ExportError, match="nothing to export"):
        export_dataset(store, tmp_path / "ds", 0.0)
    assert not (tmp_path / "ds").exists()


def test_missing_image_files_are_left_out_and_counted(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seed(store)
    path, _ = store.image_file("r000002", ImageKind.IMAGE)
    path.unlink()
    report = export_dataset(store, tmp_path / "ds")
    assert report.written == 1
    assert report.missing_image == 1


def test_corrupt_image_files_are_left_out(store: SqlResultStore, tmp_path: Path) -> None:
    seed(store)
    path, _ = store.image_file("r000002", ImageKind.IMAGE)
    path.write_bytes(b"changed on disk")
    report = export_dataset(store, tmp_path / "ds")
    assert report.corrupt_image == 1
    assert report.by_label == {"good": 1}


@pytest.mark.parametrize(
    ("existing", "overwrite", "message"),
    [
        ({"x.txt": "user data"}, False, "not empty; choose another or pass --overwrite"),
        ({"x.txt": "user data"}, True, "did not write"),
        ({"manifest.csv": "old"}, False, "not empty"),
    ],
)
def test_a_non_empty_target_is_refused(
    store: SqlResultStore,
    tmp_path: Path,
    existing: dict[str, str],
    overwrite: bool,
    message: str,
) -> None:
    seed(store)
    out = tmp_path / "ds"
    out.mkdir()
    for name, text in existing.items():
        (out / name).write_text(text)
    with pytest.raises(ExportError, match=message):
        export_dataset(store, out, overwrite=overwrite)
    assert {p.name for p in out.iterdir()} == set(existing)


def test_overwrite_replaces_an_earlier_export(store: SqlResultStore, tmp_path: Path) -> None:
    seed(store)
    out = tmp_path / "ds"
    export_dataset(store, out)
    (out / "stale.txt").write_text("from before")
    report = export_dataset(store, out, overwrite=True)
    assert report.written == 2
    assert not (out / "stale.txt").exists()


def test_target_that_is_a_file(store: SqlResultStore, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_dataset(store, tmp_path / "f")


@pytest.mark.parametrize("threshold", [-0.1, 1.1])
def test_threshold_out_of_range(store: SqlResultStore, tmp_path: Path, threshold: float) -> None:
    with pytest.raises(ExportError, match="include_unreviewed_above"):
        export_dataset(store, tmp_path / "ds", threshold)


def test_model_confidence() -> None:
    r = synthetic_result(1, V.FAIL, defect_class="dent", score=0.7)
    assert model_confidence(r, "dent") == 0.7
    assert model_confidence(r, "good") is None


def test_command_body_uses_the_station_settings(
    settings: StationSettings, store: SqlResultStore, tmp_path: Path
) -> None:
    seed(store)
    report = run_export(settings, tmp_path / "cli-ds")
    text = format_report(report)
    assert "exported 2 images" in text
    assert "crack: 1, good: 1" in text
    assert str(report.manifest) in text
