"""The app factory: the API docs need no CDN, and an app no longer used is freed."""

import gc
import weakref

from fastapi import FastAPI
from fastapi.testclient import TestClient

from rapport import bus
from rapport.app import create_app
from rapport.config import Settings
from rapport.db import Database


def test_the_api_docs_load_swagger_ui_from_rapport_itself(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "<title>Rapport - Swagger UI</title>" in page.text
    assert "url: '/openapi.json'" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert f'"/static-offline-docs/{asset}"' in page.text
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200
    assert "//cdn" not in page.text
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/redoc").status_code == 404


def test_an_app_no_longer_used_is_freed(settings: Settings, database: Database) -> None:
    # Each app ever made stayed alive, with its routes and their schemas: FastAPI's caches of
    # the endpoints it has classified (4,096 of them) held the docs page, a closure over its
    # app. A test process makes two apps a test; a full garbage collection of the heap they
    # grew held the interpreter lock for tens of seconds on a busy machine, a live server
    # answering nothing meanwhile and a write transaction keeping SQLite's lock past
    # another thread's 10 s wait.
    def used() -> "weakref.ref[FastAPI]":
        app = create_app(settings, database=database)
        with TestClient(app) as client:
            assert client.get("/docs").status_code == 200
            assert client.get("/login").status_code == 200
            assert client.get("/api/v1/auth/me").status_code == 401
        bus.set_bus(bus.LocalBus())  # its lifespan made the app's bus the process's
        return weakref.ref(app)

    gone = used()
    gc.collect()
    assert gone() is None
