"""GET /health and GET /metrics, the review page and its static files."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cellinspect.api import create_app
from cellinspect.settings import StationSettings
from cellinspect.storage.errors import StoreError
from cellinspect.storage.sql_store import SqlResultStore

from .helpers import AUTH


def test_health_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["recipe"] == "rule-recipe"
    assert body["writer"]["running"] is True


class DeadDatabase:
    def __init__(self, inner: SqlResultStore) -> None:
        self.inner = inner

    def ping(self) -> None:
        raise StoreError("database unreachable: connection refused")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_health_degraded_when_the_database_is_gone(
    settings: StationSettings, store: SqlResultStore
) -> None:
    with TestClient(create_app(settings, DeadDatabase(store))) as c:  # type: ignore[arg-type]
        response = c.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert "connection refused" in response.json()["database"]


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    client.get("/results")
    client.get("/results/r000001")
    client.put("/results/r000002/review", json={"label": "good"}, headers=AUTH)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'cellinspect_http_requests_total{method="GET",route="/results",status="200"} 1.0' in text
    assert 'route="/results/{result_id}"' in text  # route templates, not raw paths
    assert 'cellinspect_reviews_total{label="good"} 1.0' in text
    assert "cellinspect_writer_queue_depth 0.0" in text
    assert 'cellinspect_writer_results_total{outcome="spilled"} 0.0' in text
    assert "cellinspect_http_request_duration_seconds_bucket" in text


def test_review_page_and_assets(client: TestClient) -> None:
    page = client.get("/review")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/review.js"' in page.text
    for asset, media in (("review.js", "javascript"), ("review.css", "text/css")):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200
        assert media in response.headers["content-type"]
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307
    assert root.headers["location"] == "/review"


def test_static_files_stay_in_their_folder(client: TestClient) -> None:
    response = client.get("/static/../app.py")
    assert response.status_code == 404
    assert not Path("app.py").exists() or response.text != Path("app.py").read_text()
