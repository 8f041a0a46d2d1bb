"""Dependency aliases for routes: services, the store, the settings and the token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cellinspect.api.services import ApiServices
from cellinspect.settings import StationSettings
from cellinspect.storage.protocols import ResultStore

_bearer = HTTPBearer(auto_error=False, description="Station API token as a bearer token.")
_api_key = APIKeyHeader(
    name="X-API-Token", auto_error=False, description="Station API token in a header."
)


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


def require_token(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> None:
    """Every state-changing route depends on this: 401 without a valid token."""
    expected = settings.token_value()
    if expected is None:
        raise HTTPException(
            403,
            "this station has no API token configured, so changes are refused; "
            "set CELLINSPECT_API_TOKEN (or api_token in the settings file)",
        )
    given = bearer.credentials if bearer is not None else api_key
    if not given:
        raise HTTPException(
            401,
            "missing API token: send 'Authorization: Bearer <token>' or 'X-API-Token: <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})


TokenDep = Depends(require_token)
