"""Running the API: `serve()` for `cellinspect serve`, `ApiServerThread` for a station or tests.

The server binds 127.0.0.1 unless told otherwise; binding any other address needs both
`allow_remote=True` and a configured credential (users or the api_token), because a station
without one serves reads to anyone. No token is ever made up or printed here.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import uvicorn
from fastapi import FastAPI

from cellinspect.api.app import create_app
from cellinspect.errors import ConfigError
from cellinspect.netaddr import is_loopback
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.users import Authenticator

GRACEFUL_SHUTDOWN_S = 3


def check_bind(host: str, settings: StationSettings, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless remote access is asked for and a token is set."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(
            f"refusing to bind {host!r}: only loopback addresses are allowed by default; "
            "pass allow_remote (--allow-remote) to serve other machines"
        )
    if not has_credentials(settings):
        raise ConfigError(
            f"refusing to bind {host!r} without API credentials: add users with "
            "'cellinspect users add NAME --role ROLE' (or set CELLINSPECT_API_TOKEN) first"
        )


def has_credentials(settings: StationSettings) -> bool:
    """A legacy token or a users file with users (a broken one counts: it stays closed)."""
    try:
        return Authenticator(settings.resolved_users_file, settings.token_value()).configured
    except ConfigError:
        return True


def access_summary(settings: StationSettings) -> str:
    """One line on who may do what, without any secret."""
    try:
        users = Authenticator(settings.resolved_users_file, None).user_count
    except ConfigError as err:
        return f"users file unusable, user tokens refused: {err}"
    parts = []
    if users:
        parts.append(f"{users} user(s) from {settings.resolved_users_file.name}")
    if settings.token_value() is not None:
        parts.append("the admin token CELLINSPECT_API_TOKEN")
    if not parts:
        return (
            "no API credentials configured: serving READ-ONLY (changes are refused); add users "
            "with 'cellinspect users add NAME --role ROLE'"
        )
    return "API access with tokens: " + " and ".join(parts)


def load_inspector(recipe_path: Path) -> ImageInspector:
    """The station's Inspector for a recipe (imported late: the API runs without a model)."""
    try:
        module = importlib.import_module("cellinspect.runtime.inspector")
    except ImportError as err:
        raise ConfigError(
            f"{recipe_path}: cannot load an inspector (cellinspect.runtime.inspector: {err})"
        ) from err
    inspector_cls = module.Inspector
    # Overlays are what the review page shows; the station loop may leave them off.
    return cast(ImageInspector, inspector_cls.from_recipe(recipe_path, make_overlays=True))


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")


def serve(
    settings: StationSettings,
    recipe_path: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    *,
    allow_remote: bool = False,
    log_level: str = "info",
    announce: Callable[[str], None] = _stderr,
) -> None:
    """Open the store, load the recipe (if any) and serve until interrupted."""
    host = host or settings.host
    port = settings.port if port is None else port
    check_bind(host, settings, allow_remote)
    announce(access_summary(settings))
    announce(f"results in {settings.display_db_url}")
    inspector = None if recipe_path is None else load_inspector(recipe_path)
    store = open_store(settings)
    try:
        app = create_app(settings, store, inspector)
        announce(f"review page: http://{host}:{port}/review  API docs: http://{host}:{port}/docs")
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    finally:
        store.close()


class ApiServerThread:
    """Uvicorn in a background thread, for the station process and for tests.

    Port 0 picks a free port; `url` tells which one after `start()`. The same binding rules
    as `serve()` apply.
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False
    ) -> None:
        services = getattr(app.state, "services", None)
        if services is not None:
            check_bind(host, services.settings, allow_remote)
        elif not is_loopback(host):
            raise ConfigError(f"refusing to bind {host!r}: not an app made by create_app")
        self.app = app
        self.host = host
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api-server", daemon=True)
        self.port = port

    def start(self, timeout: float = 10.0) -> ApiServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise ConfigError(f"API server on {self.host}:{self.port} failed to start")
            if time.monotonic() > deadline:
                raise ConfigError(f"API server on {self.host}:{self.port} did not start in time")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in (server.sockets or ())]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        services = getattr(self.app.state, "services", None)
        if services is not None:
            services.events.close()
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ApiServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
