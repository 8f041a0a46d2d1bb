"""PUT /hub/images/{sha256}: a station's forwarder delivers a kept image to the hub."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, OperateDep, StoreDep
from cellinspect.api.schemas import ErrorOut
from cellinspect.plant.hub_images import ImageRejectedError, ingest_image
from cellinspect.storage.errors import ResultNotFoundError
from cellinspect.storage.records import ImageKind
from cellinspect.storage.sql_store import SqlResultStore

router = APIRouter(tags=["hub"], dependencies=[OperateDep], responses=AUTH_RESPONSES)

Sha256 = Annotated[
    str, Path(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$", description="sha256")
]


@router.put(
    "/hub/images/{sha256}",
    status_code=201,
    responses={
        200: {"description": "The result already had this image."},
        201: {"description": "Stored."},
        404: {"model": ErrorOut, "description": "The result has not reached the hub."},
        422: {"model": ErrorOut, "description": "Hash mismatch or not a PNG/JPEG."},
    },
)
async def put_image(
    request: Request,
    store: StoreDep,
    sha256: Sha256,
    result_id: Annotated[str, Query(min_length=1, max_length=128)],
    kind: Annotated[ImageKind, Query()] = ImageKind.IMAGE,
) -> Response:
    """Store an image (body: the file's bytes) content-addressed and link it to its result.

    Idempotent: the same image again answers 200 and changes nothing. Needs role operator
    (a station's token) or admin.
    """
    if not isinstance(store, SqlResultStore):
        raise HTTPException(501, "this server's store does not take forwarded images")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    try:
        new = await run_in_threadpool(
            ingest_image, store, sha256, result_id, kind, media_type, body
        )
    except ImageRejectedError as err:
        raise HTTPException(422, str(err)) from None
    except ResultNotFoundError as err:
        raise HTTPException(404, str(err)) from None
    return Response(status_code=201 if new else 200)
