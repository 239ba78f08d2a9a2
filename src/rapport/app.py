"""The application factory: one FastAPI app wired to one database, bus and worker."""

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from rapport import apidocs, bus, cache, problems
from rapport.assistant import triage
from rapport.auth import security
from rapport.auth.deps import PrincipalCache
from rapport.auth.ratelimit import RateLimiter
from rapport.channels.views import InboundFastPath
from rapport.channels.webchat.views import ReadableErrors
from rapport.config import Settings
from rapport.crypto import box_for
from rapport.db import Database
from rapport.guard import NoStore, RequestGuard
from rapport.ingest import IngestWriter
from rapport.jobs import registry
from rapport.jobs.worker import Worker, WorkerThread
from rapport.ops import MetricsMiddleware
from rapport.realtime import presence


def _warm_up() -> None:
    security.dummy_hash()
    triage.warm_up()


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """Build the app; the database, bus, ingest writer and worker start with its lifespan."""
    database = database or Database(settings.database_url)
    registry.load_handlers()
    event_bus = bus.make_bus(settings.redis_url)
    ingest = IngestWriter(database, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await event_bus.start()
        bus.set_bus(event_bus)
        # Processes sharing Redis forget together what one of them changed (cached rules,
        # tokens, ...); alone, a process needs no one to tell.
        forgetting = cache.RedisForgetting(settings.redis_url) if settings.redis_url else None
        if forgetting is not None:
            await asyncio.to_thread(forgetting.start)  # subscribed before serving
        ingest.start()
        # Triage's models load in about a second, the sign-in's dummy hash takes a moment:
        # now, rather than on the first message or the first sign-in of an unknown address.
        threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
        smtp = None
        if settings.smtp_port:
            from rapport.channels.email import smtp as smtp_listener

            smtp = smtp_listener.start(
                database, settings, host=settings.smtp_host, port=settings.smtp_port
            )
        worker = None
        if settings.worker_in_process:
            worker = WorkerThread(Worker(database, settings))
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            if smtp is not None:
                smtp.stop()
            ingest.stop()
            if forgetting is not None:
                forgetting.stop()
            await event_bus.stop()

    # The API docs are apidocs' pages (Swagger UI from the package, no CDN): FastAPI's own
    # load it from a CDN.
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        title="Rapport",
        version="1",
        summary="Omnichannel customer engagement: one customer, one timeline, one inbox.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.box = box_for(settings.secret_key.get_secret_value())
    app.state.principal_cache = PrincipalCache()
    app.state.login_limiter = RateLimiter(limit=20, window=300, redis_url=settings.redis_url)
    # Reset emails: a few per address and per client in 15 minutes, so nobody is mail-bombed.
    app.state.reset_limiter = RateLimiter(limit=5, window=900, redis_url=settings.redis_url)
    app.state.presence_limiter = presence.requests_limiter(settings.redis_url)
    app.state.ingest = ingest
    app.state.bus = event_bus
    apidocs.install(app)
    problems.install(app)
    # Inside the fast path: an API client's post of a message needs no cache header.
    app.add_middleware(NoStore)
    app.add_middleware(InboundFastPath)
    app.add_middleware(RequestGuard)  # before any route or the fast path reads a body
    app.add_middleware(ReadableErrors)  # the guard's refusals of the widget readable too
    app.add_middleware(MetricsMiddleware)  # outermost: it counts the fast path's answers too

    from rapport import ops
    from rapport.auth import views as auth_views
    from rapport.automation import views as automation_views
    from rapport.bot import views as bot_views
    from rapport.channels import views as channel_views
    from rapport.channels import webhooks
    from rapport.channels.webchat import views as webchat_views
    from rapport.conversations import merge_views as conversation_merge_views
    from rapport.conversations import views as conversation_views
    from rapport.customers import views as customer_views
    from rapport.events import views as event_views
    from rapport.jobs import views as job_views
    from rapport.kb import authoring as kb_authoring
    from rapport.kb import public as kb_public
    from rapport.kb import views as kb_views
    from rapport.notifications import views as notification_views
    from rapport.realtime import views as realtime_views
    from rapport.web import views as web_views
    from rapport.workspaces import views as workspace_views

    # What one chat visitor may send, and how many visitors one address may make.
    app.state.widget_limits = webchat_views.WidgetLimits(settings.redis_url)
    # What one reader's address may do on the public help center.
    app.state.help_limits = kb_public.HelpCenterLimits(settings.redis_url)
    for module in (
        ops,
        auth_views,
        workspace_views,
        channel_views,
        customer_views,
        conversation_views,
        realtime_views,
        web_views,
        automation_views,
        notification_views,
        webhooks,
        webchat_views,
        event_views,
        job_views,
    ):
        app.include_router(module.router)
    app.include_router(conversation_views.sla_router)
    app.include_router(conversation_views.canned_router)
    app.include_router(conversation_merge_views.router)
    app.include_router(kb_views.router)
    app.include_router(kb_public.router)
    app.include_router(kb_authoring.router)
    app.include_router(bot_views.router)
    app.include_router(conversation_views.labels_router)
    app.include_router(conversation_views.files_router)
    app.include_router(web_views.api_router)
    app.include_router(customer_views.merges_router)
    app.include_router(customer_views.files_router)
    app.include_router(customer_views.suggestions_router)
    app.include_router(customer_views.attributes_router)
    app.mount(
        "/static", StaticFiles(directory=Path(web_views.__file__).parent / "static"), name="static"
    )
    return app
