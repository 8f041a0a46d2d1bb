"""GET /docs (Swagger UI) and GET /redoc (ReDoc), both working without a network.

FastAPI's own docs pages load their JavaScript, CSS, favicon (and for ReDoc, Google Fonts)
from CDNs, so on a plant network without internet they stay blank. Here the pages load every
asset from the station itself, under DOCS_ASSETS: the files come from the `fastapi-offline`
package (Swagger UI dist, Apache-2.0; ReDoc standalone bundle, MIT; a favicon), which ships
them as package data. Only its files are used; the app keeps its own FastAPI object.

Both pages also carry a Content-Security-Policy that lets them load nothing from elsewhere:
ReDoc's side menu always shows a Redocly logo from cdn.redoc.ly (no option turns it off), and
with the policy the browser refuses it without a request (the link text stays).
"""

from __future__ import annotations

import re
from base64 import b64encode
from hashlib import sha256

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)

# Mounted before the review page's /static, which would otherwise take these paths.
DOCS_ASSETS = "/static/docs"
ASSET_PACKAGE = ("fastapi_offline", "static")
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"
# Added to FastAPI's defaults. Its BaseLayout shows no validator badge; validatorUrl None makes
# sure Swagger UI never sends the schema to the online validator either.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
# Swagger UI and ReDoc set inline styles; ReDoc's search runs in a worker made from a blob.
# Inline scripts (Swagger UI's start-up) are allowed by their hash only.
CSP = (
    "default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_assets() -> StaticFiles:
    """The static files behind DOCS_ASSETS (checked to exist when the app starts)."""
    return StaticFiles(packages=[ASSET_PACKAGE])


def _with_csp(response: HTMLResponse) -> HTMLResponse:
    body = bytes(response.body).decode()
    hashes = "".join(
        f" 'sha256-{b64encode(sha256(script.encode()).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(body)
    )
    response.headers["Content-Security-Policy"] = CSP.format(hashes=hashes)
    return response


def _asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}{DOCS_ASSETS}/{name}"


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_asset(request, SWAGGER_JS),
        swagger_css_url=_asset(request, SWAGGER_CSS),
        swagger_favicon_url=_asset(request, FAVICON),
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )
    return _with_csp(page)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset(request, REDOC_JS),
        redoc_favicon_url=_asset(request, FAVICON),
        with_google_fonts=False,
    )
    return _with_csp(page)
