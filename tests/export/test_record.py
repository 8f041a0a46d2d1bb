"""export.json: each image's recipe and that recipe's preparation, read back by training.

The stored images are frames after the recipe's preprocessing; these tests check that the
export records how, and that training reads them with the ROI crop only, refusing (by file,
with the reason) images it cannot cut the way the station did.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cellinspect.config import Recipe
from cellinspect.entities import Verdict
from cellinspect.errors import ConfigError
from cellinspect.export import export_dataset
from cellinspect.export.command import format_report
from cellinspect.export.record import EXPORT_FILE, ExportRecordError, read_export_record
from cellinspect.inference.preprocess_contract import preprocess_record
from cellinspect.sources.decode import decode_image_file
from cellinspect.storage.records import ReviewInput, ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.training.dataset import (
    DatasetError,
    RoiReader,
    good_images,
    load_labelled,
    read_images,
)

SHA = "0" * 64  # what synthetic results record as their recipe's sha256
V = Verdict


def recipe(flip: str = "horizontal", rois: int = 1) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "synthetic",
            "version": 1,
            "source": {"type": "folder", "path": "."},
            "preprocess": [{"op": "flip", "mode": flip}],
            "rois": [
                {"name": f"roi{i}", "x": 8 + i, "y": 4, "width": 32, "height": 24}
                for i in range(rois)
            ],
            "models": [{"name": "m", "path": "m.onnx"}],
        }
    )


def seeded(store: SqlResultStore) -> None:
    """Three reviewed results: r0 good, r1 scratch, r2 good; r3 unreviewed."""
    store.add_many(
        [
            synthetic_frame(synthetic_result(0, V.PASS, score=0.1)),
            synthetic_frame(synthetic_result(1, V.FAIL, defect_class="scratch", score=0.9)),
            synthetic_frame(synthetic_result(2, V.REVIEW, defect_class="dent", score=0.6)),
            synthetic_frame(synthetic_result(3, V.FAIL, defect_class="dent", score=0.7)),
        ]
    )
    store.set_review("r000000", ReviewInput(ReviewLabel.GOOD, "ann"))
    store.set_review("r000001", ReviewInput(ReviewLabel.DEFECT, "ann", "scratch"))
    store.set_review("r000002", ReviewInput(ReviewLabel.GOOD, "bob"))


def test_the_export_records_each_image_and_its_recipe(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seeded(store)
    report = export_dataset(store, tmp_path / "ds", recipes=[(recipe(), SHA)])
    record = read_export_record(report.record)
    by_id = {i.result_id: i for i in record.images}
    assert set(by_id) == {"r000000", "r000001", "r000002"}
    r2 = by_id["r000002"]
    assert (r2.label, r2.reviewer, r2.verdict, r2.model_defect_class) == (
        "good",
        "bob",
        "review",
        "dent",
    )
    assert (tmp_path / "ds" / r2.file).is_file() and r2.recipe_sha256 == SHA
    assert r2.error is None
    (rec,) = record.recipes
    assert rec.preprocess == preprocess_record(recipe().preprocess)
    assert rec.rois is not None and rec.rois[0]["width"] == 32
    assert report.unrecorded == []


def test_an_unknown_recipe_is_recorded_by_name_and_hash_and_reported(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seeded(store)
    report = export_dataset(store, tmp_path / "ds")
    (rec,) = read_export_record(report.record).recipes
    assert (rec.name, rec.sha256, rec.preprocess, rec.rois) == ("synthetic", SHA, None, None)
    assert [r.sha256 for r in report.unrecorded] == [SHA]
    assert "its preprocessing and ROIs are not recorded" in format_report(report)


def test_training_cuts_exported_images_without_preprocessing_them_again(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seeded(store)
    export_dataset(store, tmp_path / "ds", recipes=[(recipe(), SHA)])
    dataset = load_labelled(tmp_path / "ds")
    assert dataset.counts() == {"good": 2, "scratch": 1}
    for reader in (
        RoiReader.for_data(tmp_path / "ds", recipe(), None, SHA),  # with -r
        RoiReader.for_data(tmp_path / "ds", None, None),  # the export stands in for it
    ):
        assert preprocess_record(reader.ops) == preprocess_record(recipe().preprocess)
        assert reader.roi_size == [32, 24]
        pairs = list(read_images(dataset, reader))
        assert dataset.skipped == []
        for item, crop in pairs:
            stored = decode_image_file(item.path)
            np.testing.assert_array_equal(crop, stored[4:28, 8:40])  # cut, not flipped again


def test_images_prepared_another_way_are_refused_by_name(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seeded(store)
    export_dataset(store, tmp_path / "ds", recipes=[(recipe(), SHA)])
    dataset = load_labelled(tmp_path / "ds")
    other = RoiReader.for_data(tmp_path / "ds", recipe(flip="vertical"), None, "f" * 64)
    with pytest.raises(DatasetError, match="none of its 3 image") as err:
        list(read_images(dataset, other))
    assert "r000000.png: prepared at the station by recipe 'synthetic'" in str(err.value)
    assert "flip(mode=horizontal)" in str(err.value) and "flip(mode=vertical)" in str(err.value)
    assert len(dataset.skipped) == 3


def test_an_export_without_recipe_needs_the_same_recipe_file(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seeded(store)
    export_dataset(store, tmp_path / "ds")
    with pytest.raises(DatasetError, match="records no recipe's preprocessing"):
        RoiReader.for_data(tmp_path / "ds", None, None)
    good = good_images(tmp_path / "ds" / "good")
    wrong = RoiReader.for_data(tmp_path / "ds" / "good", recipe(), None, "f" * 64)
    with pytest.raises(DatasetError, match="export does not record: train with -r"):
        list(read_images(good, wrong))
    same = RoiReader.for_data(tmp_path / "ds" / "good", recipe(), None, SHA)  # matched by hash
    assert len(list(read_images(good, same))) == 2


def test_several_rois_need_a_choice(store: SqlResultStore, tmp_path: Path) -> None:
    seeded(store)
    export_dataset(store, tmp_path / "ds", recipes=[(recipe(rois=2), SHA)])
    with pytest.raises(ConfigError, match=r"several ROIs \['roi0', 'roi1'\]: choose one"):
        RoiReader.for_data(tmp_path / "ds", None, None)
    assert RoiReader.for_data(tmp_path / "ds", None, "roi1").roi_size == [32, 24]


def test_a_file_not_listed_in_the_export_is_refused(store: SqlResultStore, tmp_path: Path) -> None:
    seeded(store)
    export_dataset(store, tmp_path / "ds", recipes=[(recipe(), SHA)])
    stray = tmp_path / "ds" / "good" / "stray.png"
    stray.write_bytes((tmp_path / "ds" / "good" / "r000000.png").read_bytes())
    good = good_images(tmp_path / "ds" / "good")
    list(read_images(good, RoiReader.for_data(tmp_path / "ds" / "good", None, None)))
    assert [(p.name, why) for p, why in good.skipped] == [
        ("stray.png", f"{stray}: not listed in the export's {EXPORT_FILE}, so how it was "
         "prepared is unknown")
    ]  # fmt: skip


def test_a_broken_export_record_names_the_file_and_field(
    store: SqlResultStore, tmp_path: Path
) -> None:
    seeded(store)
    report = export_dataset(store, tmp_path / "ds", recipes=[(recipe(), SHA)])
    data = json.loads(report.record.read_text())
    del data["images"][0]["label"]
    report.record.write_text(json.dumps(data))
    with pytest.raises(ExportRecordError, match=r"export.json: images.0.label: Field required"):
        load_labelled(tmp_path / "ds")


def test_unreadable_images_are_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dataset = good_images(tmp_path / "good")
    with pytest.raises(DatasetError, match=r"none of its 1 image\(s\) could be read \(.*a\.png: "):
        list(read_images(dataset, RoiReader(None)))


def test_a_fail_safe_result_keeps_its_error_in_the_record(
    store: SqlResultStore, tmp_path: Path
) -> None:
    failed = replace(synthetic_result(7, V.FAIL, defect_class="dent"), error="undistort: bad size")
    store.add_many([synthetic_frame(failed)])
    store.set_review("r000007", ReviewInput(ReviewLabel.DEFECT, "ann", "dent"))
    report = export_dataset(store, tmp_path / "ds", recipes=[(recipe(), SHA)])
    (image,) = read_export_record(report.record).images
    assert (image.result_id, image.error) == ("r000007", "undistort: bad size")
