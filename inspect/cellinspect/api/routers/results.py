"""GET /results (filters, cursor pagination), one result, its images and its audit trail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, ServicesDep, StoreDep
from cellinspect.api.schemas import (
    AuditEntryOut,
    AuditOut,
    DefectClassesOut,
    ErrorOut,
    ResultOut,
    ResultPageOut,
    Text,
    UtcDatetime,
)
from cellinspect.entities import Verdict
from cellinspect.storage.records import ImageKind, ResultFilter, ReviewLabel
from cellinspect.storage.sql_store import MAX_PAGE

router = APIRouter(tags=["results"], dependencies=[ReadDep], responses=AUTH_RESPONSES)

_INT64 = 2**63 - 1
ResultId = Annotated[Text, Path(min_length=1, max_length=128, description="Result id.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


@router.get("/results", response_model=ResultPageOut, responses={422: {"model": ErrorOut}})
async def list_results(
    store: StoreDep,
    verdict: Annotated[list[Verdict], Query(description="Any of these verdicts.")] = [],  # noqa: B006
    since: Annotated[
        UtcDatetime | None, Query(description="Captured at or after (ISO 8601).")
    ] = None,
    until: Annotated[UtcDatetime | None, Query(description="Captured before (ISO 8601).")] = None,
    defect_class: Annotated[
        list[Annotated[Text, Query(max_length=128)]],
        Query(description="Any of these model classes."),
    ] = [],  # noqa: B006
    reviewed: Annotated[bool | None, Query(description="Reviewed by QA or not.")] = None,
    label: Annotated[ReviewLabel | None, Query(description="QA label.")] = None,
    model_version: Annotated[
        Text | None, Query(max_length=200, description="'version' or 'name@version'.")
    ] = None,
    part_id: Annotated[int | None, Query(ge=-_INT64, le=_INT64)] = None,
    source: Annotated[Text | None, Query(max_length=256)] = None,
    station_id: Annotated[
        Text | None, Query(max_length=128, description="Judged by this station.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[
        Text | None, Query(max_length=512, description="next_cursor of the previous page.")
    ] = None,
) -> ResultPageOut:
    filters = ResultFilter(
        verdicts=tuple(verdict),
        since=since,
        until=until,
        defect_classes=tuple(defect_class),
        reviewed=reviewed,
        label=label,
        model_version=model_version,
        part_id=part_id,
        source=source,
        station_id=station_id,
    )
    try:
        page = await run_in_threadpool(store.query, filters, limit, cursor)
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    return ResultPageOut(
        items=[ResultOut.of(s.result, s) for s in page.items], next_cursor=page.next_cursor
    )


@router.get("/defect-classes", response_model=DefectClassesOut)
async def defect_classes(services: ServicesDep) -> DefectClassesOut:
    seen = await run_in_threadpool(services.store.defect_classes)
    configured = list(services.settings.defect_classes)
    return DefectClassesOut(classes=configured + [c for c in seen if c not in configured])


@router.get("/results/{result_id}", response_model=ResultOut, responses=_NOT_FOUND)
async def get_result(store: StoreDep, result_id: ResultId) -> ResultOut:
    stored = await run_in_threadpool(store.get, result_id)
    return ResultOut.of(stored.result, stored)


async def _image(store: StoreDep, result_id: str, kind: ImageKind) -> FileResponse:
    path, record = await run_in_threadpool(store.image_file, result_id, kind)
    return FileResponse(
        path, media_type=record.media_type, headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get(
    "/results/{result_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **_NOT_FOUND},
)
async def get_image(store: StoreDep, result_id: ResultId) -> FileResponse:
    return await _image(store, result_id, ImageKind.IMAGE)


@router.get(
    "/results/{result_id}/overlay",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **_NOT_FOUND},
)
async def get_overlay(store: StoreDep, result_id: ResultId) -> FileResponse:
    return await _image(store, result_id, ImageKind.OVERLAY)


@router.get("/results/{result_id}/audit", response_model=AuditOut, responses=_NOT_FOUND)
async def get_audit(store: StoreDep, result_id: ResultId) -> AuditOut:
    entries = await run_in_threadpool(store.audit_trail, result_id)
    return AuditOut(id=result_id, entries=[AuditEntryOut.of(e) for e in entries])
