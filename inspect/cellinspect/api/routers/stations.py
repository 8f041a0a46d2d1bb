"""GET /stations: the stations the store has results of (the hub's station selector)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, StoreDep
from cellinspect.api.schemas import ErrorOut
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.stations import known_stations

router = APIRouter(tags=["stations"], dependencies=[ReadDep], responses=AUTH_RESPONSES)


class StationOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    station_id: str = Field(description="As the station's results carry it.")
    line: str | None = Field(description="Line its results name (the greatest, if they differ).")
    site: str | None = Field(description="Site its results name (the greatest, if they differ).")
    results: int = Field(description="Results of this station in the store.")
    last_seen: datetime = Field(description="Capture time of its newest result (UTC).")


class StationsOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[StationOut] = Field(description="By station id.")


@router.get(
    "/stations",
    response_model=StationsOut,
    summary="Stations with results in the store, with counts and last seen (station selector)",
    responses={501: {"model": ErrorOut, "description": "This store cannot list stations."}},
)
async def list_stations(store: StoreDep) -> StationsOut:
    """Every station with results in the store, with its count and newest capture time."""
    if not isinstance(store, SqlResultStore):
        raise HTTPException(501, "this server's store cannot list stations")
    found = await run_in_threadpool(known_stations, store.engine)
    return StationsOut(
        items=[
            StationOut(
                station_id=s.station_id,
                line=s.line,
                site=s.site,
                results=s.results,
                last_seen=s.last_seen,
            )
            for s in found
        ]
    )
