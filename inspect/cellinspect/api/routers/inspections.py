"""POST /inspections: run the loaded recipe on an uploaded image and return the verdict.

Memory is bounded twice: each upload's decode by the frame size the recipe expects (checked
from the image header before decoding, see api/uploads.py), and the uploads in flight by
`max_concurrent_uploads` (more get 503 with Retry-After at once, without waiting).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, OperateDep, ServicesDep
from cellinspect.api.schemas import ErrorOut, InspectionOut, ResultOut, display_name
from cellinspect.api.services import ApiServices
from cellinspect.api.uploads import (
    UploadLimits,
    UploadRejectedError,
    check_media_type,
    decode_upload,
)
from cellinspect.entities import ImageU8, InspectedFrame
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.storage.records import ImageKind

router = APIRouter(tags=["inspections"])

_INT64 = 2**63 - 1
RETRY_AFTER_S = 1

log = logging.getLogger(__name__)


def _frame_size(inspector: ImageInspector) -> tuple[int, int] | None:
    """The recipe's frame size, from inspectors that know it (the recipe Inspector does)."""
    size = getattr(inspector, "frame_size", None)
    if isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return size[0], size[1]
    return None


def _inspect(
    services: ApiServices,
    image: ImageU8,
    name: str | None,
    part_id: int | None,
    encoder: int | None,
) -> InspectedFrame:
    inspector = services.inspector
    if inspector is None:  # checked before; keeps mypy and a racing reload honest
        raise RuntimeError("no inspector")
    with services.inspect_lock:
        return inspector.inspect_image(image, name=name, part_id=part_id, encoder=encoder)


@router.post(
    "/inspections",
    status_code=201,
    response_model=InspectionOut,
    dependencies=[OperateDep],
    responses={
        **AUTH_RESPONSES,
        413: {"model": ErrorOut},
        415: {"model": ErrorOut},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
    summary="Inspect an uploaded image with the loaded recipe",
)
async def create_inspection(
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The image (PNG, JPEG, BMP, TIFF, WebP).")],
    part_id: Annotated[
        int | None, Form(ge=0, le=_INT64, description="Part id latched by the PLC.")
    ] = None,
    encoder: Annotated[
        int | None, Form(ge=-_INT64, le=_INT64, description="Encoder count.")
    ] = None,
) -> InspectionOut:
    if services.inspector is None:
        raise HTTPException(503, "no recipe is loaded on this server; start it with --recipe")
    slots = services.upload_slots
    if not slots.try_acquire():
        raise HTTPException(
            503,
            f"{slots.size} upload(s) are being inspected already (max_concurrent_uploads); "
            f"retry in {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        return await _inspect_upload(services, services.inspector, file, part_id, encoder)
    finally:
        slots.release()


async def _inspect_upload(
    services: ApiServices,
    inspector: ImageInspector,
    file: UploadFile,
    part_id: int | None,
    encoder: int | None,
) -> InspectionOut:
    limits = UploadLimits(
        services.settings.max_upload_bytes,
        services.settings.max_image_pixels,
        frame_size=_frame_size(inspector),
    )
    what = "upload"
    try:
        check_media_type(file.content_type, what)
        if file.size is not None and file.size > limits.max_bytes:
            raise UploadRejectedError(
                413, f"{what}: {file.size} bytes is over the limit of {limits.max_bytes}"
            )
        data = await file.read(limits.max_bytes + 1)
        image = await run_in_threadpool(decode_upload, data, limits, what)
    except UploadRejectedError as err:
        raise HTTPException(err.status, str(err)) from err
    name = display_name(file.filename)
    frame = await run_in_threadpool(_inspect, services, image, name, part_id, encoder)
    if services.station is not None:
        try:
            frame = await run_in_threadpool(services.station.record_upload, frame)
        except Exception as err:
            log.error("upload %s: result not recorded (%s); not given out", name, err)
            raise HTTPException(
                503, f"the station cannot record results now ({type(err).__name__}); retry later"
            ) from err
    outcome = services.writer.submit(frame)
    services.metrics.inspections.labels(frame.result.verdict.value).inc()
    kinds: set[ImageKind] = set()
    if services.retention.keeps_images(frame.result):
        if frame.image is not None:
            kinds.add(ImageKind.IMAGE)
        if frame.overlay is not None:
            kinds.add(ImageKind.OVERLAY)
    return InspectionOut(result=ResultOut.of(frame.result, kinds=kinds), stored=outcome)
