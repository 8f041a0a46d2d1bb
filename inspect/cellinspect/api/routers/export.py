"""POST /exports: write the labelled dataset into the station's export folder.

The target folder is named by the server (timestamp + random suffix) under the configured
export directory: no path is ever taken from the request. The recipe the server inspects with
is recorded in the export's export.json (its preprocessing and ROIs), so that its results'
images can be trained on.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ExportDep, ServicesDep
from cellinspect.api.schemas import ErrorOut, ExportIn, ExportOut
from cellinspect.api.services import ApiServices
from cellinspect.config import Recipe
from cellinspect.export.dataset import export_dataset

router = APIRouter(tags=["export"])
log = logging.getLogger(__name__)


def _live_recipes(services: ApiServices) -> list[tuple[Recipe, str]]:
    """The (recipe, sha256) the server's inspector runs, when it has one loaded."""
    inspector = services.inspector
    recipe = getattr(inspector, "recipe", None)
    if inspector is None or not isinstance(recipe, Recipe):
        return []
    return [(recipe, inspector.recipe_sha256)]


@router.post(
    "/exports",
    status_code=201,
    response_model=ExportOut,
    dependencies=[ExportDep],
    responses={**AUTH_RESPONSES, 409: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    summary="Export reviewed results as a class-folder dataset with a manifest",
)
async def create_export(services: ServicesDep, body: ExportIn | None = None) -> ExportOut:
    body = body or ExportIn()
    name = f"export-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    out_dir = services.settings.resolved_export_dir / name
    try:
        report = await run_in_threadpool(
            lambda: export_dataset(
                services.store,
                out_dir,
                body.include_unreviewed_above,
                manifest_format=body.manifest_format,
                good_label=services.settings.good_label,
                recipes=_live_recipes(services),
            )
        )
    except OSError as err:  # the folder is the server's business: its name stays here
        log.error("export into %s failed: %s", out_dir, err)
        raise HTTPException(
            409, f"cannot write the export into <export dir>: {err.strerror or err}"
        ) from err
    return ExportOut.of(name, report)
