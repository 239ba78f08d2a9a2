"""Password reset by email over a real SMTP conversation: the link is single-use, expires,
is stored only hashed, never tells whether an address has an account, and signs out
every session of the account."""

import re
from datetime import timedelta
from email import message_from_bytes
from email.message import Message

from fastapi.testclient import TestClient
from sqlalchemy import event, select, update

from rapport.auth.models import PasswordReset
from rapport.config import Settings
from rapport.db import Database, utcnow
from rapport.jobs.models import Job
from rapport.jobs.worker import Worker
from tests.channels.email.test_email import Outbox
from tests.factories import PASSWORD, World

NEW_PASSWORD = "a brand new passphrase 42"


def deliver(database: Database, settings: Settings) -> None:
    Worker(database, settings).run_until_idle(max_jobs=20)


def mails(relay: Outbox) -> list[Message]:
    return [message_from_bytes(raw) for raw in relay.messages]


def link_token(mail: Message, base: str = "http://testserver") -> str:
    body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    found = re.search(re.escape(base) + r"/reset-password#([\w-]+)", body)
    assert found, body
    return found.group(1)


def test_a_forgotten_password_is_reset_through_the_emailed_link(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    # alice is signed in somewhere (a cookie session) when someone asks for a reset.
    assert client.post(
        "/api/v1/auth/login", json={"email": "alice@acme.test", "password": PASSWORD}
    ).is_success
    assert client.get("/api/v1/auth/me").status_code == 200

    r = client.post("/api/v1/auth/password-reset", json={"email": " Alice@ACME.test "})
    assert r.status_code == 202
    deliver(database, settings)
    [mail] = mails(relay)
    assert mail["To"] == "alice@acme.test"
    assert mail["Subject"] == "Reset your Rapport password"
    token = link_token(mail)
    # Stored hashed; the queued job carries it only encrypted.
    with database.session(write=False) as db:
        [row] = db.scalars(select(PasswordReset)).all()
        assert token not in row.token_hash
        assert all(token not in str(j.args) for j in db.scalars(select(Job)))

    r = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
    )
    assert r.status_code == 204, r.text
    # Every session ended, the old password is gone, the new one works.
    assert client.get("/api/v1/auth/me").status_code == 401
    old = client.post("/api/v1/auth/login", json={"email": "alice@acme.test", "password": PASSWORD})
    assert old.status_code == 401
    new = client.post(
        "/api/v1/auth/login", json={"email": "alice@acme.test", "password": NEW_PASSWORD}
    )
    assert new.status_code == 200
    # The link works once.
    again = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": "another one 123"}
    )
    assert again.status_code == 422


def test_the_answer_never_reveals_whether_an_account_exists(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    known = client.post("/api/v1/auth/password-reset", json={"email": "bob@acme.test"})
    unknown = client.post("/api/v1/auth/password-reset", json={"email": "nobody@acme.test"})
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    deliver(database, settings)
    assert [m["To"] for m in mails(relay)] == ["bob@acme.test"]


def test_a_reset_request_does_the_same_work_whether_an_account_exists(
    client: TestClient, world: World, database: Database
) -> None:
    # Only an account's request wrote (its link and its mail's job) and so committed
    # something: PostgreSQL waits for the disk at such a commit, which timed the answers
    # apart however alike they read.
    def statements(email: str) -> list[str]:
        seen: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            seen.append(statement)

        event.listen(database.engine, "before_cursor_execute", record)
        try:
            assert client.post("/api/v1/auth/password-reset", json={"email": email}).is_success
        finally:
            event.remove(database.engine, "before_cursor_execute", record)
        return seen

    assert statements("bob@acme.test") == statements("nobody@acme.test")


def test_an_expired_or_made_up_link_is_refused(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    client.post("/api/v1/auth/password-reset", json={"email": "bob@acme.test"})
    deliver(database, settings)
    token = link_token(mails(relay)[0])
    with database.session() as db:
        db.execute(update(PasswordReset).values(expires_at=utcnow() - timedelta(seconds=1)))
    body = {"token": token, "password": NEW_PASSWORD}
    r = client.post("/api/v1/auth/password-reset/confirm", json=body)
    assert r.status_code == 422 and "expired" in r.json()["detail"]
    fake = {"token": "x" * 43, "password": NEW_PASSWORD}
    assert client.post("/api/v1/auth/password-reset/confirm", json=fake).status_code == 422


def test_a_short_password_is_refused_and_the_link_still_works(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    client.post("/api/v1/auth/password-reset", json={"email": "bob@acme.test"})
    deliver(database, settings)
    token = link_token(mails(relay)[0])
    short = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": "short"}
    )
    assert short.status_code == 422
    ok = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
    )
    assert ok.status_code == 204


def test_a_newer_reset_spends_the_older_links(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    for _ in range(2):
        client.post("/api/v1/auth/password-reset", json={"email": "bob@acme.test"})
    deliver(database, settings)
    first, second = (link_token(m) for m in mails(relay))
    ok = {"token": second, "password": NEW_PASSWORD}
    assert client.post("/api/v1/auth/password-reset/confirm", json=ok).status_code == 204
    stale = {"token": first, "password": "yet another passphrase"}
    assert client.post("/api/v1/auth/password-reset/confirm", json=stale).status_code == 422


def test_reset_requests_are_rate_limited(client: TestClient, world: World) -> None:
    codes = [
        client.post("/api/v1/auth/password-reset", json={"email": "bob@acme.test"}).status_code
        for _ in range(6)
    ]
    assert codes == [202] * 5 + [429]
