"""Real servers for tests (PostgreSQL, ...), started on 127.0.0.1 free ports in temp folders.

When a server's binaries are missing the tests that need it are skipped, unless
CELLINSPECT_REQUIRE_SERVERS=1 (CI sets it): then they fail, so a broken set-up cannot pass
as a green run with skipped cases.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "CELLINSPECT_REQUIRE_SERVERS"


def servers_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(reason: str) -> None:
    """Skip the calling test, or fail it where CELLINSPECT_REQUIRE_SERVERS=1."""
    if servers_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: a missing server fails the run)")
    pytest.skip(reason)
