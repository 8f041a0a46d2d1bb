"""Fixtures: a real uvicorn server on a free loopback port and Debian's headless Chromium.

Chromium comes from the distribution (`apt-get install chromium`), driven through
Playwright's Python API; Playwright's own browser download is not used. Without either, the
browser tests are skipped with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellinspect.api import create_app
from cellinspect.api.server import ApiServerThread
from cellinspect.entities import Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from cellinspect.storage.writer import AsyncResultWriter
from cellinspect.users import Role, add_user

QA_USER = "qa-anna"
EXPECT_TIMEOUT_MS = 30_000
EXPECTED_REFUSAL = re.compile(r"Failed to load resource: .* status of 40[13]")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
V = Verdict
# Newest first in the gallery: r5 REVIEW crack, r4 FAIL dent, r3 PASS, r2 FAIL scratch, ...
SEED = [
    (0, V.PASS, None),
    (1, V.REVIEW, "scratch"),
    (2, V.FAIL, "scratch"),
    (3, V.PASS, None),
    (4, V.FAIL, "dent"),
    (5, V.REVIEW, "crack"),
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")  # module: Playwright keeps an event loop on the main thread
def browser_context() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    # Playwright's 5 s default for expect() is a page-speed target, not a check of behaviour:
    # on a loaded 2-core CI machine ReDoc alone can take longer to lay out every operation.
    sync_api.expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    profile = tempfile.mkdtemp(prefix="cellinspect-chromium-")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return tmp_path / "users.yaml"


@pytest.fixture
def qa_token(users_file: Path) -> str:
    """A QA user's token: the reviewer the page records."""
    return add_user(users_file, QA_USER, Role.QA)


@pytest.fixture
def viewer_token(users_file: Path) -> str:
    return add_user(users_file, "vic", Role.VIEWER)


@pytest.fixture
def settings(tmp_path: Path, users_file: Path) -> StationSettings:
    return StationSettings(
        data_dir=tmp_path / "data",
        users_file=users_file,
        pass_sample_rate=0.0,
        disk_budget_mb=None,
        defect_classes=["scratch", "crack", "dent"],
    )


@pytest.fixture
def store(settings: StationSettings) -> Iterator[SqlResultStore]:
    s = open_store(settings)
    s.add_many(
        [
            synthetic_frame(synthetic_result(i, v, defect_class=c, score=0.5 + i / 20), size=96)
            for i, v, c in SEED
        ]
    )
    yield s
    s.close()


@pytest.fixture
def writer(store: SqlResultStore) -> Iterator[AsyncResultWriter]:
    w = AsyncResultWriter(store)
    w.start()
    yield w
    w.close()


@pytest.fixture
def server_url(
    settings: StationSettings, store: SqlResultStore, writer: AsyncResultWriter
) -> Iterator[str]:
    server = ApiServerThread(create_app(settings, store, writer=writer), port=0).start()
    yield server.url
    server.stop()


@pytest.fixture
def page(browser_context: Any, server_url: str, qa_token: str) -> Iterator[Any]:
    """The review page, signed in with the QA user's token (as typed in an earlier visit)."""
    p = browser_context.new_page()
    p.add_init_script(f"sessionStorage.setItem('cellinspect.token', {json.dumps(qa_token)})")
    errors: list[str] = []
    p.on("pageerror", lambda err: errors.append(str(err)))
    # Console errors include Content-Security-Policy refusals of the page's own code and
    # missing resources; refused API calls (401/403) are expected in the token tests.

    def on_console(msg: Any) -> None:
        if msg.type == "error" and not EXPECTED_REFUSAL.search(msg.text):
            errors.append(msg.text)

    p.on("console", on_console)
    p.goto(f"{server_url}/review")
    p.wait_for_selector("#gallery .card")
    yield p
    seen = list(errors)
    p.close()
    assert seen == [], f"errors on the page: {seen}"
