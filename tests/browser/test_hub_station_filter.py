"""The hub's station filter in headless Chromium: GET /stations, the review page's selector
(results and live events of one station), the choice shared with the dashboard.

The hub app (create_hub_app) serves a store holding three stations' results; live events go
into the hub's own EventBroker, the way hub_events puts the stations' MQTT messages there.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from cellinspect.api.events import EventBroker, result_event
from cellinspect.api.server import ApiServerThread
from cellinspect.entities import Verdict
from cellinspect.plant.hub import create_hub_app
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import EPOCH, synthetic_frame, synthetic_result
from tests.browser.conftest import EXPECTED_REFUSAL

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect
# The review page asks again for a result whose live event came before the result itself.
EARLY_EVENT_404 = re.compile(r"Failed to load resource: .* status of 404")

STATIONS = {"st-a": ("line-1", 4), "st-b": ("line-2", 3), "st-c": ("line-2", 2)}


def _frame(station: str, i: int, verdict: Verdict) -> Any:
    line, _ = STATIONS[station]
    r = synthetic_result(
        i,
        verdict,
        defect_class="dent" if verdict is not Verdict.PASS else None,
        prefix=f"{station}-",
        station_id=station,
        captured=EPOCH + timedelta(minutes=i),
    )
    return synthetic_frame(dataclasses.replace(r, line=line, site="plant-a"), size=64)


@pytest.fixture
def store(settings: StationSettings) -> Iterator[SqlResultStore]:
    """Each station: `n` rejects (FAIL) and one PASS."""
    s = open_store(settings)
    frames = []
    for station, (_, n) in STATIONS.items():
        frames += [_frame(station, i, Verdict.FAIL) for i in range(n)]
        frames.append(_frame(station, n, Verdict.PASS))
    s.add_many(frames)
    yield s
    s.close()


@pytest.fixture
def hub_events(
    settings: StationSettings, store: SqlResultStore
) -> Iterator[tuple[str, EventBroker]]:
    app = create_hub_app(settings, store)
    server = ApiServerThread(app, port=0).start()
    broker: EventBroker = app.state.services.events
    yield server.url, broker
    broker.close()
    server.stop()


@pytest.fixture
def server_url(hub_events: tuple[str, EventBroker]) -> str:
    return hub_events[0]


def _watch(page: Any, errors: list[str]) -> None:
    page.on("pageerror", lambda err: errors.append(str(err)))

    def on_console(msg: Any) -> None:
        if msg.type != "error" or EXPECTED_REFUSAL.search(msg.text):
            return
        url = str(msg.location.get("url", ""))
        # /results/<id>: the early live event, asked again; /station: the dashboard asks
        # whether this is a running station (the hub is not).
        if EARLY_EVENT_404.search(msg.text) and (
            url.endswith("/results/st-b-000051") or url.endswith("/station")
        ):
            return
        errors.append(f"{msg.text} {msg.location}")

    page.on("console", on_console)


@pytest.fixture
def page(browser_context: Any, server_url: str, qa_token: str) -> Iterator[Any]:
    """The hub's review page, signed in as QA; no script or console error allowed."""
    p = browser_context.new_page()
    p.add_init_script(f"sessionStorage.setItem('cellinspect.token', {json.dumps(qa_token)})")
    errors: list[str] = []
    _watch(p, errors)
    p.goto(f"{server_url}/review")
    p.wait_for_selector("#gallery .card")
    yield p
    p.close()
    assert errors == [], f"errors on the page: {errors}"


