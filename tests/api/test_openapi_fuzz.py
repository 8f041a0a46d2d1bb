"""Property-based run over the OpenAPI schema (schemathesis + hypothesis): no request gets a 5xx.

Every operation gets generated valid and invalid inputs (schemathesis' positive and negative
modes), sent with the station's admin token to the real app over a seeded temporary SQLite
store; again without a token, with a wrong one and with a viewer's (fewer examples).
/events is left out (an endless stream; it has its own tests). Bounded and derandomised:
EXAMPLES per operation and mode.

The /station routes are fuzzed twice: as `cellinspect serve` has them (no station behind the
app: every valid request is the documented 404), and with a real station runtime behind them
(the real trigger and recipe-select paths, a synthetic triggered camera and a rule inspector),
where every answer must also be one the schema documents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cellinspect.api import create_app
from cellinspect.settings import StationSettings
from cellinspect.station.config import parse_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.writer import AsyncResultWriter
from tests.conftest import ROOT

from .helpers import AUTH, RuleInspector, auth_as

EXAMPLES = 25
OPERATIONS = [
    ("POST", "/inspections"),
    ("GET", "/results"),
    ("GET", "/defect-classes"),
    ("GET", "/results/{result_id}"),
    ("GET", "/results/{result_id}/image"),
    ("GET", "/results/{result_id}/overlay"),
    ("GET", "/results/{result_id}/audit"),
    ("PUT", "/results/{result_id}/review"),
    ("POST", "/results/{result_id}/review/undo"),
    ("GET", "/stats"),
    ("GET", "/stations"),
    ("GET", "/spc/measurements"),
    ("GET", "/spc/measurements/{name}"),
    ("GET", "/spc/reject-rate"),
    ("POST", "/exports"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/me"),
    ("GET", "/models/{slot}/shadow/{version}/report"),
    # The model lifecycle: without a running station, a 409 (no registry) after the role check.
    ("GET", "/models/versions"),
    ("GET", "/models/audit"),
    ("POST", "/models/{slot}/versions"),
    ("POST", "/models/{slot}/versions/{version}/shadow"),
    ("POST", "/models/{slot}/versions/{version}/retire"),
    ("POST", "/models/{slot}/versions/{version}/promote"),
    ("POST", "/models/{slot}/rollback"),
    # Teach on the line: without a running station, idle (GET) or a 409 after the role check.
    ("POST", "/teach"),
    ("GET", "/teach"),
    ("POST", "/teach/parts/{result_id}/confirm"),
    ("POST", "/teach/parts/{result_id}/reject"),
    ("GET", "/teach/parts/{result_id}/image"),
    ("POST", "/teach/cancel"),
]
STATION_OPERATIONS = [
    ("GET", "/station"),
    ("POST", "/station/trigger"),
    ("POST", "/station/recipe"),
    ("GET", "/station/health"),
]
OPERATIONS += STATION_OPERATIONS
# Not in any operation's responses: FastAPI's answer to a body that is not JSON at all.
UNPARSABLE_BODY = 400


@pytest.fixture
def fuzz_app(settings: StationSettings, store: SqlResultStore) -> Iterator[FastAPI]:
    writer = AsyncResultWriter(store)
    writer.start()
    yield create_app(settings, store, RuleInspector(), writer=writer)
    writer.close()


def load(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(fuzz_app: FastAPI) -> None:
    operations = [cast(Any, r).ok() for r in load(fuzz_app).get_all_operations()]
    found = {(op.method.upper(), op.path) for op in operations}
    assert found - {("GET", "/events")} == set(OPERATIONS)


Check = Callable[[Any, Any], None]
"""check(case, response): more assertions on a response that is not a 5xx."""


def documented_statuses(app: FastAPI, method: str, path: str) -> set[int]:
    """The status codes the schema lists for one operation."""
    raw = load(app)[path][method].definition.raw
    return {int(code) for code in raw["responses"]}


def fuzz(
    app: FastAPI,
    method: str,
    path: str,
    examples: int = EXAMPLES,
    *,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    check: Check | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Send generated requests to one operation; AssertionError on the first 5xx."""
    sent = AUTH if headers is None else headers
    operation = load(app)[path][method]
    cases = st.one_of(*(operation.as_strategy(mode) for mode in modes))

    @given(case=cases)
    @settings(
        max_examples=examples * 2,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_5xx(case: Any) -> None:
        response = case.call(headers=sent)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        )
        if check is not None:
            check(case, response)

    no_5xx()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors(fuzz_app: FastAPI, method: str, path: str) -> None:
    fuzz(fuzz_app, method, path)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors_without_a_token(fuzz_app: FastAPI, method: str, path: str) -> None:
    """No token, or one that is not valid: refused, never a 5xx (or a leak of the schema)."""

    def refused(case: Any, response: Any) -> None:
        open_route = path in ("/health", "/metrics")
        assert open_route or response.status_code in (400, 401, 422), _says(case, response)

    fuzz(fuzz_app, method, path, examples=8, check=refused, headers={})
    fuzz(
        fuzz_app,
        method,
        path,
        examples=4,
        check=refused,
        headers={"Authorization": "Bearer ci_000000000005_not-the-secret"},
    )


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors_with_a_viewer_token(fuzz_app: FastAPI, method: str, path: str) -> None:
    fuzz(fuzz_app, method, path, examples=8, headers=auth_as("vic"))


