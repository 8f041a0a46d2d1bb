"""PUT /results/{id}/review: the QA label; each change is appended to the audit trail.

The reviewer recorded is the user the token belongs to (role qa or admin); a `reviewer` field
in the body is accepted only when it names that same user (older clients send one).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReviewerDep, ServicesDep
from cellinspect.api.schemas import ErrorOut, ReviewIn, ReviewOut, Text
from cellinspect.storage.records import ReviewInput

router = APIRouter(tags=["reviews"])

ResultId = Annotated[Text, Path(min_length=1, max_length=128, description="Result id.")]


@router.put(
    "/results/{result_id}/review",
    response_model=ReviewOut,
    responses={
        **AUTH_RESPONSES,
        404: {"model": ErrorOut},
        409: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
    summary="Label a result: confirmed defect (with class) or false reject",
)
async def put_review(
    services: ServicesDep, reviewer: ReviewerDep, result_id: ResultId, body: ReviewIn
) -> ReviewOut:
    if body.reviewer is not None and body.reviewer.strip() != reviewer.name:
        raise HTTPException(
            422,
            f"reviewer is the signed-in user ({reviewer.name!r}, from the token), not "
            f"{body.reviewer.strip()!r}: leave the field out",
        )
    review = await run_in_threadpool(
        services.store.set_review,
        result_id,
        ReviewInput(
            label=body.label,
            reviewer=reviewer.name,
            defect_class=body.defect_class,
            comment=body.comment,
            expected_revision=body.expected_revision,
        ),
    )
    services.metrics.reviews.labels(review.label.value).inc()
    services.events.publish_review(review)
    return ReviewOut.of(review)
