"""GET /me: who the token belongs to and what its role may do (the review page shows it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cellinspect.api.deps import AUTH_RESPONSES, ServicesDep, require_read
from cellinspect.users import ROLE_PERMISSIONS, Identity, Role

router = APIRouter(tags=["access"], responses=AUTH_RESPONSES)


class MeOut(BaseModel):
    name: str = Field(description="The user; recorded as reviewer on labels. anonymous: none.")
    role: Role
    permissions: list[str] = Field(description="read, operate, review, export.")
    read_only_station: bool = Field(
        description="True when the station has no credentials at all: changes are refused."
    )


@router.get("/me", response_model=MeOut, summary="The caller's user name, role and permissions")
async def me(services: ServicesDep, identity: Annotated[Identity, Depends(require_read)]) -> MeOut:
    return MeOut(
        name=identity.name,
        role=identity.role,
        permissions=sorted(p.value for p in ROLE_PERMISSIONS[identity.role]),
        read_only_station=not services.auth.configured,
    )
