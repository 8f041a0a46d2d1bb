"""The SQL store over a temporary SQLite file: round trip, filters, pagination, reviews."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from cellinspect.entities import Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.errors import (
    ResultNotFoundError,
    ReviewConflictError,
    ReviewInvalidError,
)
from cellinspect.storage.factory import open_store
from cellinspect.storage.models import ResultRow
from cellinspect.storage.records import (
    ImageKind,
    ResultFilter,
    ReviewInput,
    ReviewLabel,
)
from cellinspect.storage.sql_store import SqlResultStore, decode_cursor, encode_cursor
from cellinspect.storage.synthetic import EPOCH, synthetic_frame, synthetic_result

V = Verdict

# index -> verdict, class, model version, source, station: a fixed table the filter cases
# refer to (None: a result stored without a station, as before station ids existed).
SEED = [
    (0, V.PASS, None, "1.0", "cam-a", None),
    (1, V.FAIL, "scratch", "1.0", "cam-a", "st-1"),
    (2, V.REVIEW, "crack", "1.0", "cam-b", "st-2"),
    (3, V.FAIL, "crack", "2.0", "cam-b", "st-2"),
    (4, V.PASS, None, "2.0", "cam-a", "st-1"),
    (5, V.FAIL, "dent", "2.0", "cam-a", "st-1"),
    (6, V.REVIEW, "scratch", "2.0", "cam-b", None),
]


@pytest.fixture
def seeded(store: SqlResultStore) -> SqlResultStore:
    frames = [
        synthetic_frame(
            synthetic_result(
                i,
                v,
                defect_class=c,
                model_version=mv,
                source=src,
                score=0.1 * i,
                station_id=st,
            )
        )
        for i, v, c, mv, src, st in SEED
    ]
    assert store.add_many(frames) == [f"r{i:06d}" for i, *_ in SEED]
    store.set_review("r000001", ReviewInput(ReviewLabel.DEFECT, "ann", "scratch"))
    store.set_review("r000003", ReviewInput(ReviewLabel.GOOD, "bob"))
    return store


def ids(store: SqlResultStore, f: ResultFilter) -> list[int]:
    return [int(s.result.result_id[1:]) for s in store.query(f, limit=100).items]


def test_round_trip_keeps_the_whole_result(store: SqlResultStore) -> None:
    result = synthetic_result(7, V.FAIL, defect_class="crack", score=0.93, part_id=4242)
    store.add_many([synthetic_frame(result)])
    got = store.get("r000007")
    assert got.result == result
    assert got.result.to_dict() == result.to_dict()
    assert got.review is None
    assert set(got.images) == {ImageKind.IMAGE, ImageKind.OVERLAY}
    assert got.stored_at.tzinfo is not None


def test_round_trip_keeps_the_station_in_json_and_columns(store: SqlResultStore) -> None:
    result = replace(
        synthetic_result(8, V.FAIL, defect_class="dent"),
        station_id="st-07",
        line="line-2",
        site="plant-north",
    )
    store.add_many([synthetic_frame(result)])
    got = store.get("r000008").result
    assert (got.station_id, got.line, got.site) == ("st-07", "line-2", "plant-north")
    assert got == result
    with store.engine.connect() as conn:
        row = conn.execute(
            select(ResultRow.station_id, ResultRow.line, ResultRow.site).where(
                ResultRow.result_id == "r000008"
            )
        ).one()
    assert tuple(row) == ("st-07", "line-2", "plant-north")


def test_adding_the_same_ids_again_stores_nothing_twice(store: SqlResultStore) -> None:
    frames = [synthetic_frame(synthetic_result(i, V.FAIL, defect_class="dent")) for i in range(3)]
    assert len(store.add_many(frames)) == 3
    assert store.add_many(frames + frames[:1]) == []
    assert store.add_many([]) == []
    assert len(store.query(ResultFilter()).items) == 3


def test_a_batch_with_a_duplicate_inside_stores_it_once(store: SqlResultStore) -> None:
    frame = synthetic_frame(synthetic_result(1, V.FAIL, defect_class="dent"))
    assert store.add_many([frame, frame]) == ["r000001"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (ResultFilter(), [6, 5, 4, 3, 2, 1, 0]),
        (ResultFilter(verdicts=(V.FAIL,)), [5, 3, 1]),
        (ResultFilter(verdicts=(V.FAIL, V.REVIEW)), [6, 5, 3, 2, 1]),
        (ResultFilter(defect_classes=("crack",)), [3, 2]),
        (ResultFilter(defect_classes=("nope",)), []),
        (ResultFilter(since=EPOCH + timedelta(seconds=2)), [6, 5, 4, 3, 2]),
        (ResultFilter(until=EPOCH + timedelta(seconds=2)), [1, 0]),
        (
            ResultFilter(since=EPOCH + timedelta(seconds=2), until=EPOCH + timedelta(seconds=4)),
            [3, 2],
        ),
        (ResultFilter(reviewed=True), [3, 1]),
        (ResultFilter(reviewed=False, verdicts=(V.FAIL,)), [5]),
        (ResultFilter(label=ReviewLabel.GOOD), [3]),
        (ResultFilter(model_version="2.0"), [6, 5, 4, 3]),
        (ResultFilter(model_version="anomaly@1.0"), [2, 1, 0]),
        (ResultFilter(model_version="other@1.0"), []),
        (ResultFilter(part_id=5), [5]),
        (ResultFilter(source="cam-b"), [6, 3, 2]),
        (ResultFilter(source="cam-b", verdicts=(V.REVIEW,), defect_classes=("scratch",)), [6]),
        (ResultFilter(station_id="st-1"), [5, 4, 1]),
        (ResultFilter(station_id="st-2", verdicts=(V.FAIL,)), [3]),
        (ResultFilter(station_id="st-9"), []),
    ],
)
def test_filters(seeded: SqlResultStore, filters: ResultFilter, expected: list[int]) -> None:
    assert ids(seeded, filters) == expected


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8])
def test_cursor_pagination_visits_every_result_once_newest_first(
    store: SqlResultStore, limit: int
) -> None:
    # Several results share one capture time, so the id breaks ties.
    frames = [
        synthetic_frame(
            synthetic_result(
                i, V.FAIL, defect_class="dent", captured=EPOCH + timedelta(seconds=i // 3)
            )
        )
        for i in range(7)
    ]
    store.add_many(frames)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.query(ResultFilter(), limit=limit, cursor=cursor)
        seen += [s.result.result_id for s in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"r{i:06d}" for i in (6, 5, 4, 3, 2, 1, 0)]
    assert pages == -(-7 // limit)  # the look-ahead row means no empty trailing page


def test_empty_store_gives_an_empty_last_page(store: SqlResultStore) -> None:
    page = store.query(ResultFilter(verdicts=(V.FAIL,)))
    assert page.items == []
    assert page.next_cursor is None


@pytest.mark.parametrize("cursor", ["", "garbage", "e30", encode_cursor(EPOCH, 1)[:-3] + "!!!"])
def test_foreign_cursors_are_refused(store: SqlResultStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="not one this API handed out"):
        store.query(ResultFilter(), cursor=cursor)


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(EPOCH, 42)) == (EPOCH, 42)


@pytest.mark.parametrize("limit", [0, -1, 501])
def test_limit_out_of_range(store: SqlResultStore, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.query(ResultFilter(), limit=limit)


def test_unknown_ids_raise_not_found(store: SqlResultStore) -> None:
    with pytest.raises(ResultNotFoundError, match="nope"):
        store.get("nope")
    with pytest.raises(ResultNotFoundError):
        store.set_review("nope", ReviewInput(ReviewLabel.GOOD, "ann"))
    with pytest.raises(ResultNotFoundError):
        store.audit_trail("nope")
    with pytest.raises(ResultNotFoundError, match="no result"):
        store.image_file("nope", ImageKind.IMAGE)


def test_review_changes_are_all_kept_in_the_audit_trail(seeded: SqlResultStore) -> None:
    first = seeded.set_review("r000005", ReviewInput(ReviewLabel.GOOD, "ann", comment="burr"))
    second = seeded.set_review("r000005", ReviewInput(ReviewLabel.DEFECT, "bob", "dent"))
    assert (first.revision, second.revision) == (1, 2)
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    trail = seeded.audit_trail("r000005")
    assert [(e.revision, e.label, e.reviewer, e.previous_label) for e in trail] == [
        (1, ReviewLabel.GOOD, "ann", None),
        (2, ReviewLabel.DEFECT, "bob", ReviewLabel.GOOD),
    ]
    assert trail[0].comment == "burr"
    current = seeded.get("r000005").review
    assert current is not None
    assert (current.label, current.defect_class, current.reviewer) == (
        ReviewLabel.DEFECT,
        "dent",
        "bob",
    )


@pytest.mark.parametrize(
    ("review", "message"),
    [
        (ReviewInput(ReviewLabel.DEFECT, "ann"), "needs a 'defect_class'"),
        (ReviewInput(ReviewLabel.GOOD, "ann", "dent"), "takes no defect_class"),
        (ReviewInput(ReviewLabel.GOOD, "  "), "reviewer"),
    ],
)
def test_invalid_reviews(seeded: SqlResultStore, review: ReviewInput, message: str) -> None:
    with pytest.raises(ReviewInvalidError, match=message):
        seeded.set_review("r000005", review)
    assert seeded.audit_trail("r000005") == []


def test_review_based_on_a_stale_revision_conflicts(seeded: SqlResultStore) -> None:
    seeded.set_review("r000005", ReviewInput(ReviewLabel.GOOD, "ann", expected_revision=0))
    with pytest.raises(ReviewConflictError, match="revision 1"):
        seeded.set_review("r000005", ReviewInput(ReviewLabel.GOOD, "bob", expected_revision=0))
    seeded.set_review("r000005", ReviewInput(ReviewLabel.GOOD, "bob", expected_revision=1))
    assert len(seeded.audit_trail("r000005")) == 2


def test_image_files_are_inside_the_image_folder(
    seeded: SqlResultStore, settings: StationSettings
) -> None:
    path, record = seeded.image_file("r000001", ImageKind.OVERLAY)
    assert path.is_file()
    assert path.is_relative_to(settings.resolved_image_dir.resolve())
    assert record.size_bytes == path.stat().st_size
    assert record.media_type == "image/png"


def test_pass_images_not_sampled_are_not_kept(seeded: SqlResultStore) -> None:
    assert seeded.get("r000000").images == {}
    with pytest.raises(ResultNotFoundError, match="has no image kept"):
        seeded.image_file("r000000", ImageKind.IMAGE)


def test_a_deleted_file_is_reported_not_served(seeded: SqlResultStore) -> None:
    path, _ = seeded.image_file("r000001", ImageKind.IMAGE)
    path.unlink()
    with pytest.raises(ResultNotFoundError, match="file is gone"):
        seeded.image_file("r000001", ImageKind.IMAGE)


def test_stats_numbers(seeded: SqlResultStore) -> None:
    stats = seeded.stats(None, None, bucket_s=3600)
    assert stats.total == 7
    assert stats.by_verdict == {"pass": 2, "fail": 3, "review": 2}
    assert stats.yield_rate == pytest.approx(2 / 7)
    assert [(p.defect_class, p.count) for p in stats.pareto] == [
        ("crack", 2),
        ("scratch", 2),
        ("dent", 1),
    ]
    assert stats.pareto[-1].cumulative_share == pytest.approx(1.0)
    assert len(stats.timeline) == 1
    assert stats.timeline[0].count == 7
    assert stats.timeline[0].latency_p99_ms == pytest.approx(12.0)
    # r1 FAIL confirmed (agreed); r3 FAIL labelled good (false reject).
    a = stats.review
    assert (a.reviewed, a.agreed, a.overruled, a.false_rejects) == (2, 1, 1, 1)
    assert a.agreement_rate == pytest.approx(0.5)


def test_stats_over_a_time_range(seeded: SqlResultStore) -> None:
    stats = seeded.stats(EPOCH + timedelta(seconds=5), None)
    assert stats.total == 2
    assert stats.by_verdict == {"pass": 0, "fail": 1, "review": 1}
    empty = seeded.stats(EPOCH + timedelta(days=1), None)
    assert (empty.total, empty.yield_rate, empty.pareto, empty.timeline) == (0, None, [], [])


def test_defect_classes_include_reviewed_ones(seeded: SqlResultStore) -> None:
    seeded.set_review("r000002", ReviewInput(ReviewLabel.DEFECT, "ann", "porosity"))
    assert seeded.defect_classes() == ["crack", "dent", "porosity", "scratch"]


def test_export_candidates(seeded: SqlResultStore) -> None:
    reviewed = [c.result.result_id for c in seeded.export_candidates(include_unreviewed=False)]
    assert reviewed == ["r000001", "r000003"]
    everything = list(seeded.export_candidates(include_unreviewed=True))
    assert len(everything) == 7
    assert everything[0].image is None  # PASS r0 not sampled


def test_reopening_the_file_keeps_everything(settings: StationSettings) -> None:
    first = open_store(settings)
    first.add_many([synthetic_frame(synthetic_result(1, V.FAIL, defect_class="dent"))])
    first.set_review("r000001", ReviewInput(ReviewLabel.GOOD, "ann"))
    first.close()
    second = open_store(settings)
    got = second.get("r000001")
    second.close()
    assert got.review is not None and got.review.label is ReviewLabel.GOOD
