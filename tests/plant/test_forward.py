"""Store-and-forward: three stations' stores, one central PostgreSQL, one hub process.

Every result arrives centrally exactly once with its station id, in each station's order;
kept images are fetchable from the hub with the sha256 the station recorded; a central
database that crashes mid-run leaves a backlog at each station that drains once it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cellinspect.entities import Verdict
from cellinspect.plant.forwarder import Forwarder
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ImageKind
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from tests.plant.forward_rig import HubProcess, central_engine, central_rows, sha256, wait_for
from tests.servers.postgres import PostgresServer, postgres_fixture

pytestmark = pytest.mark.slow

postgres = postgres_fixture("module")
STATIONS = ("st-a", "st-b", "st-c")


@pytest.fixture
def central_url(postgres: PostgresServer) -> str:
    return postgres.url(postgres.create_database()).render_as_string(hide_password=False)


@pytest.fixture
def hub(tmp_path: Path, central_url: str) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub", central_url)
    yield process
    process.close()


def _local_store(tmp_path: Path, station: str) -> SqlResultStore:
    settings = StationSettings(
        data_dir=tmp_path / station, pass_sample_rate=0.0, disk_budget_mb=None
    )
    return open_store(settings)


def _add(store: SqlResultStore, station: str, start: int, count: int) -> None:
    """`count` results, every third one a FAIL (whose images are kept)."""
    frames = []
    for i in range(start, start + count):
        verdict = Verdict.FAIL if i % 3 == 0 else Verdict.PASS
        result = synthetic_result(
            i, verdict, defect_class="scratch", prefix=f"{station}-", station_id=station
        )
        frames.append(synthetic_frame(result))
    store.add_many(frames)


def _local_ids(store: SqlResultStore) -> list[str]:
    from sqlalchemy import select

    from cellinspect.storage.models import ResultRow

    with store.engine.connect() as conn:
        return list(conn.scalars(select(ResultRow.result_id).order_by(ResultRow.id)))


def _backlog_is(fw: Forwarder, n: int) -> Callable[[], bool]:
    return lambda: fw.stats.backlog == n


def _state_is(fw: Forwarder, state: str) -> Callable[[], bool]:
    return lambda: fw.stats.state == state


def _passes_after(fw: Forwarder, n: int) -> Callable[[], bool]:
    fw.poke()
    return lambda: fw._passes > n


def test_three_stations_exactly_once_through_a_central_crash(
    tmp_path: Path,
    postgres: PostgresServer,
    central_url: str,
    hub: HubProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cellinspect.plant.forwarder")
    stores = {s: _local_store(tmp_path, s) for s in STATIONS}
    forwarders = {
        s: Forwarder(
            stores[s],
            central_url,
            tmp_path / s,
            hub_url=hub.url,
            token=hub.token,
            batch_size=7,
            interval_s=0.2,
        )
        for s in STATIONS
    }
    central = central_engine(central_url)
    try:
        for s in STATIONS:
            _add(stores[s], s, 0, 12)
            forwarders[s].start()
        wait_for("36 central results", lambda: len(central_rows(central)) == 36)
        for fw in forwarders.values():  # images too: the cursor moved past the last row
            wait_for("no backlog", _backlog_is(fw, 0))

        # The central database crashes; the stations keep judging and storing.
        postgres.stop("immediate")
        for s in STATIONS:
            _add(stores[s], s, 12, 15)
            forwarders[s].poke()
        for s in STATIONS:
            fw = forwarders[s]
            wait_for(f"{s} backlog", _backlog_is(fw, 15))
            wait_for(f"{s} failing", _state_is(fw, "failing"))
            assert fw.stats.lag_s is not None and fw.stats.lag_s > 0
        postgres.restart()
        for s in STATIONS:
            forwarders[s].poke()
            fw = forwarders[s]
            wait_for(f"{s} drained", _backlog_is(fw, 0), timeout=90)

        rows = central_rows(central)
        ids = [rid for rid, _ in rows]
        assert len(ids) == len(set(ids)) == 3 * 27
        for s in STATIONS:
            mine = [rid for rid, station in rows if station == s]
            assert mine == _local_ids(stores[s])  # all of them, once, in the station's order
            assert forwarders[s].stats.state == "ok"

        # Rejects' images: fetchable from the hub, same bytes as the station recorded.
        fails = 0
        for s in STATIONS:
            for rid in _local_ids(stores[s]):
                local = stores[s].get(rid)
                if local.result.verdict is not Verdict.FAIL:
                    assert hub_image_url(hub, rid) is None
                    continue
                fails += 1
                for kind in (ImageKind.IMAGE, ImageKind.OVERLAY):
                    body = hub.get(f"/results/{rid}/{kind.value}")
                    assert sha256(body) == local.images[kind].sha256
        assert fails == 3 * 9

        # One warning per station for the outage and one for the recovery; no secret in any.
        lines = [r.getMessage() for r in caplog.records if r.name.endswith("forwarder")]
        assert sum("cannot forward" in m for m in lines) == 3, lines
        assert sum("forwarding to" in m and "again" in m for m in lines) == 3, lines
        assert not [m for m in lines if postgres.password in m or hub.token in m]
    finally:
        if not postgres.running:  # a failure mid-outage must not leave the next test without it
            postgres.restart()
        for fw in forwarders.values():
            fw.close()
        for store in stores.values():
            store.close()
        central.dispose()


def hub_image_url(hub: HubProcess, result_id: str) -> object:
    import json

    return json.loads(hub.get(f"/results/{result_id}"))["image_url"]


def test_stopping_ships_what_was_stored_just_before(
    tmp_path: Path, central_url: str, hub: HubProcess
) -> None:
    """A station that stops with the link up leaves no backlog behind (no wait for a pass)."""
    store = _local_store(tmp_path, "st-z")
    fw = Forwarder(
        store, central_url, tmp_path / "st-z", hub_url=hub.url, token=hub.token, interval_s=600
    )
    central = central_engine(central_url)
    try:
        _add(store, "st-z", 0, 4)
        fw.start()
        wait_for("the first pass", lambda: len(central_rows(central)) == 4)
        _add(store, "st-z", 4, 5)  # the next pass would be in ten minutes
        fw.close(drain_s=60)
        assert [rid for rid, _ in central_rows(central)] == _local_ids(store)
        assert len(_local_ids(store)) == 9
        assert fw.stats.backlog == 0
    finally:
        fw.close()
        store.close()
        central.dispose()


def test_a_label_set_on_the_hub_flows_back_to_its_station(
    tmp_path: Path, central_url: str, hub: HubProcess
) -> None:
    stores = {s: _local_store(tmp_path, s) for s in ("st-a", "st-b")}
    forwarders = {
        s: Forwarder(
            stores[s],
            central_url,
            tmp_path / s,
            hub_url=hub.url,
            token=hub.token,
            interval_s=0.2,
            reviews_from_hub=s,
        ).start()
        for s in stores
    }
    central = central_engine(central_url)
    try:
        for s in stores:
            _add(stores[s], s, 0, 3)
        wait_for("6 central results", lambda: len(central_rows(central)) == 6)
        body = b'{"label": "defect", "defect_class": "crack", "comment": "seen on the hub"}'
        assert hub.review("st-a-000000", body) == 200
        local = stores["st-a"]
        wait_for("the label at st-a", lambda: local.get("st-a-000000").review is not None)
        review = local.get("st-a-000000").review
        assert review is not None
        assert (review.label.value, review.defect_class, review.reviewer) == (
            "defect",
            "crack",
            "qa-anna@hub",
        )
        # One more pass of both forwarders: st-b's store is untouched, st-a's label not redone.
        for fw in forwarders.values():
            wait_for("two more passes", _passes_after(fw, fw._passes + 1))
        assert all(stores["st-b"].get(r).review is None for r in _local_ids(stores["st-b"]))
        assert [e.revision for e in local.audit_trail("st-a-000000")] == [1]
    finally:
        for fw in forwarders.values():
            fw.close()
        for store in stores.values():
            store.close()
        central.dispose()
