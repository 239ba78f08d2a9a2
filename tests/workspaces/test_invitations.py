"""Invitations over a real SMTP conversation: a person joins a workspace only by accepting the
emailed link, the admin never sets their password or learns whether the address has an
account elsewhere, and the link is single-use, expires and can be withdrawn."""

import os
import re
import subprocess
import sys
from datetime import timedelta
from email.message import Message
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.auth import service as accounts
from rapport.auth.models import Invitation, Membership, Role
from rapport.config import Settings
from rapport.db import Database, utcnow
from rapport.jobs.models import Job
from rapport.privacy.models import AuditLog
from tests.auth.test_password_reset import deliver, mails
from tests.channels.email.test_email import Outbox
from tests.conftest import auth
from tests.factories import PASSWORD, World

NEW_PASSWORD = "a passphrase of my own 7"


def invite_token(mail: Message, base: str = "http://testserver") -> str:
    body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    found = re.search(re.escape(base) + r"/invite#([\w-]+)", body)
    assert found, body
    return found.group(1)


def invite(
    client: TestClient,
    database: Database,
    settings: Settings,
    relay: Outbox,
    admin: str,
    email: str,
    role: str = "agent",
) -> str:
    """Invite ``email`` as ``admin`` (an API token); the token of the link it was mailed."""
    r = client.post("/api/v1/members", json={"email": email, "role": role}, headers=auth(admin))
    assert r.status_code == 202, r.text
    deliver(database, settings)
    return invite_token([m for m in mails(relay) if m["To"] == email.lower()][-1])


