"""PUT /results/{id}/review: the QA label; each change is appended to the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import ServicesDep, TokenDep
from cellinspect.api.schemas import ErrorOut, ReviewIn, ReviewOut, Text
from cellinspect.storage.records import ReviewInput

router = APIRouter(tags=["reviews"])

ResultId = Annotated[Text, Path(min_length=1, max_length=128, description="Result id.")]


@router.put(
    "/results/{result_id}/review",
    response_model=ReviewOut,
    dependencies=[TokenDep],
    responses={
        401: {"model": ErrorOut},
        404: {"model": ErrorOut},
        409: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
    summary="Label a result: confirmed defect (with class) or false reject",
)
async def put_review(services: ServicesDep, result_id: ResultId, body: ReviewIn) -> ReviewOut:
    review = await run_in_threadpool(
        services.store.set_review,
        result_id,
        ReviewInput(
            label=body.label,
            reviewer=body.reviewer.strip(),
            defect_class=body.defect_class,
            comment=body.comment,
            expected_revision=body.expected_revision,
        ),
    )
    services.metrics.reviews.labels(review.label.value).inc()
    services.events.publish_review(review)
    return ReviewOut.of(review)
