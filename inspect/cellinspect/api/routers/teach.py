"""Teach on the line over the API: start a session (operator, qa, admin), confirm or reject its
parts, read its progress (viewer+); the fitted model goes into shadow as the starter."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, ServicesDep, get_identity
from cellinspect.api.errors import scrub_with
from cellinspect.api.services import ApiServices
from cellinspect.errors import CellInspectError
from cellinspect.lifecycle import teach
from cellinspect.users import Identity, Role

router = APIRouter(prefix="/teach", tags=["teach"], responses=AUTH_RESPONSES)

ResultId = Annotated[str, Path(min_length=1, max_length=128, description="A collected part.")]
TEACHERS = (Role.OPERATOR, Role.QA, Role.ADMIN)


def _teacher(identity: Annotated[Identity | None, Depends(get_identity)]) -> Identity:
    if identity is None:
        raise HTTPException(403, "this station has no API credentials, so it serves read-only")
    if identity.role not in TEACHERS:
        raise HTTPException(
            403,
            f"user {identity.name!r} has role {identity.role.value}; teaching needs "
            + " or ".join(r.value for r in TEACHERS),
        )
    return identity


Teacher = Annotated[Identity, Depends(_teacher)]


class StartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slot: str | None = Field(
        default=None, max_length=128, description="Model slot; None: the recipe's anomaly slot."
    )
    wanted: int = Field(
        default=20,
        ge=teach.MIN_WANTED,
        le=teach.MAX_WANTED,
        description="Confirmed good parts to fit on.",
    )
    roi: str | None = Field(default=None, max_length=128, description="None: the only ROI.")


class PartOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    result_id: str
    part_id: int | None
    verdict: str = Field(description="The line's verdict on the part.")
    score: float | None
    status: str = Field(description="pending, confirmed or rejected.")
    decided_by: str | None
    collected_at: datetime
    has_frame: bool

    @classmethod
    def of(cls, p: teach.TeachPart) -> PartOut:
        return cls(
            result_id=p.result_id,
            part_id=p.part_id,
            verdict=p.verdict,
            score=p.score,
            status=p.status.value,
            decided_by=p.decided_by,
            collected_at=p.collected_at,
            has_frame=p.file is not None,
        )


class StatusOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    state: str = Field(description="idle, collecting, fitting, shadow, failed or cancelled.")
    session: str | None = None
    slot: str | None = None
    roi: str | None = None
    wanted: int = 0
    operator: str | None = None
    collected: int = 0
    confirmed: int = 0
    rejected: int = 0
    version: str | None = Field(default=None, description="The shadow version, once fitted.")
    message: str = ""
    progress: float | None = Field(default=None, description="0..1 while fitting.")
    started_at: datetime | None = None
    parts: list[PartOut] = Field(default_factory=list)
    anomaly_slots: list[str] = Field(
        default_factory=list, description="The live recipe's slots a session can teach."
    )


def _station(services: ApiServices) -> object:
    station = services.station
    if station is None or getattr(station, "model_registry", None) is None:
        raise HTTPException(409, "no running station: teaching needs `cellinspect run`")
    return station


def _manager(services: ApiServices) -> teach.TeachManager:
    return teach.manager_for(_station(services))


def _session(services: ApiServices) -> teach.TeachSession:
    try:
        return _manager(services).current()
    except teach.TeachError as err:
        raise HTTPException(404, str(err)) from err


def _slots(station: object) -> list[str]:
    try:
        return teach.anomaly_slots(station)  # type: ignore[arg-type]
    except Exception:  # a station double without a catalog: nothing to offer
        return []


def _out(services: ApiServices, session: teach.TeachSession) -> StatusOut:
    s = session.status()
    return StatusOut(
        anomaly_slots=_slots(session.station),
        state=s.state.value,
        session=s.session,
        slot=s.slot,
        roi=s.roi,
        wanted=s.wanted,
        operator=s.operator,
        collected=s.collected,
        confirmed=s.confirmed,
        rejected=s.rejected,
        version=s.version,
        message=scrub_with(services.settings, s.message),
        progress=s.progress,
        started_at=s.started_at,
        parts=[PartOut.of(p) for p in s.parts],
    )


def _refused(services: ApiServices, err: CellInspectError) -> HTTPException:
    code = 404 if isinstance(err, teach.TeachPartNotFoundError) else 409
    return HTTPException(code, scrub_with(services.settings, str(err)))


@router.post("", status_code=201)
async def start(body: StartIn, user: Teacher, services: ServicesDep) -> StatusOut:
    """Start collecting the next parts judged on the line (one session at a time)."""
    station = _station(services)
    manager = teach.manager_for(station)

    def make() -> teach.TeachSession:
        return teach.TeachSession(
            station,  # type: ignore[arg-type]  # a StationRuntime: it has model_registry
            body.slot,
            body.wanted,
            user.name,
            roi=body.roi,
        )

    try:
        session = await run_in_threadpool(manager.start, make)
    except CellInspectError as err:
        raise _refused(services, err) from err
    return _out(services, session)


@router.get("", dependencies=[ReadDep])
async def status(services: ServicesDep) -> StatusOut:
    """The current (or last) session: its parts, state, progress and shadow version."""
    if services.station is None:
        return StatusOut(state="idle", message="no running station")
    session = teach.manager_for(services.station).session
    if session is None:
        slots = _slots(services.station)
        return StatusOut(state="idle", message="no teach session yet", anomaly_slots=slots)
    return _out(services, session)


@router.post("/parts/{result_id}/confirm")
async def confirm(result_id: ResultId, user: Teacher, services: ServicesDep) -> PartOut:
    """The operator vouches the collected part is good: it is fitted."""
    return _decide(services, result_id, True, user)


@router.post("/parts/{result_id}/reject")
async def reject(result_id: ResultId, user: Teacher, services: ServicesDep) -> PartOut:
    """The part is not good: it is left out and the next part on the line takes its place."""
    return _decide(services, result_id, False, user)


def _decide(services: ApiServices, result_id: str, good: bool, user: Identity) -> PartOut:
    session = _session(services)
    try:
        p = session.decide(result_id, good, user.name)
    except CellInspectError as err:
        raise _refused(services, err) from err
    return PartOut.of(p)


@router.get(
    "/parts/{result_id}/image",
    dependencies=[ReadDep],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The part's ROI, PNG."}},
)
async def part_image(result_id: ResultId, services: ServicesDep) -> Response:
    """The collected part's ROI as the detector will be fitted on it (for thumbnails)."""
    session = _session(services)
    try:
        png = await run_in_threadpool(session.thumbnail, result_id)
    except CellInspectError as err:
        raise _refused(services, err) from err
    return Response(png, media_type="image/png")


@router.post("/cancel")
async def cancel(user: Teacher, services: ServicesDep) -> StatusOut:
    """Stop collecting (or fitting); nothing is added to the registry."""
    session = _session(services)
    try:
        session.cancel(user.name)
    except CellInspectError as err:
        raise _refused(services, err) from err
    return _out(services, session)
