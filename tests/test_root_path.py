"""Rapport behind a proxy's path prefix (``RAPPORT_PUBLIC_URL=https://host/rapport`` and
``uvicorn --root-path /rapport``): the ASGI server puts the root path in each request's
path, and every rule that knows a path by name must see it below the prefix."""

import base64
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.app import create_app
from rapport.auth.deps import CSRF_COOKIE, SESSION_COOKIE
from rapport.config import Settings
from rapport.db import Database
from rapport.guard import route_path
from tests.conftest import auth
from tests.factories import PASSWORD, World

PREFIX = "/rapport"


@pytest.fixture
def behind(database: Database, settings: Settings, world: World) -> Iterator[TestClient]:
    """The app as a proxy on chat.example.com passes it requests under /rapport (to the
    host it knows Rapport by, over https)."""
    prefixed = settings.model_copy(update={"public_url": f"https://chat.example.com{PREFIX}"})
    app = create_app(prefixed, database=database)
    with TestClient(app, root_path=PREFIX, base_url="https://rapport.internal") as client:
        yield client


def test_the_route_path_is_the_path_below_the_root_path() -> None:
    def scope(path: str, root: str) -> dict[str, str]:
        return {"path": path, "root_path": root}

    assert route_path(scope("/rapport/api/v1/auth/me", "/rapport")) == "/api/v1/auth/me"
    assert route_path(scope("/rapport", "/rapport")) == "/"
    assert route_path(scope("/api/v1/auth/me", "/rapport")) == "/api/v1/auth/me"
    assert route_path(scope("/rapportage/x", "/rapport")) == "/rapportage/x"
    assert route_path(scope("/api/v1/auth/me", "")) == "/api/v1/auth/me"


def test_a_member_who_must_enrol_can_enrol_behind_a_prefix(
    behind: TestClient, client: TestClient, world: World
) -> None:
    # The enrolment paths were compared with the whole path: behind a prefix none matched,
    # and a member of a workspace requiring two-factor could never enrol (403).
    r = client.patch(
        "/api/v1/workspace", json={"settings": {"require_2fa": True}}, headers=auth(world.alice)
    )
    assert r.status_code == 200
    signed_in = behind.post(
        f"{PREFIX}/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    csrf = {"X-CSRF-Token": signed_in.json()["csrf_token"]}
    r = behind.post(f"{PREFIX}/api/v1/auth/totp/enroll", headers=csrf)
    assert r.status_code == 200, r.text
    blocked = behind.get(f"{PREFIX}/api/v1/conversations", headers=auth(world.bob))
    assert blocked.status_code == 403 and blocked.json()["type"].endswith("/2fa-required")


def test_an_api_message_with_a_large_file_is_taken_behind_a_prefix(
    behind: TestClient, world: World
) -> None:
    # The inbound endpoint's body limit (files come base64 in the JSON) was known by path:
    # behind a prefix every body was held to the default 4 MB.
    data = base64.b64encode(b"%PDF" + b"\0" * 5_000_000).decode()
    r = behind.post(
        f"{PREFIX}/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "large-1",
            "text": "the scan you asked for",
            "from": {"email": "scan@example.org"},
            "attachments": [
                {"filename": "scan.pdf", "content_type": "application/pdf", "data_base64": data}
            ],
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text


def test_the_inbox_socket_takes_a_session_from_the_public_origin_behind_a_prefix(
    behind: TestClient,
) -> None:
    # A browser's Origin is a scheme and a host: it was compared with the public URL, path
    # and all, and the inbox's socket never opened for a signed-in agent behind a prefix.
    login = behind.post(
        f"{PREFIX}/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    session = f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"
    with behind.websocket_connect(
        f"wss://rapport.internal{PREFIX}/api/v1/stream",
        headers={"Origin": "https://chat.example.com", "Cookie": session},
    ) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_the_api_docs_load_their_files_behind_a_prefix(behind: TestClient) -> None:
    html = behind.get(f"{PREFIX}/docs").text
    files = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert files and all(f.startswith(f"{PREFIX}/") for f in files), files
    for f in files:
        assert behind.get(f).status_code == 200, f
    assert f"'{PREFIX}/openapi.json'" in html


def cookies_set(response: Any) -> dict[tuple[str, str], str]:
    """Each cookie a response sets or clears, by name and path: its value ("" cleared)."""
    out = {}
    for header in response.headers.get_list("set-cookie"):
        name, value = header.split(";", 1)[0].split("=", 1)
        path = re.search(r"(?i);\s*path=([^;]*)", header)
        cleared = re.search(r"(?i)max-age=0\b", header) is not None
        out[(name, path.group(1) if path else "")] = "" if cleared else value.strip('"')
    return out


def test_cookies_live_on_the_prefix_behind_a_proxy(behind: TestClient) -> None:
    # Cookies were set on "/": a browser sent Rapport's session to every other app of the
    # host (https://example.com/wiki/ got it), and Rapport's CSRF cookie to their scripts.
    login = behind.post(
        f"{PREFIX}/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    set_ = cookies_set(login)
    assert set_[(SESSION_COOKIE, PREFIX)] and set_[(CSRF_COOKIE, PREFIX)]
    # Those a browser kept from before, on "/", go: read after the new ones, they won.
    assert set_[(SESSION_COOKIE, "/")] == set_[(CSRF_COOKIE, "/")] == ""
    assert behind.get(f"{PREFIX}/api/v1/auth/me").status_code == 200
    csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
    out = behind.post(f"{PREFIX}/api/v1/auth/logout", headers=csrf)
    assert out.status_code == 204
    assert cookies_set(out) == {(SESSION_COOKIE, PREFIX): "", (CSRF_COOKIE, PREFIX): ""}
