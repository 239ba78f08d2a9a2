"""A member's own account: renaming themself (seen at once by every workspace they are in)
and changing their password (proven as a login is, ending every other session)."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.auth.models import Role, User
from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.models import Job
from rapport.privacy.models import AuditLog
from rapport.workspaces import service as workspaces
from tests.auth.test_login import _enrol, later_code, login
from tests.auth.test_password_reset import deliver, mails
from tests.channels.email.test_email import Outbox
from tests.conftest import auth, published_events
from tests.factories import PASSWORD, World

NEW_PASSWORD = "a much longer passphrase 9"


def signed_in(client: TestClient, email: str) -> dict[str, str]:
    """A fresh browser of ``email``'s; the header its changes carry (the CSRF token)."""
    client.cookies.clear()
    r = login(client, email)
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def change(client: TestClient, headers: dict[str, str], **body: Any):  # type: ignore[no-untyped-def]
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD, **body}
    return client.post("/api/v1/auth/password", json=body, headers=headers)


def actions(database: Database, action: str) -> list[tuple[str, str | None]]:
    with database.session(write=False) as db:
        rows = db.execute(
            select(AuditLog.workspace_id, AuditLog.target_id).where(AuditLog.action == action)
        )
        return sorted((w, t) for w, t in rows)


def test_a_member_renames_themself_and_every_workspace_they_are_in_sees_it(
    client: TestClient, world: World, database: Database
) -> None:
    bob = world.acme.users["bob"]
    with database.session() as db:  # bob helps Globex too
        workspaces.add_member(
            db,
            workspace_id=world.globex.workspace.id,
            email="bob@acme.test",
            role=Role.agent,
            password=None,
            actor_role=Role.owner,
        )
    headers = signed_in(client, "bob@acme.test")
    assert client.get("/api/v1/auth/me").json()["name"] == "Bob"  # now cached

    with published_events() as published:
        r = client.patch("/api/v1/auth/me", json={"name": "  Robert Tables "}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Robert Tables"
    # The header of every page reads the principal: not the one cached before the rename.
    assert client.get("/api/v1/auth/me").json()["name"] == "Robert Tables"
    renamed = [e for e in published if e["type"] == "member.updated"]
    assert sorted(e["workspace_id"] for e in renamed) == sorted(
        [world.acme.workspace.id, world.globex.workspace.id]
    )
    assert {e["payload"]["name"] for e in renamed} == {"Robert Tables"}
    assert renamed[0]["payload"]["user_id"] == bob.id
    listed = client.get("/api/v1/members", headers=auth(world.mallory)).json()
    assert "Robert Tables" in [m["name"] for m in listed]
    assert actions(database, "member.rename") == sorted(
        [(world.acme.workspace.id, bob.id), (world.globex.workspace.id, bob.id)]
    )


def test_a_viewer_renames_themself_with_an_api_token(client: TestClient, world: World) -> None:
    r = client.patch("/api/v1/auth/me", json={"name": "Vic"}, headers=auth(world.victor))
    assert r.status_code == 200 and r.json()["name"] == "Vic"


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "Bob\nAdmin"},
        {"name": "Bob\x1b[31m"},  # a terminal escape, for whoever reads a log
        {"name": "Bob\u202enimda"},  # reads as "Bobadmin" reversed
        {"name": "Bob", "role": "owner"},
        {},
    ],
)
def test_a_name_is_refused_unless_printable_and_of_1_to_100_characters(
    client: TestClient, world: World, database: Database, body: dict[str, Any]
) -> None:
    r = client.patch("/api/v1/auth/me", json=body, headers=auth(world.bob))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"]
    with database.session(write=False) as db:
        assert db.get(User, world.acme.users["bob"].id).name == "Bob"  # type: ignore[union-attr]


def test_a_name_of_100_characters_and_any_script_is_kept(client: TestClient, world: World) -> None:
    for name in ("x" * 100, "Zoë Ñúñez-李 👩‍💻"):
        r = client.patch("/api/v1/auth/me", json={"name": name}, headers=auth(world.bob))
        assert r.status_code == 200 and r.json()["name"] == name, r.text


