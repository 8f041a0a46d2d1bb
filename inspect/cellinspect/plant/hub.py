"""`cellinspect hub`: the station API and review page over the central store, for all stations.

The hub is `cellinspect serve` without an inspector, on the central database, plus the route
stations' forwarders deliver images to (PUT /hub/images/{sha256}). Results, reviews, stats and
exports then cover every station; GET /results?station_id= picks one.
"""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from cellinspect.api.app import create_app
from cellinspect.api.routers import hub_images
from cellinspect.api.server import GRACEFUL_SHUTDOWN_S, access_summary, check_bind
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.protocols import ResultStore


def create_hub_app(settings: StationSettings, store: ResultStore) -> FastAPI:
    """The API over the central store with the image-ingest route added."""
    app = create_app(settings, store)
    app.title = "cellinspect hub API"
    app.include_router(hub_images.router)
    return app


def serve_hub(
    settings: StationSettings,
    host: str | None,
    port: int | None,
    *,
    allow_remote: bool,
    announce: Callable[[str], None],
) -> None:
    """Migrate the central database, then serve until interrupted."""
    host = host or settings.host
    port = settings.port if port is None else port
    check_bind(host, settings, allow_remote)
    announce(access_summary(settings))
    announce(
        f"central results in {settings.display_db_url}, images in {settings.resolved_image_dir}"
    )
    store = open_store(settings)
    try:
        app = create_hub_app(settings, store)
        announce(
            f"hub review page: http://{host}:{port}/review  API docs: http://{host}:{port}/docs"
        )
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    finally:
        store.close()
