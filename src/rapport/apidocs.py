"""The API docs at /docs: Swagger UI served from the package that ships it (FastAPI's own
page loads it from a CDN, blank on a machine offline). No ReDoc: its page fetches its
vendor's logo from another CDN.

The pages are routes of this module, reading their app from the request. FastAPIOffline
made them closures over the app, and FastAPI keeps every endpoint it has classified in
module-level caches of 4,096 entries: each app ever made stayed alive with them, its routes
and their schemas (~11,000 objects or more an app). A test process makes two apps a test;
its heap grew by millions of objects, and each full garbage collection, which holds the
interpreter lock throughout, froze every thread of the process for tens of seconds on a
busy machine: a live server that answered nothing, a write transaction that held SQLite's
lock while another thread's wait for it ran out.
"""

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
STATIC_URL = "/static-offline-docs"
STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )


@router.get(f"{DOCS_URL}/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


def install(app: FastAPI) -> None:
    """Serve the docs pages and Swagger UI's files on ``app``."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static-offline-docs")
    app.include_router(router)