def test_changing_the_password_ends_every_other_session_and_keeps_this_one(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    other = TestClient(client.app)  # bob's other browser
    assert login(other, "bob@acme.test").status_code == 200
    headers = signed_in(client, "bob@acme.test")
    before = client.cookies["rapport_session"]

    r = change(client, headers)
    assert r.status_code == 200, r.text
    # This browser goes on, with a new session and CSRF token (whoever held the old
    # cookie holds nothing); the other one is signed out.
    assert client.cookies["rapport_session"] != before
    assert r.json()["csrf_token"] != headers["X-CSRF-Token"]
    assert client.get("/api/v1/auth/me").status_code == 200
    renewed = {"X-CSRF-Token": r.json()["csrf_token"]}
    assert client.patch("/api/v1/auth/me", json={"name": "B"}, headers=renewed).status_code == 200
    assert other.get("/api/v1/auth/me").status_code == 401
    stale = TestClient(client.app, cookies={"rapport_session": before})
    assert stale.get("/api/v1/auth/me").status_code == 401
    # API tokens are credentials of their own: they keep working.
    assert client.get("/api/v1/conversations", headers=auth(world.bob)).status_code == 200
    # The old password is gone, the new one signs in.
    assert login(TestClient(client.app), "bob@acme.test").status_code == 401
    assert login(TestClient(client.app), "bob@acme.test", NEW_PASSWORD).status_code == 200
    assert actions(database, "auth.password_change") == [(world.acme.workspace.id, None)]
    # The address hears of it, so a change its owner did not make is noticed.
    deliver(database, settings)
    [mail] = mails(relay)
    assert mail["To"] == "bob@acme.test"
    assert mail["Subject"] == "Your Rapport password was changed"
    body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "/forgot-password" in body and NEW_PASSWORD not in body


def test_a_wrong_current_password_changes_nothing_and_counts_toward_the_lock_out(
    client: TestClient, world: World, settings: Settings
) -> None:
    headers = signed_in(client, "bob@acme.test")
    for _ in range(settings.login_max_failures):
        r = change(client, headers, current_password="not my password")
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/current-password-wrong")
        assert r.json()["detail"] == "the current password is wrong"
    # Locked as after as many failed logins: the right password changes nothing now,
    # and a login is refused too. The session in hand is not ended by someone guessing.
    locked = change(client, headers)
    assert locked.status_code == 429 and locked.json()["type"].endswith("/account-locked")
    assert login(TestClient(client.app), "bob@acme.test").status_code == 429
    assert client.get("/api/v1/auth/me").status_code == 200


def test_password_changes_share_the_logins_rate_limit(client: TestClient, world: World) -> None:
    headers = signed_in(client, "bob@acme.test")  # a right password: no attempt spent
    codes = [change(client, headers, new_password="short").status_code for _ in range(21)]
    assert codes == [422] * 20 + [429]


def test_a_new_password_meets_the_same_policy_as_a_reset(
    client: TestClient, world: World, database: Database
) -> None:
    headers = signed_in(client, "bob@acme.test")
    short = change(client, headers, new_password="too short")
    assert short.status_code == 422
    assert short.json()["detail"] == "password must be at least 10 characters"
    extra = change(client, headers, password="whatever")
    assert extra.status_code == 422  # unknown fields are refused
    assert login(TestClient(client.app), "bob@acme.test").status_code == 200
    with database.session(write=False) as db:
        assert db.scalar(select(Job.id).where(Job.name == "password_changed_email")) is None


def test_an_account_with_two_factor_gives_its_code_too(client: TestClient, world: World) -> None:
    secret, recovery = _enrol(client, world.bob)
    first = login(client, "bob@acme.test", totp_code=later_code(secret))
    assert first.status_code == 200, first.text
    headers = {"X-CSRF-Token": first.json()["csrf_token"]}
    missing = change(client, headers)
    assert missing.status_code == 403 and missing.json()["type"].endswith("/totp-required")
    wrong = change(client, headers, totp_code="000000")
    assert wrong.status_code == 403 and wrong.json()["type"].endswith("/totp-invalid")
    assert login(TestClient(client.app), "bob@acme.test", NEW_PASSWORD).status_code == 401
    r = change(client, headers, totp_code=recovery[0])
    assert r.status_code == 200, r.text
    assert login(TestClient(client.app), "bob@acme.test", NEW_PASSWORD).json()["mfa_required"]


def test_without_a_mail_relay_the_change_queues_no_mail(
    client: TestClient, world: World, database: Database
) -> None:
    # Queued with nowhere to go, it would only end dead, saying no relay is set.
    assert change(client, auth(world.bob)).status_code == 200
    with database.session(write=False) as db:
        assert db.scalar(select(Job.id).where(Job.name == "password_changed_email")) is None
