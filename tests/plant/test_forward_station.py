"""`cellinspect run` with forwarding on, killed with -9 and restarted: nothing lost centrally.

The station's journal and store are the truth; the forwarder's cursor moves only after the
central store and the hub have a batch, so a kill at any point resends at most one batch,
which the central side already holds: every result still arrives exactly once, in order.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from cellinspect.storage.models import ResultRow
from cellinspect.users import Role, add_user
from tests.plant.forward_rig import HubProcess, central_engine, central_rows, scrape, wait_for
from tests.servers.postgres import PostgresServer, postgres_fixture
from tests.station.runner import StationProcess, write_station

pytestmark = pytest.mark.slow

postgres = postgres_fixture("module")
STATION = "cell-k"


@pytest.fixture
def central_url(postgres: PostgresServer) -> str:
    return postgres.url(postgres.create_database()).render_as_string(hide_password=False)


@pytest.fixture
def hub(tmp_path: Path, central_url: str) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub", central_url)
    yield process
    process.close()


def _station(path: Path, hub: HubProcess, count: int, seed: int) -> Path:
    return write_station(
        path,
        station_id=STATION,
        source={"type": "synthetic", "count": count, "seed": seed, "defect_rate": 0.5},
        trigger={"mode": "free_run"},
        forward={"enabled": True, "hub_url": hub.url, "batch_size": 4, "interval_s": 0.2},
        api={"enabled": True, "port": 0},
        status_every_s=0.2,
    )


def _local_ids(data_dir: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{data_dir / 'results.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(ResultRow.result_id).order_by(ResultRow.id)))
    finally:
        engine.dispose()


def _wait_source_end(proc: StationProcess) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = proc.wait_for("status", timeout=90)["status"]
        if status.get("source_ended"):
            return status


def test_a_station_killed_mid_run_loses_nothing_centrally(
    tmp_path: Path, central_url: str, hub: HubProcess
) -> None:
    env = {"CELLINSPECT_CENTRAL_DB_URL": central_url, "CELLINSPECT_HUB_TOKEN": hub.token}
    station_file = tmp_path / "station.yaml"
    data = tmp_path / "data"
    central = central_engine(central_url)
    try:
        with StationProcess(_station(station_file, hub, 400, seed=0), env=env) as proc:
            proc.wait_running()
            proc.wait_parts(12)
            assert proc.stop(signal.SIGKILL) == -signal.SIGKILL

        with StationProcess(_station(station_file, hub, 10, seed=1), env=env) as proc:
            running = proc.wait_running()
            assert running["links"]["forward"]["state"] in ("ok", "failing")
            _wait_source_end(proc)

            def arrived() -> bool:
                local = _local_ids(data)
                mine = [rid for rid, st in central_rows(central) if st == STATION]
                return len(local) >= 22 and mine == local

            wait_for("every stored result centrally", arrived, timeout=90)
            api = running["links"]["api"]["url"]
            with urllib.request.urlopen(f"{api}/metrics", timeout=10) as reply:
                metrics = reply.read().decode()
            assert 'cellinspect_station_link_state{link="forward",state="ok"} 1.0' in metrics
            assert "cellinspect_station_forward_backlog 0.0" in metrics
            assert proc.stop(signal.SIGTERM) == 0, proc.log_text()
        final = proc.stopped()["status"]["links"]["forward"]
        assert final["backlog"] == 0
        rows = central_rows(central)
        ids = [rid for rid, _ in rows]
        assert len(ids) == len(set(ids))
        assert ids == _local_ids(data)  # all, once, in the station's order
        assert "password" not in proc.log_text().lower()
        assert central_url.split("@")[0].rsplit(":", 1)[1] not in proc.log_text()
    finally:
        central.dispose()


def test_labels_both_ways_are_counted_on_the_stations_metrics(
    tmp_path: Path, central_url: str, hub: HubProcess
) -> None:
    """A label set on the station reaches the hub, one set on the hub comes back: the
    station's /metrics counts one of each, and no more after further passes."""
    env = {"CELLINSPECT_CENTRAL_DB_URL": central_url, "CELLINSPECT_HUB_TOKEN": hub.token}
    token = add_user(tmp_path / "data" / "users.yaml", "op-max", Role.QA)
    station = write_station(
        tmp_path / "station.yaml",
        station_id=STATION,
        source={"type": "synthetic", "count": 6, "seed": 2, "defect_rate": 0.5},
        trigger={"mode": "free_run"},
        forward={
            "enabled": True,
            "hub_url": hub.url,
            "interval_s": 0.2,
            "reviews_from_hub": True,
        },
        api={"enabled": True, "port": 0},
        status_every_s=0.2,
    )
    central = central_engine(central_url)
    try:
        with StationProcess(station, env=env) as proc:
            api = proc.wait_running()["links"]["api"]["url"]
            _wait_source_end(proc)
            wait_for(
                "the station's rows centrally",
                lambda: (
                    [r for r, st in central_rows(central) if st == STATION]
                    == _local_ids(tmp_path / "data")
                ),
                timeout=90,
            )
            first, second = _local_ids(tmp_path / "data")[:2]
            request = urllib.request.Request(
                f"{api}/results/{first}/review",
                data=b'{"label": "good"}',
                method="PUT",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                assert reply.status == 200
            assert hub.review(second, b'{"label": "defect", "defect_class": "crack"}') == 200

            def counted() -> bool:
                seen = scrape(api)
                return (
                    seen.get('cellinspect_station_forward_reviews_total{direction="sent"}') == 1
                    and seen.get('cellinspect_station_forward_reviews_total{direction="received"}')
                    == 1
                )

            wait_for("one label each way on /metrics", counted, timeout=60)
            shown = json.loads(hub.get(f"/results/{first}"))["review"]
            assert (shown["label"], shown["reviewer"]) == ("good", f"op-max@{STATION}")
            for _ in range(5):  # a second more (status every 0.2 s): passes every 0.2 s
                proc.wait_for("status", timeout=30)
            seen = scrape(api)
            assert seen['cellinspect_station_forward_reviews_total{direction="sent"}'] == 1
            assert seen['cellinspect_station_forward_reviews_total{direction="received"}'] == 1
            shown_counts = (-1, -1)
            for _ in range(600):  # status records are queued from the start: read up to now
                link = proc.wait_for("status", timeout=30)["status"]["links"]["forward"]
                shown_counts = (link["reviews_sent"], link["reviews_received"])
                if shown_counts == (1, 1):
                    break
            assert shown_counts == (1, 1)  # the status line says what /metrics says
            assert proc.stop(signal.SIGTERM) == 0, proc.log_text()
    finally:
        central.dispose()
