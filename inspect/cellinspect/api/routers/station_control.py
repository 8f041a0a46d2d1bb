"""GET /station, GET /station/health, POST /station/trigger and POST /station/recipe: a running
station's controls.

Only present with meaning under `cellinspect run` (a station runtime behind the API);
`cellinspect serve` answers 404 here. Triggering and selecting a recipe change what the
line does, so both need an operator (or admin) token; the status needs a reading one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, OperateDep, ReadDep, ServicesDep
from cellinspect.api.schemas import ErrorOut, display_name, display_source
from cellinspect.api.services import StationControl
from cellinspect.health.monitor import HealthMonitor

router = APIRouter(tags=["station"])

_INT32 = 2**32 - 1


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part_id: int | None = Field(
        default=None, ge=0, le=_INT32, description="Part id to record (None: the next number)."
    )


class RecipeSelectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int = Field(ge=1, le=65535, description="Catalog number of the recipe.")


class RecipeSelectOut(BaseModel):
    number: int
    code: str = Field(description="NONE, or the PLC error code name (RECIPE_NOT_FOUND...).")


def _station(services: ServicesDep) -> StationControl:
    if services.station is None:
        raise HTTPException(404, "no station runs behind this API (start it with cellinspect run)")
    return services.station


@router.get(
    "/station",
    dependencies=[ReadDep],
    responses={**AUTH_RESPONSES, 404: {"model": ErrorOut}},
    summary="The station's status: recipe, trigger mode, counts, rate, latency, links",
)
async def station_status(services: ServicesDep) -> dict[str, Any]:
    return _station(services).status()


@router.get(
    "/station/health",
    dependencies=[ReadDep],
    responses={**AUTH_RESPONSES, 404: {"model": ErrorOut}},
    summary="Camera health and score drift: baseline, level and trend of each statistic",
)
async def station_health(services: ServicesDep) -> dict[str, Any]:
    monitor = getattr(_station(services), "health", None)
    if not isinstance(monitor, HealthMonitor):
        raise HTTPException(404, "this station follows no camera health")
    return monitor.status()


@router.post(
    "/station/trigger",
    dependencies=[OperateDep],
    responses={**AUTH_RESPONSES, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    summary="Inspect one part now (software trigger); returns the result as posted",
)
async def station_trigger(services: ServicesDep, body: TriggerIn) -> dict[str, Any]:
    station = _station(services)
    try:
        inspected = await run_in_threadpool(station.trigger, body.part_id, "software")
    except RuntimeError as err:  # StationBusyError: not ready within the wait
        raise HTTPException(409, f"station not ready: {err}") from err
    result: dict[str, Any] = inspected.result.to_dict()
    result["path"] = display_name(result.get("path"))  # a label, never a server path
    result["source"] = display_source(str(result.get("source", "")))
    return result


@router.post(
    "/station/recipe",
    dependencies=[OperateDep],
    response_model=RecipeSelectOut,
    responses={**AUTH_RESPONSES, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    summary="Select a recipe from the station's catalog (the PLC's command 1 rules)",
)
async def station_recipe(services: ServicesDep, body: RecipeSelectIn) -> RecipeSelectOut:
    station = _station(services)
    code = await run_in_threadpool(station.select_recipe, body.number)
    name = getattr(code, "name", str(code))
    if name != "NONE":
        raise HTTPException(409, f"recipe {body.number} not selected: {name}")
    return RecipeSelectOut(number=body.number, code=name)
