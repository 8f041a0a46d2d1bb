"""The QA review page: static HTML, JavaScript and CSS shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
# The page loads only its own script, style and images (fetched with the token, shown from
# blob: URLs); no inline code runs.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/review", status_code=307)


@router.get("/review")
async def review_page() -> FileResponse:
    return FileResponse(
        STATIC / "review.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )
