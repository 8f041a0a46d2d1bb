"""Binding rules, the server thread on a free port, and live events over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cellinspect.api import create_app
from cellinspect.api.server import ApiServerThread, check_bind, is_loopback, serve
from cellinspect.entities import Verdict
from cellinspect.errors import ConfigError
from cellinspect.settings import StationSettings
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.storage.writer import AsyncResultWriter

from .helpers import AUTH, auth_as


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("station.example", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "token", "allow_remote", "message"),
    [
        ("127.0.0.1", None, False, None),
        ("0.0.0.0", "t", False, "only loopback addresses"),
        ("0.0.0.0", None, True, "without API credentials"),
        ("0.0.0.0", "t", True, None),
    ],
)
def test_check_bind(
    tmp_path: Path, host: str, token: str | None, allow_remote: bool, message: str | None
) -> None:
    settings = StationSettings(data_dir=tmp_path, api_token=token)
    if message is None:
        check_bind(host, settings, allow_remote)
    else:
        with pytest.raises(ConfigError, match=message):
            check_bind(host, settings, allow_remote)


def test_server_thread_applies_the_same_binding_rules(
    settings: StationSettings, store: SqlResultStore
) -> None:
    app = create_app(settings, store)
    with pytest.raises(ConfigError, match="only loopback"):
        ApiServerThread(app, host="0.0.0.0")
    ApiServerThread(app, host="0.0.0.0", allow_remote=True)  # settings carry a token: allowed


def test_serve_refuses_a_remote_bind_before_opening_anything(tmp_path: Path) -> None:
    settings = StationSettings(data_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="only loopback"):
        serve(settings, host="0.0.0.0", port=0)
    assert not (tmp_path / "d").exists()


def test_serve_without_inspector_module_names_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> object:
        if name == "cellinspect.runtime.inspector":
            raise ImportError("not there")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ConfigError, match=r"recipe\.yaml: cannot load an inspector"):
        serve(StationSettings(data_dir=tmp_path), tmp_path / "recipe.yaml", port=0)


def test_serve_without_credentials_is_read_only_and_invents_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        served.update(kwargs, app=app)

    monkeypatch.setattr("cellinspect.api.server.uvicorn.run", fake_run)
    said: list[str] = []
    serve(StationSettings(data_dir=tmp_path / "d"), port=8123, announce=said.append)
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    assert "READ-ONLY" in said[0] and "cellinspect users add" in said[0]
    assert not any("token " in line.lower() and "ci_" in line for line in said)
    assert "http://127.0.0.1:8123/review" in said[-1]
    assert served["app"].state.services.settings.api_token is None
    with TestClient(served["app"]) as c:
        assert c.get("/results").status_code == 200
        body = {"label": "good"}
        assert c.put("/results/x/review", json=body).status_code == 403
        refused = c.put("/results/x/review", json=body, headers={"X-API-Token": "guess"})
        assert refused.status_code == 403


def test_serve_masks_the_database_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cellinspect.api.server.uvicorn.run", lambda app, **kw: None)
    monkeypatch.setattr("cellinspect.api.server.open_store", lambda settings: _NoStore())
    said: list[str] = []
    url = "postgresql+psycopg://station:hunter2@db.example:5432/results"
    serve(StationSettings(data_dir=tmp_path, db_url=url), port=8123, announce=said.append)
    text = "\n".join(said)
    assert "hunter2" not in text
    assert "postgresql+psycopg://station:***@db.example:5432/results" in text


class _NoStore:
    def close(self) -> None:
        pass


@pytest.fixture
def live(
    settings: StationSettings, store: SqlResultStore
) -> Iterator[tuple[str, AsyncResultWriter]]:
    writer = AsyncResultWriter(store)
    writer.start()
    app = create_app(settings, store, writer=writer)
    server = ApiServerThread(app, port=0).start()
    try:
        yield server.url, writer
    finally:
        server.stop()
        writer.close()


def test_server_thread_serves_on_a_free_loopback_port(
    live: tuple[str, AsyncResultWriter],
) -> None:
    url, _ = live
    assert url.startswith("http://127.0.0.1:")
    assert not url.endswith(":0")
    response = httpx.get(f"{url}/health", timeout=5)
    assert response.status_code == 200


def test_live_events_carry_new_results_and_reviews(
    live: tuple[str, AsyncResultWriter],
) -> None:
    url, writer = live
    events: list[tuple[str, dict[str, object]]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", f"{url}/events", params={"max_events": 2}, headers=AUTH, timeout=10
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line.removeprefix("data: "))))

    thread = threading.Thread(target=listen)
    thread.start()
    assert connected.wait(5)
    writer.submit(synthetic_frame(synthetic_result(42, Verdict.REVIEW, defect_class="dent")))
    assert writer.flush(5)
    response = httpx.put(
        f"{url}/results/r000042/review",
        json={"label": "defect", "defect_class": "dent"},
        headers=auth_as("ann"),
        timeout=5,
    )
    assert response.status_code == 200
    thread.join(10)
    assert not thread.is_alive()
    assert [k for k, _ in events] == ["result", "review"]
    assert events[0][1]["id"] == "r000042"
    assert events[0][1]["verdict"] == "review"
    assert events[1][1] == {
        "id": "r000042",
        "label": "defect",
        "defect_class": "dent",
        "reviewer": "ann",
        "revision": 1,
    }


def test_stopping_the_server_ends_open_event_streams(
    settings: StationSettings, store: SqlResultStore
) -> None:
    server = ApiServerThread(create_app(settings, store), port=0).start()
    ended = threading.Event()
    opened = threading.Event()

    def listen() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/events", headers=AUTH, timeout=10) as r:
                for line in r.iter_lines():
                    if line.startswith(": connected"):
                        opened.set()
        except httpx.HTTPError:
            pass
        ended.set()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert opened.wait(5)
    server.stop()
    assert ended.wait(5)
