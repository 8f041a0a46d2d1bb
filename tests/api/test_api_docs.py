"""/docs and /redoc reference only the station's own assets, and those assets are served.

The pages themselves are rendered in headless Chromium with the network blocked in
tests/browser/test_api_docs_pages.py.
"""

from __future__ import annotations

import re
from base64 import b64encode
from hashlib import sha256
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class AssetLinks(HTMLParser):
    """Every src and href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


def asset_urls(html: str) -> list[str]:
    parser = AssetLinks()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_page_loads_only_local_assets(client: TestClient, page: str, assets: set[str]) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    for marker in ("http://", "https://", "//cdn", "jsdelivr", "googleapis", "tiangolo"):
        assert marker not in html, f"{page} names {marker}"
    urls = asset_urls(html)
    assert {url.rsplit("/", 1)[-1] for url in urls} == assets
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        assert url.startswith("/static/docs/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected = EXPECTED_TYPES[url[url.rindex(".") :]]
        assert asset.headers["content-type"].split(";")[0] == expected, url
        assert len(asset.content) > 1000, url
    assert "'/openapi.json'" in html or '"/openapi.json"' in html


def test_swagger_ui_sends_the_schema_to_no_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_docs_pages_are_not_in_the_schema_and_review_static_still_served(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/docs", "/redoc"} & set(paths)
    # The docs assets are mounted beside the review page's /static, not instead of it.
    assert client.get("/static/review.js").status_code == 200
    assert client.get("/static/docs/nothing.js").status_code == 404


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_allow_no_other_origin(client: TestClient, page: str) -> None:
    response = client.get(page)
    csp = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert csp["default-src"] == "'self'"
    assert csp["img-src"] == "'self' data:"  # ReDoc's Redocly logo (a CDN URL) is refused
    assert csp["connect-src"] == "'self'"
    for sources in csp.values():
        assert "http" not in sources and "*" not in sources, sources
    # Swagger UI's inline start-up script runs by its hash; no other inline script may.
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    hashes = [f"'sha256-{b64encode(sha256(s.encode()).digest()).decode()}'" for s in inline]
    assert csp["script-src"] == " ".join(["'self'", *hashes])
    assert len(inline) == (1 if page == "/docs" else 0)
