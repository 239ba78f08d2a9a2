"""The agent pages read the database off the event loop: a page's queries ran on it, and
every other request and socket waited on them."""

import asyncio
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from rapport.db import Database
from tests.conftest import auth
from tests.factories import PASSWORD, World


def _on_the_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_no_page_queries_the_database_on_the_event_loop(
    client: TestClient, world: World, database: Database
) -> None:
    article = client.post(
        "/api/v1/kb/articles", json={"title": "Track an order"}, headers=auth(world.bob)
    ).json()
    chat = client.post(
        "/api/v1/inboxes",
        json={"name": "Chat", "channel": "webchat", "settings": {}},
        headers=auth(world.alice),
    ).json()
    r = client.post("/api/v1/auth/login", json={"email": "alice@acme.test", "password": PASSWORD})
    assert r.status_code == 200, r.text
    opened = world.acme.opened
    conv, customer = opened.conversation.id, opened.customer.id
    pages = [
        "/app/inbox?view=all",
        f"/app/conversations/{conv}",
        f"/app/conversations/{conv}/messages/{opened.message.id}/body",
        "/app/customers",
        "/app/customers/duplicates",
        f"/app/customers/{customer}",
        "/app/account",
        "/app/macros",
        "/app/notifications",
        "/app/settings",
        f"/app/inboxes/{chat['id']}/try",
        "/app/search?q=hi",
        "/app/kb",
        "/app/kb/articles/new",
        f"/app/kb/articles/{article['id']}",
    ]
    on_loop: list[str] = []
    path = ""

    def executing(*_: Any) -> None:
        if _on_the_loop():
            on_loop.append(path)

    event.listen(database.engine, "before_cursor_execute", executing)
    try:
        for path in pages:
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
    finally:
        event.remove(database.engine, "before_cursor_execute", executing)
    assert on_loop == []