def _cards(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#gallery .card .id").all_text_contents()]


def test_get_stations_lists_every_station_with_counts(server_url: str, viewer_token: str) -> None:
    request = urllib.request.Request(
        f"{server_url}/stations", headers={"Authorization": f"Bearer {viewer_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        items = json.loads(reply.read())["items"]
    assert [i["station_id"] for i in items] == ["st-a", "st-b", "st-c"]
    for item in items:
        line, n = STATIONS[item["station_id"]]
        assert (item["line"], item["site"], item["results"]) == (line, "plant-a", n + 1)
        assert item["last_seen"].startswith((EPOCH + timedelta(minutes=n)).isoformat()[:19])


def test_the_station_selector_filters_results_and_live_events(
    page: Any, hub_events: tuple[str, EventBroker], store: SqlResultStore
) -> None:
    _, broker = hub_events
    field = page.locator("#f-station-field")
    expect(field).to_be_visible()
    options = page.locator("#f-station option")
    expect(options).to_have_count(4)
    assert options.nth(2).get_attribute("value") == "st-b"
    assert (options.nth(2).get_attribute("title") or "").startswith("st-b: 4 result(s), last ")
    expect(options.nth(2)).to_have_text("st-b (line-2 · plant-a)")
    expect(page.locator("#gallery .card")).to_have_count(4 + 3 + 2)  # every station's rejects

    with page.expect_request(lambda r: "/results?" in r.url and "station_id=st-b" in r.url):
        page.select_option("#f-station", "st-b")
    expect(page.locator("#gallery .card")).to_have_count(3)
    assert sorted(_cards(page)) == [f"st-b-00000{i}" for i in range(3)]

    # Live: a reject of another station is not shown; one of st-b is, even when its event
    # (from MQTT) comes before the forwarder has stored it.
    page.wait_for_selector('body[data-live="on"]')
    other = _frame("st-a", 50, Verdict.FAIL)
    mine = _frame("st-b", 51, Verdict.FAIL)
    store.add_many([other])
    broker.publish("result", {**result_event(other.result), "line": "line-1"})
    broker.publish("result", {**result_event(mine.result), "line": "line-2"})
    page.wait_for_timeout(700)  # the first retry of the early event has been refused
    store.add_many([mine])
    expect(page.locator("#gallery .card")).to_have_count(4)
    assert "st-b-000051" in _cards(page) and "st-a-000050" not in _cards(page)

    # A station state from MQTT shows in the list; an unknown station joins it.
    broker.publish("state", {"station_id": "st-c", "line": "line-2", "state": "offline"})
    broker.publish("state", {"station_id": "st-d", "line": "line-9", "state": "online"})
    expect(page.locator("#f-station option[value='st-c']")).to_contain_text("offline")
    expect(page.locator("#f-station option")).to_have_count(5)
    # An alarm of the station shown is reported; one of another station is not.
    broker.publish("alarm", {"station_id": "st-a", "code": "X", "text": "X: st-a", "active": True})
    broker.publish("alarm", {"station_id": "st-b", "code": "Y", "text": "Y: st-b", "active": True})
    expect(page.locator("#status")).to_contain_text("alarm at st-b: Y: st-b")

    # All stations again.
    page.select_option("#f-station", "")
    expect(page.locator("#gallery .card")).to_have_count(4 + 3 + 2 + 2)


def test_the_dashboard_offers_the_stations_and_keeps_the_choice(
    browser_context: Any, server_url: str, qa_token: str
) -> None:
    page = browser_context.new_page()
    errors: list[str] = []
    _watch(page, errors)
    page.add_init_script(f"sessionStorage.setItem('cellinspect.token', {json.dumps(qa_token)})")
    try:
        page.goto(f"{server_url}/review")
        page.wait_for_selector("#gallery .card")
        page.select_option("#f-station", "st-c")
        expect(page.locator("#gallery .card")).to_have_count(2)

        with (
            page.expect_request(
                lambda r: "/spc/reject-rate?" in r.url and "station_id=st-c" in r.url
            ),
            page.expect_response(lambda r: "/stats?" in r.url) as stats,
        ):
            page.goto(f"{server_url}/dashboard")
        assert "station_id=st-c" in stats.value.url
        assert stats.value.json()["total"] == 2 + 1  # st-c's rejects and its PASS, no other
        expect(page.locator("#f-station")).to_have_value("st-c")
        values = page.locator("#f-station-list option").evaluate_all("os => os.map(o => o.value)")
        assert values == ["st-a", "st-b", "st-c"]

        page.fill("#f-station", "st-a")
        page.locator("#filters").evaluate("f => f.requestSubmit()")
        page.wait_for_function("sessionStorage.getItem('cellinspect.station') === 'st-a'")
        page.goto(f"{server_url}/review")
        expect(page.locator("#f-station")).to_have_value("st-a")
        expect(page.locator("#gallery .card")).to_have_count(4)
    finally:
        page.close()
    assert errors == [], errors
