"""App factory: services on app.state, one router per resource, JSON errors, limits, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import cellinspect
from cellinspect.api.errors import install_error_handlers
from cellinspect.api.events import EventBroker
from cellinspect.api.limits import BodySizeLimitMiddleware, ConcurrencySlots, QueryTokenGuard
from cellinspect.api.metrics import ApiMetrics, MetricsMiddleware
from cellinspect.api.routers import (
    api_docs,
    dashboard,
    events,
    export,
    health,
    inspections,
    lifecycle,
    me,
    results,
    review_page,
    reviews,
    shadow,
    spc,
    station_control,
    stations,
    stats,
    teach,
)
from cellinspect.api.routers.review_page import STATIC
from cellinspect.api.services import ApiServices, StationControl
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import retention_from
from cellinspect.storage.protocols import ResultStore
from cellinspect.storage.writer import AsyncResultWriter, make_writer
from cellinspect.users import Authenticator

# Room for the multipart envelope around an upload of max_upload_bytes.
MULTIPART_OVERHEAD = 64 * 1024

DESCRIPTION = """
Results, images and QA reviews of a cellinspect station.

Every route but /health and /metrics needs an API token once the station has users (made by
`cellinspect users add NAME --role ROLE`) or the single admin token CELLINSPECT_API_TOKEN;
send it as `Authorization: Bearer <token>` or `X-API-Token: <token>`, never in the URL (400).
Roles: viewer reads; operator also triggers, selects recipes and uploads images; qa also labels
results (as the token's user) and exports; admin does everything. A station with no
credentials serves reads to anyone on its (by default loopback) address and refuses changes.
Errors are JSON: `{"error": ..., "message": ..., "details": [...]}`. The review page for QA is
at [/review](/review); yield, control charts (SPC) and station health at [/dashboard](/dashboard).
"""


def create_app(
    settings: StationSettings,
    store: ResultStore,
    inspector: ImageInspector | None = None,
    *,
    writer: AsyncResultWriter | None = None,
    station: StationControl | None = None,
) -> FastAPI:
    """The station's API. Without `writer` the app makes, starts and closes its own.

    A station that runs its own inspection loop passes its writer in, so loop and API share
    one queue to the database (and the app leaves that writer's lifecycle to the station).
    """
    owns_writer = writer is None
    writer = writer or make_writer(settings, store)
    broker = EventBroker()
    writer.add_listener(broker.publish_results)
    services = ApiServices(
        settings=settings,
        store=store,
        inspector=inspector,
        writer=writer,
        owns_writer=owns_writer,
        events=broker,
        metrics=ApiMetrics(lambda: services.writer.stats),
        retention=retention_from(settings),
        auth=Authenticator(settings.resolved_users_file, settings.token_value()),
        upload_slots=ConcurrencySlots(settings.max_concurrent_uploads),
        station=station,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        broker.bind(asyncio.get_running_loop())
        if services.owns_writer:
            services.writer.start()
        try:
            yield
        finally:
            broker.close()
            if services.owns_writer:
                services.writer.close()

    app = FastAPI(
        title="cellinspect station API",
        version=cellinspect.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc come from api_docs: FastAPI's own load their assets from CDNs.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (
        inspections,
        results,
        reviews,
        stats,
        spc,
        station_control,
        stations,
        export,
        events,
        health,
        me,
        shadow,
        lifecycle,
        teach,
        review_page,
        dashboard,
        api_docs,
    ):
        app.include_router(module.router)
    app.mount(api_docs.DOCS_ASSETS, api_docs.docs_assets(), name="docs-assets")  # before /static
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD
    )
    app.add_middleware(QueryTokenGuard)  # outermost: before metrics, limits and routes
    return app