def _says(case: Any, response: Any) -> str:
    text = str(response.text)[:300]
    return f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code}: {text}"


@pytest.mark.parametrize(("method", "path"), STATION_OPERATIONS)
def test_station_routes_without_a_station_are_a_documented_404(
    fuzz_app: FastAPI, method: str, path: str
) -> None:
    """`cellinspect serve`: no station behind the API, so every valid request is a 404."""
    assert 404 in documented_statuses(fuzz_app, method, path)

    def is_404(case: Any, response: Any) -> None:
        assert response.status_code == 404, _says(case, response)
        body = response.json()
        assert body["error"] == "not_found" and "cellinspect run" in body["message"]

    fuzz(fuzz_app, method, path, modes=(GenerationMode.POSITIVE,), check=is_404)


@pytest.fixture
def station_app(
    settings: StationSettings, store: SqlResultStore, tmp_path: Path
) -> Iterator[FastAPI]:
    """The API with a real, started station runtime behind /station (software trigger)."""
    station = parse_station(
        {
            "station_id": "fuzz-station",
            "recipes": {
                1: str(ROOT / "recipes" / "flange.yaml"),
                2: str(ROOT / "recipes" / "flange-measure.yaml"),
            },
            "trigger": {"mode": "software"},
            "source": {"type": "synthetic", "count": 8, "seed": 3},
            "api": {"enabled": False},  # the app under test is the API
            "store": {"enabled": False},
        },
        tmp_path / "station.yaml",
    )
    runtime = StationRuntime(
        station, inspector_factory=lambda _number: RuleInspector(), make_overlays=False
    ).start()
    writer = AsyncResultWriter(store)
    writer.start()
    try:
        yield create_app(settings, store, RuleInspector(), writer=writer, station=runtime)
    finally:
        writer.close()
        runtime.stop()


@pytest.mark.parametrize(("method", "path"), STATION_OPERATIONS)
def test_station_routes_with_a_station_answer_as_documented(
    station_app: FastAPI, method: str, path: str
) -> None:
    documented = documented_statuses(station_app, method, path) | {UNPARSABLE_BODY}

    def as_documented(case: Any, response: Any) -> None:
        assert response.status_code in documented, _says(case, response)
        if response.status_code != 200:
            return
        body = response.json()
        if path == "/station/trigger":  # the station's own result, stamped with its id
            assert body["station_id"] == "fuzz-station" and body["verdict"], _says(case, response)
        elif path == "/station/recipe":
            assert body["number"] in (1, 2) and body["code"] == "NONE", _says(case, response)
        elif path == "/station/health":
            assert body["level"] in ("ok", "warn", "alarm"), _says(case, response)
            assert isinstance(body["alarms"], list), _says(case, response)
        else:
            assert body["station_id"] == "fuzz-station", _says(case, response)

    fuzz(station_app, method, path, check=as_documented)


class FragileStore:
    """A store that breaks on one particular page size: the fuzzer must find it."""

    def __init__(self, inner: SqlResultStore) -> None:
        self.inner = inner

    def query(self, filters: object, limit: int = 50, cursor: str | None = None) -> object:
        if limit > 3:
            raise RuntimeError("boom")
        return self.inner.query(filters, limit, cursor)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_the_fuzzer_finds_a_server_error(settings: StationSettings, store: SqlResultStore) -> None:
    writer = AsyncResultWriter(store)
    app = create_app(settings, FragileStore(store), writer=writer)  # type: ignore[arg-type]
    # The in-process client re-raises what the 500 handler caught, instead of a 500 reply.
    with pytest.raises((AssertionError, RuntimeError), match=r"500|boom"):
        fuzz(app, "GET", "/results", examples=10)
