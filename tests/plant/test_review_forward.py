"""Station labels forwarded to a real central PostgreSQL, and back from the hub, without ping-pong.

A label set on a station's own review page reaches the central store after its result row,
recorded as NAME@<station>, so the hub (a real `cellinspect hub` process) shows it; a label
set on the hub comes back as NAME@hub and is not sent again; a crash between the central
write and the cursor leaves no duplicate; a station undo takes its label back centrally
unless the hub has relabelled the part since.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellinspect.entities import Verdict
from cellinspect.plant.forwarder import STATION_REVIEW_CURSOR_FILE, CursorFile, Forwarder
from cellinspect.settings import StationSettings
from cellinspect.storage.errors import ResultNotFoundError
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ReviewInput, ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from tests.plant.forward_rig import HubProcess, wait_for
from tests.servers.postgres import PostgresServer, postgres_fixture

pytestmark = pytest.mark.slow

postgres = postgres_fixture("module")


@pytest.fixture
def central_url(postgres: PostgresServer) -> str:
    return postgres.url(postgres.create_database()).render_as_string(hide_password=False)


@pytest.fixture
def central(central_url: str, tmp_path: Path) -> Iterator[SqlResultStore]:
    """A reader of the central database (migrated by the hub or by open_store here)."""
    settings = StationSettings(data_dir=tmp_path / "central-reader", db_url=central_url)
    store = open_store(settings)
    yield store
    store.close()


def _station(tmp_path: Path, station: str, count: int) -> SqlResultStore:
    store = open_store(
        StationSettings(data_dir=tmp_path / station, pass_sample_rate=0.0, disk_budget_mb=None)
    )
    store.add_many(
        [
            synthetic_frame(
                synthetic_result(
                    i,
                    Verdict.FAIL,
                    defect_class="scratch",
                    prefix=f"{station}-",
                    station_id=station,
                )
            )
            for i in range(count)
        ]
    )
    return store


def _forwarder(
    store: SqlResultStore, url: str, state: Path, station: str, **kw: object
) -> Forwarder:
    return Forwarder(
        store,
        url,
        state,
        interval_s=0.2,
        reviews_to_hub=station,
        **kw,  # type: ignore[arg-type]
    )


def _label(label: str, reviewer: str, defect: str | None = None, comment: str = "") -> ReviewInput:
    return ReviewInput(ReviewLabel(label), reviewer, defect_class=defect, comment=comment)


def _reviewed(store: SqlResultStore, rid: str) -> bool:
    """The result is there and has a label in effect."""
    try:
        return store.get(rid).review is not None
    except ResultNotFoundError:
        return False


def _trail(store: SqlResultStore, rid: str) -> list[tuple[str | None, str | None, str]]:
    return [
        (None if e.label is None else e.label.value, e.defect_class, e.reviewer)
        for e in store.audit_trail(rid)
    ]


def _passes(fw: Forwarder, more: int) -> None:
    """Let the forwarder run `more` more passes (a guard against hanging, not a timing)."""
    target = fw._passes + more

    def done() -> bool:
        fw.poke()
        return fw._passes >= target

    wait_for(f"{more} passes", done)


def test_station_label_reaches_hub_and_hub_label_comes_back_once(
    tmp_path: Path, central_url: str, central: SqlResultStore
) -> None:
    hub = HubProcess(tmp_path / "hub", central_url)
    store = _station(tmp_path, "st-a", 3)
    # Labelled before the forwarder ever ran: the rows go first, then the label.
    store.set_review("st-a-000000", _label("good", "op-max", comment="a smudge, not a crack"))
    fw = _forwarder(
        store,
        central_url,
        tmp_path / "st-a",
        "st-a",
        hub_url=hub.url,
        token=hub.token,
        reviews_from_hub="st-a",
    ).start()
    try:
        wait_for("the station label centrally", lambda: _reviewed(central, "st-a-000000"))
        shown = json.loads(hub.get("/results/st-a-000000"))["review"]
        assert (shown["label"], shown["reviewer"], shown["comment"]) == (
            "good",
            "op-max@st-a",
            "a smudge, not a crack",
        )

        # QA relabels another part on the hub: it comes back to the station as qa-anna@hub.
        body = b'{"label": "defect", "defect_class": "crack"}'
        assert hub.review("st-a-000001", body) == 200
        wait_for("the hub label at st-a", lambda: store.get("st-a-000001").review is not None)
        _passes(fw, 3)
        # No ping-pong: one event each side for each label, nothing bounced.
        assert _trail(store, "st-a-000000") == [("good", None, "op-max")]
        assert _trail(central, "st-a-000000") == [("good", None, "op-max@st-a")]
        assert _trail(store, "st-a-000001") == [("defect", "crack", "qa-anna@hub")]
        assert _trail(central, "st-a-000001") == [("defect", "crack", "qa-anna")]
        assert fw.stats.reviews_sent == 1

        # The station relabels the part QA labelled: the station's label is in effect centrally,
        # and is not copied back again.
        store.set_review("st-a-000001", _label("defect", "op-max", "scratch"))
        wait_for(
            "the relabel centrally",
            lambda: _trail(central, "st-a-000001")[-1] == ("defect", "scratch", "op-max@st-a"),
        )
        _passes(fw, 3)
        assert len(_trail(store, "st-a-000001")) == 2
        assert len(_trail(central, "st-a-000001")) == 2
    finally:
        fw.close()
        store.close()
        hub.close()


def test_order_undo_and_the_hub_winning(
    tmp_path: Path, central_url: str, central: SqlResultStore
) -> None:
    store = _station(tmp_path, "st-b", 2)
    rid, other = "st-b-000000", "st-b-000001"
    store.set_review(rid, _label("good", "op-max"))
    store.set_review(rid, _label("defect", "op-max", "crack"))
    store.undo_review(rid, "op-max")  # back to good
    store.set_review(other, _label("good", "op-max"))
    fw = _forwarder(store, central_url, tmp_path / "st-b", "st-b").start()
    try:
        wait_for("the station's trail centrally", lambda: fw.stats.reviews_sent == 4)
        assert [e[0] for e in _trail(central, rid)] == ["good", "defect", "good"]
        review = central.get(rid).review
        assert review is not None and review.label is ReviewLabel.GOOD

        # QA relabels `other` on the hub; a later station undo must not erase QA's label.
        central.set_review(other, _label("defect", "qa-anna", "crack"))
        store.undo_review(other, "op-max")
        _passes(fw, 3)
        review = central.get(other).review
        assert review is not None and (review.label, review.reviewer) == (
            ReviewLabel.DEFECT,
            "qa-anna",
        )
        # A station undo of its own label in effect centrally takes it back there too.
        store.undo_review(rid, "op-max")  # good -> gone locally
        wait_for("the undo centrally", lambda: central.get(rid).review is None)
    finally:
        fw.close()
        store.close()


def test_a_crash_after_the_central_write_sends_no_duplicate(
    tmp_path: Path, central_url: str, central: SqlResultStore
) -> None:
    store = _station(tmp_path, "st-c", 1)
    rid = "st-c-000000"
    fw = _forwarder(store, central_url, tmp_path / "st-c", "st-c")
    try:
        while fw.forward_once():
            pass
        store.set_review(rid, _label("defect", "op-max", "crack"))
        assert fw.push_reviews() is False
        assert len(_trail(central, rid)) == 1
    finally:
        fw.close(drain_s=0)
    # The process died after the central write, before the cursor moved.
    CursorFile(tmp_path / "st-c" / STATION_REVIEW_CURSOR_FILE).write(0)
    again = _forwarder(store, central_url, tmp_path / "st-c", "st-c")
    try:
        again.push_reviews()
        assert _trail(central, rid) == [("defect", "crack", "op-max@st-c")]
        assert again.stats.reviews_sent == 0
        # A new label after the restart goes through as usual.
        store.set_review(rid, _label("good", "op-max"))
        again.push_reviews()
        assert [e[0] for e in _trail(central, rid)] == ["defect", "good"]
    finally:
        again.close(drain_s=0)
        store.close()


def test_labels_wait_for_their_rows(
    tmp_path: Path, central_url: str, central: SqlResultStore
) -> None:
    """A label on a row the central store lacks is not sent (no error), and goes once it is."""
    store = _station(tmp_path, "st-d", 2)
    store.set_review("st-d-000001", _label("good", "op-max"))
    fw = _forwarder(store, central_url, tmp_path / "st-d", "st-d", batch_size=1)
    try:
        assert fw.forward_once() is True  # one row of two: the labelled one is not central yet
        assert fw.push_reviews() is False
        assert fw.stats.reviews_sent == 0
        assert fw.forward_once() is True
        fw.push_reviews()
        assert _trail(central, "st-d-000001") == [("good", None, "op-max@st-d")]
    finally:
        fw.close(drain_s=0)
        store.close()


def test_a_label_changed_between_push_and_pull_is_not_bounced(
    tmp_path: Path, central_url: str, central: SqlResultStore
) -> None:
    """The station's own label, seen in the central trail, never comes back as NAME@hub."""
    store = _station(tmp_path, "st-e", 1)
    rid = "st-e-000000"
    fw = _forwarder(store, central_url, tmp_path / "st-e", "st-e", reviews_from_hub="st-e")
    try:
        fw.forward_once()
        store.set_review(rid, _label("defect", "op-max", "crack"))
        fw.push_reviews()
        store.set_review(rid, _label("good", "op-max"))  # before this pass pulls
        fw.pull_reviews()
        assert _trail(store, rid) == [("defect", "crack", "op-max"), ("good", None, "op-max")]
        fw.push_reviews()
        fw.pull_reviews()
        assert len(_trail(store, rid)) == 2
        assert _trail(central, rid)[-1] == ("good", None, "op-max@st-e")
    finally:
        fw.close(drain_s=0)
        store.close()
