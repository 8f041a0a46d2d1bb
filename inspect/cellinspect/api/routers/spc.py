"""GET /spc/...: control charts of measured dimensions and of the reject rate, with Cp/Cpk.

Charts are computed on request from stored results (phase I: limits from the data shown).
Specification limits come from the measurement tolerances of the results' recipe when the app
knows it (the loaded inspector's, or one in a running station's catalog), or from `lsl`/`usl`
on the request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, ServicesDep
from cellinspect.api.schemas import ErrorOut, UtcDatetime
from cellinspect.api.services import ApiServices
from cellinspect.calibration.measure_config import MeasurementSpec
from cellinspect.entities import InspectionResult
from cellinspect.health.spc import RULE_TEXT, capability, imr_chart, p_chart
from cellinspect.health.spc_series import measurement_series, subgroups, tolerance_for
from cellinspect.storage.records import ResultFilter

router = APIRouter(tags=["spc"], dependencies=[ReadDep], responses=AUTH_RESPONSES)

PAGE = 500
RULES = {rule.value: text for rule, text in RULE_TEXT.items()}


class CapabilityOut(BaseModel):
    lsl: float
    usl: float
    cp: float | None = Field(description="(USL-LSL) / 6 sigma, sigma = MR-bar / 1.128.")
    cpk: float | None = Field(description="min(USL-mean, mean-LSL) / 3 sigma.")
    pp: float | None = Field(description="As Cp with the overall sample standard deviation.")
    ppk: float | None


class PointOut(BaseModel):
    result_id: str
    captured_wall: datetime
    value: float
    moving_range: float | None = Field(description="|x_i - x_(i-1)|; None on the first point.")
    rules: list[str] = Field(description="Rules this point breaks (see `rules` on the chart).")


class MeasurementChartOut(BaseModel):
    name: str
    count: int
    centre: float
    sigma: float
    ucl: float
    lcl: float
    mr_centre: float
    mr_ucl: float
    baseline: int = Field(description="Leading points the limits come from (all: phase I).")
    capability: CapabilityOut | None
    flagged: int = Field(description="Points breaking at least one rule.")
    rules: dict[str, str]
    points: list[PointOut]


class MeasurementSummaryOut(BaseModel):
    name: str
    count: int
    mean: float
    flagged: int
    capability: CapabilityOut | None


class MeasurementListOut(BaseModel):
    recipe: str | None
    items: list[MeasurementSummaryOut]


class SubgroupOut(BaseModel):
    start: datetime
    end: datetime
    size: int
    rejected: int
    p: float
    ucl: float
    lcl: float
    rules: list[str]


class RejectRateOut(BaseModel):
    centre: float = Field(description="p-bar: rejected / inspected over the baseline subgroups.")
    baseline: int = Field(description="Leading subgroups p-bar comes from (all: phase I).")
    flagged: int
    rules: dict[str, str]
    subgroups: list[SubgroupOut]


Since = Annotated[UtcDatetime | None, Query(description="Captured at or after.")]
StationId = Annotated[str | None, Query(max_length=200, description="Only this station.")]
RecipeName = Annotated[str | None, Query(max_length=200, description="Only this recipe.")]
Limit = Annotated[int, Query(ge=2, le=20000, description="Newest parts charted, at most.")]
Baseline = Annotated[
    int | None,
    Query(
        ge=1,
        le=20000,
        description="Phase II: the limits come from the first N points (subgroups) charted "
        "and every later one is judged against them (default: all, phase I).",
    ),
]

_Chart = TypeVar("_Chart")


def _charted(make: Callable[[], _Chart]) -> _Chart:
    """A chart, or 422 naming what is wrong with the request (a baseline too long)."""
    try:
        return make()
    except ValueError as err:
        raise HTTPException(422, str(err)) from err


def _load(
    services: ApiServices,
    since: datetime | None,
    station_id: str | None,
    recipe: str | None,
    limit: int,
) -> list[InspectionResult]:
    """The newest `limit` matching results, oldest first; pages stop once there are enough."""
    filters = ResultFilter(since=since, station_id=station_id)
    newest: list[InspectionResult] = []
    cursor: str | None = None
    while len(newest) < limit:
        page = services.store.query(filters, limit=PAGE, cursor=cursor)
        newest.extend(
            s.result for s in page.items if recipe is None or s.result.recipe_name == recipe
        )
        cursor = page.next_cursor
        if cursor is None:
            break
    chosen = newest[:limit]
    chosen.sort(key=lambda r: (r.captured_wall, r.result_id))
    return chosen


def _known_recipes(services: ApiServices) -> list[object]:
    """Recipes this app knows: the loaded inspector's, and every one in a station's catalog."""
    known = [getattr(services.inspector, "recipe", None)]
    catalog: Any = getattr(services.station, "catalog", None)
    for number in getattr(catalog, "numbers", []):
        known.append(getattr(catalog[number], "recipe", None))
    return [r for r in known if r is not None]


def _spec(services: ApiServices, results: list[InspectionResult]) -> MeasurementSpec | None:
    """The tolerances of the one recipe every charted result came from, if this app knows it."""
    names = {r.recipe_name for r in results}
    if len(names) != 1:
        return None
    (name,) = names
    for recipe in _known_recipes(services):
        spec = getattr(recipe, "measurements", None)
        if getattr(recipe, "name", None) == name and isinstance(spec, MeasurementSpec):
            return spec
    return None


def _limits(
    spec: MeasurementSpec | None, name: str, lsl: float | None, usl: float | None
) -> tuple[float, float] | None:
    if (lsl is None) != (usl is None):
        raise HTTPException(422, "give both lsl and usl, or neither")
    if lsl is not None and usl is not None:
        if usl <= lsl:
            raise HTTPException(422, f"usl ({usl}) must be above lsl ({lsl})")
        return lsl, usl
    tol = tolerance_for(spec, name)
    return None if tol is None else (tol.nominal - tol.tol, tol.nominal + tol.tol)


def _capability(values: list[float], limits: tuple[float, float] | None) -> CapabilityOut | None:
    if limits is None:
        return None
    c = capability(values, *limits)
    return CapabilityOut(lsl=c.lsl, usl=c.usl, cp=c.cp, cpk=c.cpk, pp=c.pp, ppk=c.ppk)


@router.get("/spc/measurements", response_model=MeasurementListOut)
async def list_measurements(
    services: ServicesDep,
    since: Since = None,
    station_id: StationId = None,
    recipe: RecipeName = None,
    limit: Limit = 1000,
) -> MeasurementListOut:
    """Every measured dimension with its count, mean, flagged points and Cp/Cpk."""
    results = await run_in_threadpool(_load, services, since, station_id, recipe, limit)
    spec = _spec(services, results)
    items = []
    for name, samples in measurement_series(results).items():
        values = [s.value for s in samples]
        flagged = sum(bool(f) for f in imr_chart(values).flags) if len(values) >= 2 else 0
        items.append(
            MeasurementSummaryOut(
                name=name,
                count=len(values),
                mean=sum(values) / len(values),
                flagged=flagged,
                capability=_capability(values, _limits(spec, name, None, None)),
            )
        )
    recipes = {r.recipe_name for r in results}
    return MeasurementListOut(recipe=recipes.pop() if len(recipes) == 1 else None, items=items)


@router.get("/spc/reject-rate", response_model=RejectRateOut, responses={422: {"model": ErrorOut}})
async def reject_rate(
    services: ServicesDep,
    since: Since = None,
    station_id: StationId = None,
    recipe: RecipeName = None,
    limit: Limit = 5000,
    subgroup: Annotated[int, Query(ge=2, le=10000, description="Parts per subgroup.")] = 25,
    bucket_s: Annotated[
        int | None, Query(ge=60, le=31 * 86400, description="Group by time instead, seconds.")
    ] = None,
    baseline: Baseline = None,
) -> RejectRateOut:
    """A p-chart of the FAIL fraction per subgroup of parts (or per time bucket)."""
    results = await run_in_threadpool(_load, services, since, station_id, recipe, limit)
    groups = subgroups(results, size=subgroup, bucket_s=bucket_s)
    if not groups:
        return RejectRateOut(centre=0.0, baseline=0, flagged=0, rules=RULES, subgroups=[])
    chart = _charted(
        lambda: p_chart([g.rejected for g in groups], [g.size for g in groups], baseline)
    )
    out = [
        SubgroupOut(
            start=g.start,
            end=g.end,
            size=g.size,
            rejected=g.rejected,
            p=chart.p[i],
            ucl=chart.ucl[i],
            lcl=chart.lcl[i],
            rules=[r.value for r in chart.flags[i]],
        )
        for i, g in enumerate(groups)
    ]
    flagged = sum(bool(f) for f in chart.flags)
    return RejectRateOut(
        centre=chart.centre, baseline=chart.baseline, flagged=flagged, rules=RULES, subgroups=out
    )


@router.get(
    "/spc/measurements/{name}",
    response_model=MeasurementChartOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def measurement_chart(
    services: ServicesDep,
    name: Annotated[str, Path(max_length=100, description="e.g. outer_diameter_mm.")],
    since: Since = None,
    station_id: StationId = None,
    recipe: RecipeName = None,
    limit: Limit = 1000,
    lsl: Annotated[float | None, Query(description="Lower spec limit (with usl).")] = None,
    usl: Annotated[float | None, Query(description="Upper spec limit (with lsl).")] = None,
    baseline: Baseline = None,
) -> MeasurementChartOut:
    """The I-MR chart of one dimension, each point with the rules it breaks, and Cp/Cpk."""
    results = await run_in_threadpool(_load, services, since, station_id, recipe, limit)
    samples = measurement_series(results).get(name, [])
    if len(samples) < 2:
        raise HTTPException(404, f"fewer than 2 parts measured {name!r} in this selection")
    values = [s.value for s in samples]
    chart = _charted(lambda: imr_chart(values, baseline))
    points = [
        PointOut(
            result_id=s.result_id,
            captured_wall=s.captured,
            value=s.value,
            moving_range=chart.moving_ranges[i - 1] if i else None,
            rules=[r.value for r in chart.flags[i]],
        )
        for i, s in enumerate(samples)
    ]
    return MeasurementChartOut(
        name=name,
        count=len(values),
        centre=chart.centre,
        sigma=chart.sigma,
        ucl=chart.ucl,
        lcl=chart.lcl,
        mr_centre=chart.mr_centre,
        mr_ucl=chart.mr_ucl,
        baseline=chart.baseline,
        capability=_capability(values, _limits(_spec(services, results), name, lsl, usl)),
        flagged=sum(bool(p.rules) for p in points),
        rules=RULES,
        points=points,
    )
