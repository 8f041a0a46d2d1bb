"""Dependency aliases for routes: services, the store, the settings, who calls and may they.

Every route but /health, /metrics and the pages needs a token once the station has any
credential (a user in the users file or the legacy api_token); the token's role decides what
it may do (see cellinspect.users). A station with no credential serves reads to anyone and
refuses every change with 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cellinspect.api.schemas import ErrorOut
from cellinspect.api.services import ApiServices
from cellinspect.settings import StationSettings
from cellinspect.storage.protocols import ResultStore
from cellinspect.users import ROLE_PERMISSIONS, Identity, Permission, Role

_bearer = HTTPBearer(
    auto_error=False, description="API token (from `cellinspect users add`) as a bearer token."
)
_api_key = APIKeyHeader(name="X-API-Token", auto_error=False, description="API token in a header.")


def get_services(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


ServicesDep = Annotated[ApiServices, Depends(get_services)]


def get_store(services: ServicesDep) -> ResultStore:
    return services.store


def get_settings(services: ServicesDep) -> StationSettings:
    return services.settings


StoreDep = Annotated[ResultStore, Depends(get_store)]
SettingsDep = Annotated[StationSettings, Depends(get_settings)]


def get_identity(
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Identity | None:
    """The caller from its token; None (anonymous) only on a station with no credentials."""
    auth = services.auth
    if not auth.configured:
        return None
    given = bearer.credentials if bearer is not None else api_key
    if not given:
        raise HTTPException(
            401,
            "missing API token: send 'Authorization: Bearer <token>' or 'X-API-Token: <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    identity = auth.authenticate(given)
    if identity is None:
        raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
    return identity


def _roles_with(permission: Permission) -> str:
    return ", ".join(r.value for r, allowed in ROLE_PERMISSIONS.items() if permission in allowed)


def require(permission: Permission) -> Callable[[Identity | None], Identity]:
    """A dependency: the caller, if its role has `permission` (401/403 otherwise)."""

    def check(identity: Annotated[Identity | None, Depends(get_identity)]) -> Identity:
        if identity is None:
            if permission is Permission.READ:
                return ANONYMOUS
            raise HTTPException(
                403,
                "this station has no API credentials configured, so it serves read-only; add "
                "a user with 'cellinspect users add NAME --role ROLE' (or set "
                "CELLINSPECT_API_TOKEN) and restart",
            )
        if not identity.may(permission):
            raise HTTPException(
                403,
                f"user {identity.name!r} has role {identity.role.value}, which may not "
                f"{permission.value}; roles that may: {_roles_with(permission)}",
            )
        return identity

    return check


ANONYMOUS = Identity("anonymous", Role.VIEWER)
require_read = require(Permission.READ)
require_operate = require(Permission.OPERATE)
require_review = require(Permission.REVIEW)
require_export = require(Permission.EXPORT)

ReadDep = Depends(require_read)
OperateDep = Depends(require_operate)
ExportDep = Depends(require_export)
ReviewerDep = Annotated[Identity, Depends(require_review)]
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No token, or not a valid one."},
    403: {"model": ErrorOut, "description": "The token's role may not do this."},
}
