"""Every error leaves the API as JSON: `{"error": <slug>, "message": <sentence>, "details": [...]}`.

Domain errors raised below the routes are mapped to status codes here, so routes and services
stay free of HTTP concerns; `HTTPException` is raised only in routes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellinspect.api.limits import BodyTooLargeError
from cellinspect.export.dataset import ExportError
from cellinspect.settings import StationSettings
from cellinspect.storage.errors import (
    ResultNotFoundError,
    ReviewConflictError,
    ReviewInvalidError,
    StoreError,
)

log = logging.getLogger(__name__)

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def mask_secrets(message: str) -> str:
    """Any URL password in a message becomes ***."""
    return _URL_PASSWORD.sub(r"\1***@", message)


def scrub(request: Request, message: str) -> str:
    """A message fit for a client: no URL passwords, no server folders (named instead)."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        return mask_secrets(message)
    return scrub_with(services.settings, message)


def scrub_with(settings: StationSettings, message: str) -> str:
    """`scrub` for a station's settings."""
    message = mask_secrets(message)
    folders = [
        (settings.resolved_export_dir, "<export dir>"),
        (settings.resolved_image_dir, "<image dir>"),
        (settings.resolved_spill_file, "<spill file>"),
        (settings.data_dir, "<data dir>"),
    ]
    for folder, name in folders:
        for form in {str(folder.resolve()), str(folder)}:
            if form and form != ".":
                message = message.replace(form, name)
    return message


def slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_response(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": slug(status), "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _loc(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(p) for p in loc)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": _loc(e.get("loc", ())), "message": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{d['loc']}: {d['message']}" for d in details[:5])
    return error_response(422, f"invalid request: {summary}", details)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, BodyTooLargeError):
        return error_response(413, "request body exceeds the upload limit")
    message = exc.detail if isinstance(exc.detail, str) else slug(exc.status_code)
    return error_response(exc.status_code, scrub(request, message), headers=exc.headers)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, scrub(request, str(exc)))


async def _review_invalid(request: Request, exc: Exception) -> JSONResponse:
    return error_response(422, scrub(request, str(exc)))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, scrub(request, str(exc)))


async def _export(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, scrub(request, str(exc)))


async def _store(_: Request, exc: Exception) -> JSONResponse:
    log.error("store error: %s", mask_secrets(str(exc)))
    return error_response(503, "result store unavailable; the station log has the details")


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    return error_response(413, "request body exceeds the upload limit")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error; the station log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ResultNotFoundError, _not_found)
    app.add_exception_handler(ReviewInvalidError, _review_invalid)
    app.add_exception_handler(ReviewConflictError, _conflict)
    app.add_exception_handler(ExportError, _export)
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(BodyTooLargeError, _too_large)
    app.add_exception_handler(Exception, _unexpected)
