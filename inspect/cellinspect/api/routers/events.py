"""GET /events: live results and reviews as server-sent events (text/event-stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, ServicesDep
from cellinspect.api.events import Event, EventBroker

router = APIRouter(tags=["live"], dependencies=[ReadDep], responses=AUTH_RESPONSES)

KEEPALIVE_S = 15.0


async def _stream(
    request: Request, broker: EventBroker, max_events: int | None, keepalive_s: float
) -> AsyncIterator[str]:
    sent = 0
    async with broker.subscribe() as queue:
        yield "retry: 2000\n: connected\n\n"
        while max_events is None or sent < max_events:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=keepalive_s)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"
                continue
            if not isinstance(item, Event):
                return
            yield item.to_sse()
            sent += 1


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    summary="Live results and reviews (server-sent events: result, review)",
)
async def events(
    request: Request,
    services: ServicesDep,
    max_events: Annotated[
        int | None, Query(ge=1, le=100_000, description="Close after this many events.")
    ] = None,
) -> StreamingResponse:
    return StreamingResponse(
        _stream(request, services.events, max_events, KEEPALIVE_S),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
