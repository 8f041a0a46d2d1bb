"""`cellinspect hub`: the station API and review page over the central store, for all stations.

The hub is `cellinspect serve` without an inspector, on the central database, plus the route
stations' forwarders deliver images to (PUT /hub/images/{sha256}). Results, reviews, stats and
exports then cover every station; GET /results?station_id= picks one, GET /stations lists them.
With an MQTT broker set (`mqtt`), GET /events also streams every station's results, state and
alarms live (plant/hub_events.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from cellinspect.api.app import create_app
from cellinspect.api.routers import hub_images
from cellinspect.api.server import GRACEFUL_SHUTDOWN_S, access_summary, check_bind
from cellinspect.api.services import ApiServices
from cellinspect.plant.hub_images import read_s3_images
from cellinspect.plant.mqtt_config import MqttConfig
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.protocols import ResultStore

if TYPE_CHECKING:
    from cellinspect.plant.hub_events import HubEvents


def create_hub_app(settings: StationSettings, store: ResultStore) -> FastAPI:
    """The API over the central store with the image-ingest route added."""
    app = create_app(settings, store)
    app.title = "cellinspect hub API"
    app.include_router(hub_images.router)
    read_s3_images(store)  # images stations put to S3 (forward.s3) are read back from there
    return app


def start_hub_events(app: FastAPI, cfg: MqttConfig) -> HubEvents:
    """Subscribe to the stations' topics; their messages go to the app's GET /events."""
    from cellinspect.plant.hub_events import HubEvents  # paho only where MQTT is on

    services: ApiServices = app.state.services
    events = HubEvents(cfg, services.events)
    events.register(services.metrics.registry)  # its counters on the hub's GET /metrics
    return events.start()


def serve_hub(
    settings: StationSettings,
    host: str | None,
    port: int | None,
    *,
    allow_remote: bool,
    announce: Callable[[str], None],
    mqtt: MqttConfig | None = None,
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
    events: HubEvents | None = None
    try:
        app = create_hub_app(settings, store)
        if mqtt is not None:
            events = start_hub_events(app, mqtt)
            announce(
                f"live events from MQTT {mqtt.host}:{mqtt.port} ({mqtt.topic_prefix}/...): "
                f"GET /events"
            )
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
        if events is not None:
            events.close()
        store.close()