def join(
    client: TestClient,
    database: Database,
    settings: Settings,
    relay: Outbox,
    admin: str,
    email: str,
    *,
    role: str = "agent",
    password: str = NEW_PASSWORD,
) -> dict[str, object]:
    """Invite ``email`` and accept with ``password``; the acceptance's answer."""
    token = invite(client, database, settings, relay, admin, email, role)
    r = client.post("/api/v1/invitations/accept", json={"token": token, "password": password})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_newcomer_joins_through_the_link_with_a_password_of_their_own(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    r = client.post(
        "/api/v1/members",
        json={"email": " Dana@ACME.test ", "name": "Dana", "role": "admin"},
        headers=auth(world.alice),
    )
    assert r.status_code == 202, r.text
    assert r.json()["email"] == "dana@acme.test" and r.json()["role"] == "admin"
    # Not a member, and no account, until she accepts.
    emails = [m["email"] for m in client.get("/api/v1/members", headers=auth(world.alice)).json()]
    assert "dana@acme.test" not in emails
    assert (
        client.post(
            "/api/v1/auth/login", json={"email": "dana@acme.test", "password": NEW_PASSWORD}
        ).status_code
        == 401
    )
    deliver(database, settings)
    [mail] = mails(relay)
    assert mail["To"] == "dana@acme.test" and mail["Subject"] == "Join Acme on Rapport"
    token = invite_token(mail)
    # Stored hashed; the queued job carries it only encrypted.
    with database.session(write=False) as db:
        [row] = db.scalars(select(Invitation)).all()
        assert token not in row.token_hash
        assert all(token not in str(j.args) for j in db.scalars(select(Job)))

    preview = client.post("/api/v1/invitations/preview", json={"token": token})
    assert preview.status_code == 200
    assert preview.json() | {"expires_at": None} == {
        "workspace": "Acme",
        "email": "dana@acme.test",
        "role": "admin",
        "expires_at": None,
        "account_exists": False,
    }
    r = client.post(
        "/api/v1/invitations/accept",
        json={"token": token, "password": NEW_PASSWORD, "name": ""},
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "workspace_id": world.acme.workspace.id,
        "workspace": "Acme",
        "email": "dana@acme.test",
        "role": "admin",
        "account_created": True,
    }
    login = client.post(
        "/api/v1/auth/login", json={"email": "dana@acme.test", "password": NEW_PASSWORD}
    )
    assert login.status_code == 200 and login.json()["role"] == "admin"
    assert login.json()["name"] == "Dana"  # the admin's name for her, as she left it blank
    # The link works once.
    again = client.post(
        "/api/v1/invitations/accept", json={"token": token, "password": NEW_PASSWORD}
    )
    assert again.status_code == 422 and again.headers["content-type"] == "application/problem+json"
    with database.session(write=False) as db:
        actions = set(db.scalars(select(AuditLog.action)))
    assert {"member.invite", "member.join"} <= actions


def test_an_existing_account_joins_only_with_its_own_password(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    # mallory (Globex) invites bob, who has an account with Acme.
    token = invite(client, database, settings, relay, world.mallory, "bob@acme.test", "viewer")
    preview = client.post("/api/v1/invitations/preview", json={"token": token}).json()
    assert preview["account_exists"] is True and preview["workspace"] == "Globex"
    # A new password does not take the account over, nor does a wrong one.
    r = client.post("/api/v1/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert (
        client.post(
            "/api/v1/auth/login", json={"email": "bob@acme.test", "password": NEW_PASSWORD}
        ).status_code
        == 401
    )
    r = client.post("/api/v1/invitations/accept", json={"token": token, "password": PASSWORD})
    assert r.status_code == 201 and r.json()["account_created"] is False
    r = client.post(
        "/api/v1/auth/login",
        json={"email": "bob@acme.test", "password": PASSWORD, "workspace": "Globex"},
    )
    assert r.json()["workspace_id"] == world.globex.workspace.id and r.json()["role"] == "viewer"


def test_the_admin_learns_nothing_about_accounts_elsewhere(
    client: TestClient, world: World, relay: Outbox
) -> None:
    # Before, a member was added outright: an address with an account anywhere was attached
    # to the admin's workspace without being asked, and one without needed a password, so
    # the answer told an admin of Globex which addresses had accounts at Acme.
    answers = []
    for email in ("bob@acme.test", "nobody@acme.test"):
        r = client.post(
            "/api/v1/members", json={"email": email, "role": "agent"}, headers=auth(world.mallory)
        )
        body = r.json()
        answers.append((r.status_code, sorted(body), body["role"], body["name"]))
    assert answers[0] == answers[1] and answers[0][0] == 202
    members = client.get("/api/v1/members", headers=auth(world.mallory)).json()
    assert [m["email"] for m in members] == ["mallory@globex.test"]


def test_an_admin_cannot_set_a_password_or_invite_above_their_role(
    client: TestClient, world: World, database: Database, relay: Outbox
) -> None:
    r = client.post(
        "/api/v1/members",
        json={"email": "eve@acme.test", "password": "chosen by the admin 1"},
        headers=auth(world.alice),
    )
    assert r.status_code == 422 and "password" in r.text
    with database.session() as db:
        db.execute(update(Membership).values(role="admin"))  # alice, an admin now
        alice = world.acme.users["alice"]
        admin, _ = accounts.create_token(
            db, user_id=alice.id, workspace_id=world.acme.workspace.id, name="t", role=Role.admin
        )
    r = client.post(
        "/api/v1/members", json={"email": "eve@acme.test", "role": "owner"}, headers=auth(admin)
    )
    assert r.status_code == 403
    r = client.post(
        "/api/v1/members", json={"email": "eve@acme.test", "role": "agent"}, headers=auth(world.bob)
    )
    assert r.status_code == 403
    r = client.post(
        "/api/v1/members",
        json={"email": "bob@acme.test", "role": "agent"},
        headers=auth(world.alice),
    )
    assert r.status_code == 409  # a member already: the admin can see that on the list


@pytest.mark.parametrize("name", ["x" * 101, "Dana\nAdmin", "Dana\x1b[31m", "Dana\u202enimda"])
def test_an_invitation_or_an_acceptance_with_a_name_a_member_could_not_have_is_refused(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    relay: Outbox,
    name: object,
) -> None:
    # Checked only for a member renaming themself: an invitation took 200 characters of
    # anything (a newline, a bidi override) and made them the new account's name.
    r = client.post(
        "/api/v1/members",
        json={"email": "dana@acme.test", "name": name},
        headers=auth(world.alice),
    )
    assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json")
    assert [e["loc"] for e in r.json()["errors"]] == [["body", "name"]]
    token = invite(client, database, settings, relay, world.alice, "dana@acme.test")
    r = client.post(
        "/api/v1/invitations/accept",
        json={"token": token, "password": NEW_PASSWORD, "name": name},
    )
    assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json")
    assert [e["loc"] for e in r.json()["errors"]] == [["body", "name"]]
    with database.session(write=False) as db:
        assert accounts.user_by_email(db, "dana@acme.test") is None  # the link still works


def test_an_invitation_name_is_trimmed_and_a_blank_one_is_none(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    for name, kept in (("  Dana  ", "Dana"), ("   ", ""), (None, "")):
        r = client.post(
            "/api/v1/members",
            json={"email": "dana@acme.test", "name": name},
            headers=auth(world.alice),
        )
        assert r.status_code == 202 and r.json()["name"] == kept, r.text


def test_an_expired_withdrawn_or_replaced_link_is_refused(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    first = invite(client, database, settings, relay, world.alice, "erin@acme.test")
    second = invite(client, database, settings, relay, world.alice, "erin@acme.test")
    body = {"token": first, "password": NEW_PASSWORD}
    r = client.post("/api/v1/invitations/accept", json=body)
    assert r.status_code == 422 and "ask for a new one" in r.json()["detail"]
    [pending] = client.get("/api/v1/invitations", headers=auth(world.alice)).json()
    assert pending["email"] == "erin@acme.test" and pending["expired"] is False
    with database.session() as db:
        db.execute(update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get("/api/v1/invitations", headers=auth(world.alice)).json()[0]["expired"]
    for path in ("/api/v1/invitations/preview", "/api/v1/invitations/accept"):
        r = client.post(path, json={"token": second, "password": NEW_PASSWORD})
        assert r.status_code == 422, (path, r.text)
    third = invite(client, database, settings, relay, world.alice, "erin@acme.test")
    # Another workspace cannot see or withdraw it; its own admin can.
    assert client.get("/api/v1/invitations", headers=auth(world.mallory)).json() == []
    path = f"/api/v1/invitations/{pending['id']}"
    assert client.delete(path, headers=auth(world.mallory)).status_code == 404
    assert client.delete(path, headers=auth(world.bob)).status_code == 403
    assert client.delete(path, headers=auth(world.alice)).status_code == 204
    r = client.post("/api/v1/invitations/accept", json={"token": third, "password": NEW_PASSWORD})
    assert r.status_code == 422


def test_a_withdrawn_invitation_is_not_mailed(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    r = client.post("/api/v1/members", json={"email": "finn@acme.test"}, headers=auth(world.alice))
    assert (
        client.delete(
            f"/api/v1/invitations/{r.json()['id']}", headers=auth(world.alice)
        ).status_code
        == 204
    )
    deliver(database, settings)
    assert mails(relay) == []


def test_without_a_mail_relay_the_operator_hands_the_link_over(
    client: TestClient, world: World, database: Database, settings: Settings, tmp_path: Path
) -> None:
    # No relay: an invitation emailed by nobody would leave the admin waiting for a join
    # that cannot come.
    r = client.post("/api/v1/members", json={"email": "gus@acme.test"}, headers=auth(world.alice))
    assert r.status_code == 409 and "rapport workspace invite" in r.json()["detail"]
    assert client.get("/api/v1/invitations", headers=auth(world.alice)).json() == []
    # The operator's command prints the link, and nothing is queued to mail it.
    env = {
        **os.environ,
        "RAPPORT_DATABASE_URL": settings.database_url,
        "RAPPORT_SECRET_KEY": settings.secret_key.get_secret_value(),
        "RAPPORT_PUBLIC_URL": "https://help.acme.test",
    }
    out = subprocess.run(
        [sys.executable, "-m", "rapport.cli", "workspace", "invite", "Acme"]
        + ["--email", "gus@acme.test", "--role", "viewer"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert out.startswith("https://help.acme.test/invite#"), out
    with database.session(write=False) as db:
        assert not db.scalars(select(Job).where(Job.name == "invitation_email")).all()
    token = out.split("#", 1)[1]
    r = client.post("/api/v1/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
    assert r.status_code == 201 and r.json()["role"] == "viewer"
