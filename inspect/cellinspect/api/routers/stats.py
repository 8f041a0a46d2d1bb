"""GET /stats: yield, verdict counts, defect Pareto, throughput/latency over time, agreement.

`station_id` picks one station, as on GET /results: on the hub the figures of one line
station among many; on a station its own (any other id has no results there).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, StoreDep
from cellinspect.api.schemas import ErrorOut, StatsOut, Text, UtcDatetime

router = APIRouter(tags=["stats"], dependencies=[ReadDep], responses=AUTH_RESPONSES)


@router.get("/stats", response_model=StatsOut, responses={422: {"model": ErrorOut}})
async def get_stats(
    store: StoreDep,
    since: Annotated[UtcDatetime | None, Query(description="Captured at or after.")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Captured before.")] = None,
    bucket_s: Annotated[int, Query(ge=60, le=31 * 86400, description="Timeline bucket.")] = 3600,
    station_id: Annotated[
        Text | None,
        Query(
            max_length=128,
            description="Judged by this station (a station's own store holds only its own "
            "id: another gives empty figures).",
        ),
    ] = None,
) -> StatsOut:
    if since is not None and until is not None and until <= since:
        raise HTTPException(
            422, f"until ({until.isoformat()}) must be after since ({since.isoformat()})"
        )
    stats = await run_in_threadpool(store.stats, since, until, bucket_s, station_id)
    return StatsOut.of(stats)
