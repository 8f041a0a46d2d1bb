"""The review page's Teach panel in headless Chromium, on a running in-process station.

An operator starts a session from the panel, parts are triggered on the line, the operator
confirms and rejects them by their thumbnails, and the panel shows the fit and the version
put in shadow. A viewer does not see the Teach button.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.users import Role, add_user
from tests.conftest import ROOT
from tests.station.runner import write_station

from .conftest import EXPECTED_REFUSAL

pytestmark = [pytest.mark.browser, pytest.mark.slow]
expect = pytest.importorskip("playwright.sync_api").expect

SAMPLES = sorted((ROOT / "sample_images").glob("*.bmp"))
GOOD = [p for p in SAMPLES if p.stem.endswith("_good")]
DEFECT = next(p for p in SAMPLES if p.stem.endswith("_dent"))
WANTED = 8
FIT_TIMEOUT_MS = 180_000  # the fit runs on the station's CPU beside the browser
USERS = (("otto", Role.OPERATOR), ("vic", Role.VIEWER))


@pytest.fixture
def line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[StationRuntime, dict[str, str]]]:
    """Good parts, with the defect third in line; its store, users and API in tmp_path."""
    monkeypatch.delenv("CELLINSPECT_API_TOKEN", raising=False)
    source = tmp_path / "images"
    source.mkdir()
    for i, image in enumerate([*GOOD[:2], DEFECT, *GOOD[2:WANTED]]):
        shutil.copy(image, source / f"{i:03d}_{image.name}")
    path = write_station(
        tmp_path / "station.yaml",
        source={"type": "folder", "path": str(source), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
        store={"data_dir": str(tmp_path / "data")},
    )
    users = tmp_path / "data" / "users.yaml"
    users.parent.mkdir(parents=True)
    tokens = {name: add_user(users, name, role) for name, role in USERS}
    runtime = StationRuntime(load_station(path), interface_overrides={"deadline_ms": 5000.0})
    with runtime:
        yield runtime, tokens


def open_page(context: Any, url: str, token: str, errors: list[str]) -> Any:
    page = context.new_page()
    page.add_init_script(f"sessionStorage.setItem('cellinspect.token', {json.dumps(token)})")
    page.on("pageerror", lambda err: errors.append(str(err)))

    def on_console(msg: Any) -> None:
        if msg.type == "error" and not EXPECTED_REFUSAL.search(msg.text):
            errors.append(msg.text)

    page.on("console", on_console)
    page.goto(f"{url}/review")
    return page


def test_an_operator_teaches_from_the_panel(
    browser_context: Any, line: tuple[StationRuntime, dict[str, str]]
) -> None:
    station, tokens = line
    assert station.api is not None
    url = station.api.url
    errors: list[str] = []
    viewer = open_page(browser_context, url, tokens["vic"], errors)
    expect(viewer.locator("#whoami")).to_contain_text("vic (viewer)")
    expect(viewer.locator("#teach-button")).to_be_hidden()
    viewer.close()

    page = open_page(browser_context, url, tokens["otto"], errors)
    try:
        expect(page.locator("#whoami")).to_contain_text("otto (operator)")
        page.click("#teach-button")
        expect(page.locator("#teach")).to_be_visible()
        expect(page.locator("#teach-state")).to_contain_text("No teach session yet")
        expect(page.locator("#teach-slot option")).to_have_text(["flange-anomaly"])
        page.fill("#teach-wanted", str(WANTED))
        page.click("#teach-start")
        expect(page.locator("#teach-state")).to_have_attribute("data-state", "collecting")
        expect(page.locator("#teach-state")).to_contain_text(f"0 of {WANTED} confirmed")
        expect(page.locator("#teach-form")).to_be_hidden()

        result_ids = [station.trigger(part_id=n).result.result_id for n in range(1, WANTED + 1)]
        cards = page.locator("#teach-parts .teach-part")
        expect(cards).to_have_count(WANTED)
        expect(page.locator("#teach-parts .teach-part img").first).to_have_js_property(
            "complete", True
        )
        defect = page.locator(f'.teach-part[data-result="{result_ids[2]}"]')
        defect.locator(".teach-reject").click()
        expect(defect).to_have_attribute("data-status", "rejected")
        for rid in result_ids[:2] + result_ids[3:]:
            card = page.locator(f'.teach-part[data-result="{rid}"]')
            card.locator(".teach-confirm").click()
            expect(card).to_have_attribute("data-status", "confirmed")
        expect(page.locator("#teach-state")).to_contain_text(f"{WANTED - 1} of {WANTED} confirmed")

        last = station.trigger(part_id=WANTED + 1).result.result_id  # takes the rejected place
        card = page.locator(f'.teach-part[data-result="{last}"]')
        card.locator(".teach-confirm").click()
        expect(page.locator("#teach-version")).to_contain_text(
            "judges in shadow", timeout=FIT_TIMEOUT_MS
        )
        expect(page.locator("#teach-state")).to_have_attribute("data-state", "shadow")
        expect(page.locator("#teach-parts .teach-confirm")).to_have_count(0)  # parts final
        shadow = station.shadow
        assert shadow is not None and shadow.version in page.inner_text("#teach-version")
    finally:
        page.close()
    assert errors == [], f"errors on the page: {errors}"
