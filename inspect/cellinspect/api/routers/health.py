"""GET /health (liveness plus what is degraded) and GET /metrics (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

import cellinspect
from cellinspect.api.deps import ServicesDep
from cellinspect.api.errors import scrub_with
from cellinspect.api.schemas import HealthOut, WriterOut
from cellinspect.storage.errors import StoreError

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(services: ServicesDep) -> JSONResponse:
    try:
        await run_in_threadpool(services.store.ping)
        database = "ok"
    except StoreError as err:
        database = scrub_with(services.settings, str(err))
    w = services.writer
    stats = w.stats
    writer = WriterOut(
        running=w.running,
        queue_depth=stats.queue_depth,
        queue_size=stats.queue_size,
        written=stats.written,
        spilled=stats.spilled,
        dropped=stats.dropped,
        failed_batches=stats.failed_batches,
    )
    ok = database == "ok" and w.running
    body = HealthOut(
        status="ok" if ok else "degraded",
        version=cellinspect.__version__,
        database=database,
        recipe=None if services.inspector is None else services.inspector.recipe_name,
        writer=writer,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    summary="Prometheus metrics",
)
async def metrics(services: ServicesDep) -> Response:
    data = generate_latest(services.metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
