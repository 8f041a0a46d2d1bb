"""Retention: which images are kept, and the order in which the disk budget deletes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.entities import Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.db import make_engine
from cellinspect.storage.images import ImageStore
from cellinspect.storage.migrate import upgrade
from cellinspect.storage.records import ImageKind, ReviewInput, ReviewLabel
from cellinspect.storage.retention import RetentionPolicy, pass_sample_point
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result

V = Verdict


def make_store(tmp_path: Path, policy: RetentionPolicy) -> SqlResultStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine)
    return SqlResultStore(engine, ImageStore(tmp_path / "images"), policy)


@pytest.mark.parametrize(
    ("verdict", "rate", "kept"),
    [
        (V.FAIL, 0.0, True),
        (V.REVIEW, 0.0, True),
        (V.PASS, 0.0, False),
        (V.PASS, 1.0, True),
    ],
)
def test_keeps_every_reject_and_samples_pass(verdict: Verdict, rate: float, kept: bool) -> None:
    policy = RetentionPolicy(pass_sample_rate=rate)
    assert policy.keeps_images(synthetic_result(3, verdict, defect_class="dent")) is kept


def test_pass_sample_is_deterministic_and_near_the_rate() -> None:
    policy = RetentionPolicy(pass_sample_rate=0.2)
    results = [synthetic_result(i, V.PASS) for i in range(2000)]
    first = [policy.keeps_images(r) for r in results]
    assert first == [policy.keeps_images(r) for r in results]
    assert 0.17 < sum(first) / len(first) < 0.23
    assert 0.0 <= pass_sample_point("x") < 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pass_sample_rate": -0.1}, "pass_sample_rate"),
        ({"pass_sample_rate": 1.5}, "pass_sample_rate"),
        ({"disk_budget_bytes": 0}, "disk_budget_bytes"),
        ({"low_water": 0.0}, "low_water"),
    ],
)
def test_policy_rejects_bad_numbers(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


def _kept(store: SqlResultStore, rid: str) -> bool:
    return ImageKind.IMAGE in store.get(rid).images


def test_disk_budget_deletes_pass_then_reviewed_then_unreviewed_oldest_first(
    tmp_path: Path,
) -> None:
    # 64x64 random images are ~12.4 kB per PNG, two per result (image + overlay).
    store = make_store(tmp_path, RetentionPolicy(pass_sample_rate=1.0))
    plan = [(0, V.FAIL), (1, V.PASS), (2, V.REVIEW), (3, V.FAIL), (4, V.PASS), (5, V.FAIL)]
    store.add_many([synthetic_frame(synthetic_result(i, v, defect_class="dent")) for i, v in plan])
    store.set_review("r000003", ReviewInput(ReviewLabel.DEFECT, "ann", "dent"))
    per_result = store.image_bytes() // len(plan)
    # A budget for about 3.5 results: low water 0.9 -> ~3.1 results stay.
    budget = int(per_result * 3.5)
    store.retention = RetentionPolicy(pass_sample_rate=1.0, disk_budget_bytes=budget)
    store.add_many([synthetic_frame(synthetic_result(6, V.FAIL, defect_class="dent"))])
    kept = {rid: _kept(store, rid) for rid in (f"r{i:06d}" for i in range(7))}
    # PASS (r1, r4) go first, then the reviewed r3, then the oldest unreviewed reject r0.
    assert kept == {
        "r000000": False,
        "r000001": False,
        "r000002": True,
        "r000003": False,
        "r000004": False,
        "r000005": True,
        "r000006": True,
    }
    assert store.image_bytes() <= budget * 0.9
    files = list((tmp_path / "images").rglob("*.png"))
    assert len(files) == 6  # three results, image + overlay each
    # Results and reviews stay when their images go.
    assert store.get("r000003").review is not None
    store.close()


def test_no_budget_keeps_everything(tmp_path: Path) -> None:
    store = make_store(tmp_path, RetentionPolicy(pass_sample_rate=1.0))
    store.add_many([synthetic_frame(synthetic_result(i, V.PASS)) for i in range(4)])
    assert all(_kept(store, f"r{i:06d}") for i in range(4))
    store.close()


def test_settings_map_onto_the_policy(tmp_path: Path) -> None:
    from cellinspect.storage.factory import retention_from

    policy = retention_from(
        StationSettings(
            data_dir=tmp_path, pass_sample_rate=0.25, disk_budget_mb=1.5, disk_reserve_mb=2.0
        )
    )
    assert policy == RetentionPolicy(
        pass_sample_rate=0.25, disk_budget_bytes=1572864, disk_reserve_bytes=2097152
    )
