"""Model lifecycle over the API: versions and audit (viewer+), shadow (qa, admin), promote and
rollback (admin), each as the authenticated user; a running station swaps without a restart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, ServicesDep, get_identity
from cellinspect.api.errors import scrub_with
from cellinspect.api.schemas import display_name
from cellinspect.api.services import ApiServices
from cellinspect.errors import CellInspectError
from cellinspect.lifecycle import promotion
from cellinspect.lifecycle.registry import LifecycleError, ModelEvent, ModelRegistry, ModelVersion
from cellinspect.users import Identity, Role

T = TypeVar("T")

router = APIRouter(prefix="/models", tags=["models"], responses=AUTH_RESPONSES)

Slot = Annotated[str, Path(min_length=1, max_length=128, description="Model slot (recipe name).")]
Version = Annotated[str, Path(min_length=1, max_length=64, description="Registered version.")]


def _roles(*roles: Role) -> object:
    def check(identity: Annotated[Identity | None, Depends(get_identity)]) -> Identity:
        if identity is None:
            raise HTTPException(403, "this station has no API credentials, so it serves read-only")
        if identity.role not in roles:
            raise HTTPException(
                403,
                f"user {identity.name!r} has role {identity.role.value}; this needs "
                + " or ".join(r.value for r in roles),
            )
        return identity

    return Depends(check)


QaOrAdmin = Annotated[Identity, _roles(Role.QA, Role.ADMIN)]
Admin = Annotated[Identity, _roles(Role.ADMIN)]


class VersionOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    slot: str
    version: str
    state: str
    sha256: str = Field(description="Seal's package hash, as results record it.")
    source: str | None = Field(description="Folder name it was added from (no server path).")
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, v: ModelVersion) -> VersionOut:
        return cls(
            slot=v.slot,
            version=v.version,
            state=v.state.value,
            sha256=v.sha256,
            source=display_name(v.source),
            created_by=v.created_by,
            created_at=v.created_at,
            updated_at=v.updated_at,
        )


class EventOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    slot: str
    version: str
    action: str
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    at: datetime

    @classmethod
    def of(cls, e: ModelEvent) -> EventOut:
        return cls(
            id=e.id,
            slot=e.slot,
            version=e.version,
            action=e.action,
            from_state=None if e.from_state is None else e.from_state.value,
            to_state=e.to_state.value,
            actor=e.actor,
            reason=e.reason,
            at=e.at,
        )


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    override_reason: str | None = Field(
        default=None, max_length=2000, description="Admin's reason to skip a failing gate."
    )
    min_reviewed: int = Field(default=promotion.DEFAULT_MIN_REVIEWED, ge=0)


class AddIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=1024, description="Package folder on the station.")
    version: str | None = Field(default=None, max_length=64, description="None: the manifest's.")
    reason: str = Field(default="", max_length=2000)


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=2000)


class ChangeOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    slot: str
    retired: VersionOut
    live: VersionOut
    swapped: bool = Field(description="True: the running station swapped without a restart.")


def _registry(services: ApiServices) -> ModelRegistry:
    station = services.station
    make = getattr(station, "model_registry", None)
    if make is None:
        raise HTTPException(409, "no running station: the model registry needs `cellinspect run`")
    registry: ModelRegistry = make()
    return registry


async def _call(services: ApiServices, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a registry change off the event loop; its errors as 409 (state) or 422 (package),
    with the station's folders named, not shown."""
    try:
        result = await run_in_threadpool(fn, *args, **kwargs)
    except LifecycleError as err:  # GateRefusedError too
        raise HTTPException(409, scrub_with(services.settings, str(err))) from err
    except CellInspectError as err:
        raise HTTPException(422, scrub_with(services.settings, str(err))) from err
    return result


@router.get("/versions", dependencies=[ReadDep])
async def list_versions(services: ServicesDep, slot: str | None = None) -> list[VersionOut]:
    """Registered versions (of one slot), oldest first."""
    versions: list[ModelVersion] = await _call(services, _registry(services).versions, slot)
    return [VersionOut.of(v) for v in versions]


@router.get("/audit", dependencies=[ReadDep])
async def audit(services: ServicesDep, slot: str | None = None) -> list[EventOut]:
    """Every registry change (of one slot): who, what, when, why."""
    events: list[ModelEvent] = await _call(services, _registry(services).audit, slot)
    return [EventOut.of(e) for e in events]


@router.post("/{slot}/versions", status_code=201)
async def add_version(slot: Slot, body: AddIn, user: Admin, services: ServicesDep) -> VersionOut:
    """Copy a sealed package (a folder on the station) into the registry as a candidate."""
    registry = _registry(services)
    keys = getattr(services.station, "trusted_model_keys", None)
    v: ModelVersion = await _call(
        services,
        registry.add,
        slot,
        FsPath(body.path),
        user.name,
        version=body.version,
        trusted_keys=keys,
        reason=body.reason,
    )
    return VersionOut.of(v)


@router.post("/{slot}/versions/{version}/shadow")
async def shadow(
    slot: Slot, version: Version, user: QaOrAdmin, services: ServicesDep
) -> VersionOut:
    """Judge every part with this version beside the live model (shadow_results only)."""
    registry = _registry(services)
    v: ModelVersion = await _call(
        services, promotion.shadow, registry, slot, version, user.name, services.station
    )
    return VersionOut.of(v)


@router.post("/{slot}/versions/{version}/retire")
async def retire(
    slot: Slot, version: Version, body: RollbackIn, user: Admin, services: ServicesDep
) -> VersionOut:
    """Give up a candidate or shadow version (its shadow run stops)."""
    registry = _registry(services)
    v: ModelVersion = await _call(
        services,
        promotion.retire,
        registry,
        slot,
        version,
        user.name,
        body.reason,
        services.station,
    )
    return VersionOut.of(v)


@router.post("/{slot}/versions/{version}/promote")
async def promote(
    slot: Slot, version: Version, body: PromoteIn, user: Admin, services: ServicesDep
) -> ChangeOut:
    """Gate, then hot swap between two parts; the previous live version is retired."""
    registry = _registry(services)
    change: promotion.Change = await _call(
        services,
        promotion.promote,
        registry,
        slot,
        version,
        user.name,
        station=services.station,
        min_reviewed=body.min_reviewed,
        override_reason=body.override_reason,
    )
    return _change(change)


@router.post("/{slot}/rollback")
async def rollback(slot: Slot, body: RollbackIn, user: Admin, services: ServicesDep) -> ChangeOut:
    """Return the slot to the version live before this one, hot swapped."""
    registry = _registry(services)
    change: promotion.Change = await _call(
        services,
        promotion.rollback,
        registry,
        slot,
        user.name,
        body.reason,
        station=services.station,
    )
    return _change(change)


def _change(change: promotion.Change) -> ChangeOut:
    return ChangeOut(
        slot=change.slot,
        retired=VersionOut.of(change.retired),
        live=VersionOut.of(change.live),
        swapped=change.swapped,
    )
