"""/docs (Swagger UI) and /redoc (ReDoc) in headless Chromium with no network but the station.

Every request to a host other than 127.0.0.1 is aborted and recorded, as on a plant network
without internet: the pages must still render the station's operations, and must not even
try to reach a CDN, a font service or the Swagger validator. The one external URL in the
assets, ReDoc's Redocly logo, is refused by the page's Content-Security-Policy inside the
browser (Playwright reports it as a request that failed with 'csp'; it is never sent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

TITLE = "cellinspect station API"
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
LOCAL_SCHEMES = {"data", "blob"}  # in-page resources; never leave the browser


@dataclass
class OfflinePage:
    page: Any
    base: str
    requested: list[str] = field(default_factory=list)  # every non-local request seen
    refused_by_csp: list[str] = field(default_factory=list)  # of those, never sent
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.base}{path}")

    @property
    def external(self) -> list[str]:
        """Requests that left the browser for another host (and were aborted here)."""
        return [url for url in self.requested if url not in self.refused_by_csp]

    def unexpected_errors(self) -> list[str]:
        refusal = re.compile(r"Content Security Policy")
        return [
            text
            for text in self.errors
            if not (refusal.search(text) and any(url in text for url in self.refused_by_csp))
        ]


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or (
        parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname == "127.0.0.1"
    )


@pytest.fixture
def offline(browser_context: Any, server_url: str) -> Iterator[OfflinePage]:
    page = browser_context.new_page()
    state = OfflinePage(page, server_url)

    def gate(route: Any) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            route.abort("internetdisconnected")

    def on_request(request: Any) -> None:  # routed or not (workers, ...), sent or refused
        if not is_local(request.url):
            state.requested.append(request.url)

    def on_failed(request: Any) -> None:
        if not is_local(request.url) and "csp" in (request.failure or "").lower():
            state.refused_by_csp.append(request.url)

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            state.errors.append(msg.text)

    page.route("**/*", gate)
    page.on("request", on_request)
    page.on("requestfailed", on_failed)
    page.on("console", on_console)
    page.on("pageerror", lambda err: state.errors.append(str(err)))
    yield state
    page.close()


def operation_count(base: str) -> int:
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    return sum(len(ops) for ops in paths.values())


def test_swagger_ui_renders_every_operation_offline(offline: OfflinePage) -> None:
    page = offline.page
    offline.goto("/docs")
    expect(page.locator(".information-container .title")).to_contain_text(TITLE)
    results = page.locator("#operations-results-list_results_results_get")
    expect(results).to_be_visible()
    expect(results.locator(".opblock-summary-method")).to_have_text("GET")
    expect(results.locator(".opblock-summary-path")).to_have_text("/results")
    expect(page.locator(".opblock")).to_have_count(operation_count(offline.base))
    expect(
        page.locator("#operations-reviews-put_review_results__result_id__review_put")
    ).to_be_visible()
    # The bearer token and X-API-Token schemes from the schema: the Authorize button.
    expect(page.locator(".auth-wrapper .authorize")).to_be_visible()

    # Try it out against the station itself: the UI is live, not just drawn.
    health = page.locator("#operations-health-health_health_get")
    health.locator(".opblock-summary-control").click()
    health.get_by_role("button", name="Try it out").click()
    health.get_by_role("button", name="Execute").click()
    expect(health.locator(".live-responses-table tbody .response-col_status")).to_have_text(
        re.compile(r"^\s*200")
    )

    assert offline.requested == []
    assert offline.errors == []


def test_redoc_renders_every_operation_offline(offline: OfflinePage) -> None:
    page = offline.page
    offline.goto("/redoc")
    expect(page.locator("redoc h1").first).to_contain_text(TITLE)
    section = page.locator('[data-section-id="tag/results/operation/list_results_results_get"]')
    expect(section.locator("h2")).to_have_text("List Results")
    expect(section.get_by_text("/results", exact=True).first).to_be_attached()
    expect(page.locator('[data-section-id^="tag/"][data-section-id*="/operation/"]')).to_have_count(
        operation_count(offline.base)
    )
    expect(page.get_by_role("link", name="API docs by Redocly")).to_be_visible()  # logo-less

    assert offline.external == []
    # The logo is drawn (and refused) right after the menu mounts; nothing else may be.
    assert set(offline.refused_by_csp) <= {REDOCLY_LOGO}
    assert offline.unexpected_errors() == []


def test_the_gate_would_catch_a_cdn_asset(offline: OfflinePage) -> None:
    """The check itself: a page that does load from a CDN is seen, and stays blank."""
    page = offline.page
    offline.goto("/static/review.css")  # any local page to run the script from
    page.evaluate(
        """() => new Promise(done => {
            const s = document.createElement('script');
            s.src = 'https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js';
            s.onerror = s.onload = done;
            document.head.appendChild(s);
        })"""
    )
    assert offline.external == [
        "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
    ]
    assert page.evaluate("typeof SwaggerUIBundle") == "undefined"
