"""The production dashboard page: static HTML and script, charts drawn by a vendored Chart.js."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from cellinspect.api.routers.review_page import CSP, STATIC

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard_page() -> FileResponse:
    return FileResponse(
        STATIC / "dashboard.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )
