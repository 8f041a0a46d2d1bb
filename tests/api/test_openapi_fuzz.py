"""Property-based run over the OpenAPI schema (schemathesis + hypothesis): no request gets a 5xx.

Every operation gets generated valid and invalid inputs (schemathesis' positive and negative
modes), sent with the station token to the real app over a seeded temporary SQLite store.
/events is left out (an endless stream; it has its own tests). Bounded and derandomised:
EXAMPLES per operation and mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cellinspect.api import create_app
from cellinspect.settings import StationSettings
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.writer import AsyncResultWriter

from .helpers import AUTH, RuleInspector

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
    ("GET", "/stats"),
    ("POST", "/exports"),
    ("GET", "/health"),
    ("GET", "/metrics"),
]


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


def fuzz(app: FastAPI, method: str, path: str, examples: int = EXAMPLES) -> None:
    """Send generated requests to one operation; AssertionError on the first 5xx."""
    operation = load(app)[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=examples * 2,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_5xx(case: Any) -> None:
        response = case.call(headers=AUTH)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        )

    no_5xx()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_server_errors(fuzz_app: FastAPI, method: str, path: str) -> None:
    fuzz(fuzz_app, method, path)


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
