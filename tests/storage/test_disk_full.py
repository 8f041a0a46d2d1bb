"""Results win over images: an image that cannot be written costs that image, not the batch.

Real failures only: an image folder that cannot be created (a file in its place), and a
reserve larger than the real free space reported by the disk (shutil.disk_usage).
"""

from __future__ import annotations

from pathlib import Path

from cellinspect.entities import Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ImageKind, ResultFilter
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result


def test_an_unwritable_image_folder_drops_images_not_results(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the image folder should be", encoding="utf-8")
    settings = StationSettings(
        data_dir=tmp_path / "data", image_dir=blocker / "images", disk_budget_mb=None
    )
    store = open_store(settings)
    try:
        frames = [
            synthetic_frame(synthetic_result(i, Verdict.FAIL, defect_class="dent"), size=16)
            for i in range(4)
        ]
        assert store.add_many(frames) == [f.result.result_id for f in frames]
        for f in frames:
            stored = store.get(f.result.result_id)
            assert stored.images == {}
            notes = [r for r in stored.result.reasons if "not kept" in r]
            assert [n.split(":", 1)[0] for n in notes] == ["image not kept", "overlay not kept"]
            assert all("cannot write image" in n and str(blocker) in n for n in notes)
            assert stored.result.verdict is Verdict.FAIL  # the verdict itself is untouched
    finally:
        store.close()


def test_images_give_way_to_the_free_space_reserve(tmp_path: Path) -> None:
    """Under the reserve no new image is kept (the result says why) and old ones go."""
    data = tmp_path / "data"
    roomy = open_store(StationSettings(data_dir=data, disk_budget_mb=None, disk_reserve_mb=0))
    first = synthetic_frame(synthetic_result(0, Verdict.FAIL, defect_class="dent"), size=16)
    try:
        roomy.add_many([first])
        assert ImageKind.IMAGE in roomy.get(first.result.result_id).images
    finally:
        roomy.close()
    # A reserve no real disk can offer: as if the disk had just filled up.
    full = open_store(
        StationSettings(data_dir=data, disk_budget_mb=None, disk_reserve_mb=1024.0**3)
    )
    try:
        second = synthetic_frame(synthetic_result(1, Verdict.FAIL, defect_class="dent"), size=16)
        full.add_many([second])
        stored = full.get(second.result.result_id)
        assert stored.images == {}
        assert any("under the" in r and "reserve" in r for r in stored.result.reasons)
        assert full.get(first.result.result_id).images == {}  # the old image made room
        assert full.image_bytes() == 0
        assert len(full.query(ResultFilter(), limit=10).items) == 2  # both results kept
    finally:
        full.close()
