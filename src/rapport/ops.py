"""Operations endpoints: liveness, readiness, Prometheus metrics; and the metrics middleware."""

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rapport import migrate
from rapport.db import Database
from rapport.metrics import HTTP_LATENCY, HTTP_REQUESTS

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    """The process is up and serving."""
    return "ok"


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """The database answers and its schema is at the newest migration."""
    database: Database = request.app.state.database
    try:
        current, head = await run_in_threadpool(migrate.revisions, database)
    except Exception as exc:
        return JSONResponse({"ready": False, "database": f"unreachable: {type(exc).__name__}"}, 503)
    ok = current == head
    body = {"ready": ok, "database": "ok", "migration": current, "head": head}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts requests and their latency per route template (never per raw URL: ids leak)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], name, str(status[0])).inc()
            HTTP_LATENCY.labels(name).observe(time.perf_counter() - started)
