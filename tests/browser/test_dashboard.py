"""The dashboard in headless Chromium: every chart drawn (non-blank canvas pixels), one I chart
per measurement, flagged points in the charts' data and drawn in red, sign-in with a token.

The store holds 200 parts a minute apart with two measured dimensions (seeded normal noise, a
part far off size at SPIKE) and a burst of rejects in one subgroup of 25.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest

from cellinspect.entities import InspectedFrame, RoiDecision, Verdict
from cellinspect.settings import StationSettings
from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.storage.factory import open_store
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import EPOCH, synthetic_result
from tests.conftest import ROOT
from tests.station.runner import write_station

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

PARTS = 200
SPIKE = 120
BURST = range(150, 175)  # the 7th subgroup of 25: most parts rejected
MEASURED = ("bore_diameter_mm", "outer_diameter_mm")
FIXED_CHARTS = ("chart-yield", "chart-pareto", "chart-reject")
FLAG_BGR = np.array([77, 72, 229])  # the page's colour of a flagged point, #e5484d


def seeded_frames() -> list[InspectedFrame]:
    rng = np.random.default_rng(11)
    outer = rng.normal(60.0, 0.05, PARTS)
    outer[SPIKE] += 0.6
    bore = rng.normal(20.0, 0.04, PARTS)
    frames = []
    for i in range(PARTS):
        rejected = (i in BURST and i % 5 != 0) or (i not in BURST and i % 20 == 3)
        verdict = Verdict.FAIL if rejected else Verdict.PASS
        r = synthetic_result(
            i,
            verdict,
            defect_class=("scratch", "dent", "crack")[i % 3],
            captured=EPOCH + timedelta(minutes=i),
        )
        scores = {"measure:outer_diameter_mm": outer[i], "measure:bore_diameter_mm": bore[i]}
        measure = RoiDecision(
            "measure", Verdict.PASS, (), None, {k: float(v) for k, v in scores.items()}
        )
        frames.append(InspectedFrame(dataclasses.replace(r, rois=(*r.rois, measure))))
    return frames


@pytest.fixture
def store(settings: StationSettings) -> Iterator[SqlResultStore]:
    s = open_store(settings)
    s.add_many(seeded_frames())
    yield s
    s.close()


def open_dashboard(
    browser_context: Any, url: str, token: str | None
) -> tuple[Any, list[str], list[str]]:
    """The page, its script errors, and the 'STATUS path' of every refused request."""
    page = browser_context.new_page()
    if token is not None:
        page.add_init_script(f"sessionStorage.setItem('cellinspect.token', {json.dumps(token)})")
    errors: list[str] = []
    refused: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: refused.append(f"{r.status} {urlsplit(r.url).path}") if r.status >= 400 else None,
    )
    page.goto(f"{url}/dashboard")
    return page, errors, refused


def wait_drawn(page: Any) -> None:
    page.wait_for_function(
        "n => Object.keys(window.cellinspectDashboard.charts).length >= n"
        " && document.body.dataset.loading === '0'",
        arg=len(FIXED_CHARTS) + len(MEASURED),
    )


def canvas_pixels(page: Any, canvas_id: str) -> np.ndarray:
    png = page.locator(f"[id='{canvas_id}']").screenshot()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def drawn_share(page: Any, canvas_id: str) -> float:
    """Share of the canvas's own pixels that are painted (not transparent), from its bitmap."""
    url = page.evaluate("id => document.getElementById(id).toDataURL('image/png')", canvas_id)
    png = base64.b64decode(url.split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 3 and image.shape[2] == 4
    return float((image[:, :, 3] > 0).mean())


def red_pixels(image: np.ndarray) -> int:
    return int((np.abs(image.reshape(-1, 3).astype(int) - FLAG_BGR).max(axis=1) < 30).sum())


def test_every_chart_is_drawn_with_its_flagged_points(
    browser_context: Any, server_url: str, viewer_token: str, tmp_path: Path
) -> None:
    page, errors, refused = open_dashboard(browser_context, server_url, viewer_token)
    try:
        wait_drawn(page)
        ids = sorted(page.evaluate("() => Object.keys(window.cellinspectDashboard.charts)"))
        assert ids == sorted([*FIXED_CHARTS, *(f"chart-imr-{m}" for m in MEASURED)])
        expect(page.locator("#chart-health")).to_be_hidden()  # no station: no health to chart
        for chart_id in ids:
            assert drawn_share(page, chart_id) > 0.02, chart_id
        # The part far off size is a flagged point of the outer-diameter chart, drawn in red.
        flagged = page.evaluate(
            "() => Chart.getChart('chart-imr-outer_diameter_mm').data.datasets[1].data"
        )
        assert flagged[SPIKE] is not None
        assert red_pixels(canvas_pixels(page, "chart-imr-outer_diameter_mm")) > 20
        # The burst of rejects is flagged on the p-chart (subgroup 7 of 25 parts).
        p_flags = page.evaluate("() => Chart.getChart('chart-reject').data.datasets[1].data")
        assert len(p_flags) == PARTS // 25
        assert p_flags[BURST.start // 25] is not None
        assert red_pixels(canvas_pixels(page, "chart-reject")) > 20
        rows = page.locator("#capability tbody tr")
        expect(rows).to_have_count(len(MEASURED))
        expect(page.locator("#station-note")).to_contain_text("Not a running station")
        page.screenshot(path=tmp_path / "dashboard.png", full_page=True)  # kept for a look
    finally:
        page.close()
    assert errors == []
    assert refused == ["404 /station"]  # `serve` is not a running station


def test_sign_in_with_a_token_then_the_charts_appear(
    browser_context: Any, server_url: str, viewer_token: str
) -> None:
    page, errors, refused = open_dashboard(browser_context, server_url, None)
    try:
        expect(page.locator("#signin")).to_be_visible()
        assert page.evaluate("() => Object.keys(window.cellinspectDashboard.charts).length") == 0
        assert drawn_share(page, "chart-yield") < 0.002  # nothing drawn yet
        page.fill("#token", "ci_000000000000_wrong")
        page.press("#token", "Enter")
        expect(page.locator("#signin-error")).to_contain_text("not valid")
        page.fill("#token", viewer_token)
        page.press("#token", "Enter")
        expect(page.locator("#signin")).to_be_hidden()
        expect(page.locator("#whoami")).to_have_text("vic (viewer)")
        wait_drawn(page)
        assert drawn_share(page, "chart-yield") > 0.02  # the same canvas, drawn
        assert page.evaluate("sessionStorage.getItem('cellinspect.token')") == viewer_token
    finally:
        page.close()
    assert errors == []
    assert set(refused) == {"401 /me", "404 /station"}  # no token, the wrong one; not a station


def dimmed_line(folder: Path) -> None:
    """The 40 sample images as they are, then the same 40 at 55 % of the light."""
    folder.mkdir()
    samples = sorted((ROOT / "sample_images").glob("*.bmp"))
    for i, path in enumerate(samples + samples):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None
        if i >= len(samples):
            image = np.asarray(cv2.convertScaleAbs(image, alpha=0.55), dtype=np.uint8)
        cv2.imwrite(str(folder / f"part_{i:03d}.bmp"), image)


def test_a_running_station_shows_links_health_alarms_and_measured_dimensions(
    browser_context: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real station measures a folder of parts whose lamp dims halfway: the dashboard shows
    its links, the brightness alarm with its level, the health trend and an I chart per
    measured dimension with Cp/Cpk from the recipe's tolerances."""
    token = "dashboard-token-7a2f"
    monkeypatch.setenv("CELLINSPECT_API_TOKEN", token)
    dimmed_line(tmp_path / "parts")
    path = write_station(
        tmp_path / "station.yaml",
        recipes={1: str(ROOT / "recipes" / "flange-measure.yaml")},
        source={"type": "folder", "path": str(tmp_path / "parts"), "pattern": "*.bmp"},
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
        health={"baseline_parts": 40, "window": 20, "score_window": 10},
    )
    runtime = StationRuntime(load_station(path), exit_when_source_ends=True)
    with runtime:
        assert runtime.wait(300), "the folder source should end"
        runtime.interface.wait_idle(60)
        assert runtime.api is not None
        page, errors, refused = open_dashboard(browser_context, runtime.api.url, token)
        try:
            page.wait_for_function(
                "() => window.cellinspectDashboard.charts['chart-health']"
                " && document.body.dataset.loading === '0'"
            )
            assert drawn_share(page, "chart-health") > 0.02
            expect(page.locator("#links")).to_contain_text("camera")
            brightness = page.locator("#health tbody tr", has_text="brightness")
            expect(brightness.locator("td").nth(1)).to_have_text("alarm")
            expect(brightness.locator("td").nth(1)).to_have_class("level-alarm")
            outer = page.locator("#capability tbody tr", has_text="outer_diameter_mm")
            expect(outer).to_have_count(1)
            cpk = outer.locator("td").nth(5).inner_text()
            assert cpk != "\N{EN DASH}" and float(cpk) > 0  # tolerance from the station's recipe
            assert drawn_share(page, "chart-imr-outer_diameter_mm") > 0.02
        finally:
            page.close()
    assert errors == [] and refused == []
