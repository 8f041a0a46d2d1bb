"""PUT /results/{id}/review: the QA label; POST .../review/undo takes the last one back.

The reviewer recorded is the user the token belongs to (role qa or admin); a `reviewer` field
in the body is accepted only when it names that same user (older clients send one). Every
change, undos included, is appended to the audit trail; nothing in it is rewritten.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReviewerDep, ServicesDep
from cellinspect.api.schemas import ErrorOut, ReviewIn, ReviewOut, Text
from cellinspect.storage.errors import NothingToUndoError, ReviewOwnerError
from cellinspect.storage.records import ReviewInput
from cellinspect.users import Role

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


class UndoOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    undone_revision: int = Field(description="The label taken back (its audit revision).")
    revision: int = Field(description="The audit revision recording the undo.")
    review: ReviewOut | None = Field(
        description="The label in effect again; null: the result is unreviewed again."
    )


@router.post(
    "/results/{result_id}/review/undo",
    response_model=UndoOut,
    responses={
        **AUTH_RESPONSES,
        404: {"model": ErrorOut, "description": "No such result, or no label left to undo."},
        409: {"model": ErrorOut},
    },
    summary="Undo the label in effect, restoring the one before it (recorded in the audit)",
)
async def undo_review(
    services: ServicesDep,
    reviewer: ReviewerDep,
    result_id: ResultId,
    expected_revision: Annotated[
        int | None,
        Query(ge=0, le=2**31, description="Audit revision the undo is based on; 409 if moved on."),
    ] = None,
) -> UndoOut:
    """A qa user may undo only a label they made themselves; an admin any label."""
    try:
        undo = await run_in_threadpool(
            lambda: services.store.undo_review(
                result_id,
                reviewer.name,
                any_reviewer=reviewer.role is Role.ADMIN,
                expected_revision=expected_revision,
            )
        )
    except NothingToUndoError as err:
        raise HTTPException(404, str(err)) from err
    except ReviewOwnerError as err:
        raise HTTPException(403, str(err)) from err
    review = undo.review
    services.events.publish(
        "review",
        {
            "id": result_id,
            "label": None if review is None else review.label.value,
            "defect_class": None if review is None else review.defect_class,
            "reviewer": reviewer.name,
            "revision": undo.revision,
            "undoes": undo.undone_revision,
        },
    )
    return UndoOut(
        id=result_id,
        undone_revision=undo.undone_revision,
        revision=undo.revision,
        review=None if review is None else ReviewOut.of(review),
    )
