"""Logins, sessions, CSRF, lock-out, two-factor authentication and roles."""

import time

import pyotp
import pytest
import segno
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from rapport.auth import ratelimit, security
from rapport.auth.service import audit_lockout
from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.models import Job
from rapport.jobs.registry import JobContext
from rapport.jobs.worker import Worker
from rapport.privacy.models import AuditLog
from tests.conftest import auth, postgresql_only, record_write_lock, sqlite_only
from tests.factories import PASSWORD, World


def login(client: TestClient, email: str, password: str = PASSWORD, **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/auth/login", json={"email": email, "password": password, **extra})


def test_login_sets_an_httponly_lax_session_cookie(client: TestClient, world: World) -> None:
    r = login(client, "alice@acme.test")
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "owner" and r.json()["mfa_required"] is False
    cookie = r.headers["set-cookie"]
    assert "rapport_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    me = client.get("/api/v1/auth/me").json()
    assert me["email"] == "alice@acme.test" and me["via"] == "session"


def test_cookie_session_needs_the_csrf_token_to_change_anything(
    client: TestClient, world: World
) -> None:
    csrf = login(client, "bob@acme.test").json()["csrf_token"]
    conv = world.acme.opened.conversation.id
    refused = client.post(f"/api/v1/conversations/{conv}/notes", json={"text": "x"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    wrong = client.post(
        f"/api/v1/conversations/{conv}/notes", json={"text": "x"}, headers={"X-CSRF-Token": "nope"}
    )
    assert wrong.status_code == 403
    ok = client.post(
        f"/api/v1/conversations/{conv}/notes", json={"text": "x"}, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status_code == 201


def test_wrong_password_is_refused_with_a_problem_document(
    client: TestClient, world: World
) -> None:
    r = login(client, "alice@acme.test", "not the password")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/login-failed")
    unknown = login(client, "nobody@acme.test")
    assert unknown.status_code == 401 and unknown.json()["detail"] == r.json()["detail"]


def test_account_locks_after_too_many_failures(client: TestClient, world: World) -> None:
    for _ in range(10):
        assert login(client, "bob@acme.test", "wrong password!").status_code == 401
    locked = login(client, "bob@acme.test")
    assert locked.status_code == 429 and locked.json()["type"].endswith("/account-locked")
    assert locked.headers["retry-after"] == str(15 * 60)  # when to try again
    assert "try again in 15 minutes" in locked.json()["detail"]


def test_a_locked_account_is_told_what_is_left_of_its_lock(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retry-After and the detail said the lock's whole length (15 minutes) at any moment of
    # it: ten minutes in, five were left.
    from datetime import timedelta

    from rapport.auth import service

    for _ in range(10):
        assert login(client, "bob@acme.test", "wrong password!").status_code == 401
    real_now = service.utcnow
    monkeypatch.setattr(service, "utcnow", lambda: real_now() + timedelta(minutes=10))
    locked = login(client, "bob@acme.test")
    assert locked.status_code == 429 and locked.headers["retry-after"] == "300"
    assert locked.json()["detail"] == (
        "too many failed logins: try again in 5 minutes or reset the password"
    )


def test_a_rate_limited_login_says_when_the_budget_comes_back(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retry-After said the whole window (300 s) though the address's budget slides: one
    # attempt comes back when its oldest counted one is 300 s old.
    clock = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    for n in range(20):  # the address's budget, each guess at another account
        assert login(client, f"nobody{n}@acme.test").status_code == 401
        clock[0] += 10
    limited = login(client, "nobody@acme.test")
    assert limited.status_code == 429 and limited.json()["type"].endswith("/rate-limited")
    assert limited.headers["retry-after"] == "100"  # the first guess, at 1000, leaves at 1300
    # And so does the detail, which said "wait a few minutes" whatever the wait.
    assert limited.json()["detail"] == "too many login attempts: try again in 100 seconds"
    clock[0] += 99.5
    last = login(client, "nobody@acme.test")
    assert last.headers["retry-after"] == "1"  # never 0
    assert last.json()["detail"] == "too many login attempts: try again in 1 second"
    clock[0] += 0.5
    assert login(client, "nobody@acme.test").status_code == 401


def test_a_lock_out_is_in_the_audit_log(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Ten wrong passwords locked bob out and left no trace: his admins never knew that
    # someone was guessing.
    for _ in range(10):
        assert login(client, "bob@acme.test", "wrong password!").status_code == 401

    def locked() -> list[tuple[object, ...]]:
        with database.session(write=False) as db:
            rows = db.execute(
                select(
                    AuditLog.workspace_id, AuditLog.actor, AuditLog.target_id, AuditLog.data
                ).where(AuditLog.action == "auth.locked")
            ).all()
        return [tuple(r) for r in rows]

    # Written by the job the locking request queued (``audit_lockout``), once, however
    # often it runs (again after a crash).
    with database.session(write=False) as db:
        [queued] = db.scalars(select(Job).where(Job.name == "audit_lockout")).all()
        args = dict(queued.args)
    Worker(database, settings).run_until_idle()
    bob = world.acme.users["bob"].id
    assert locked() == [(world.acme.workspace.id, "system", bob, {"failures": 10, "minutes": 15})]
    ctx = JobContext(
        database, settings, job_id="again", attempt=2, workspace_id=None, max_attempts=5
    )
    audit_lockout(ctx, **args)
    assert len(locked()) == 1


def test_locking_an_account_costs_the_request_what_locking_an_unknown_address_does(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The lock-out's audit was written by the request that locked an account, an entry in
    # each of its workspaces after reading them, and nothing for an address with no
    # account: that request alone took longer, and said the address had an account.
    def locking(email: str) -> list[str]:
        for _ in range(9):
            assert login(client, email, "wrong password!").status_code == 401
        seen: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            seen.append(statement)

        event.listen(database.engine, "before_cursor_execute", record)
        try:
            assert login(client, email, "wrong password!").status_code == 401
        finally:
            event.remove(database.engine, "before_cursor_execute", record)
        # From the count on (an address with no account looks up its lock first, where an
        # account's is on the row already read): what each row written is, not its table.
        writes = seen[next(i for i, s in enumerate(seen) if s.startswith(("UPDATE", "INSERT"))) :]
        counts = ("INSERT INTO login_failures", "UPDATE login_failures", "UPDATE users")
        return ["the count" if s.startswith(counts) else s for s in writes]

    bob, nobody = locking("bob@acme.test"), locking("nobody@acme.test")
    assert bob == nobody
    assert len(bob) == 3 and bob[-1].startswith("INSERT INTO jobs")
    Worker(database, settings).run_until_idle()
    with database.session(write=False) as db:
        audited = db.scalars(
            select(AuditLog.target_id).where(AuditLog.action == "auth.locked")
        ).all()
        assert audited == [world.acme.users["bob"].id]
        assert db.scalars(select(Job).where(Job.name == "audit_lockout")).all() == []


def test_login_attempts_are_rate_limited_per_address(client: TestClient, world: World) -> None:
    codes = [login(client, f"user{i}@nowhere.test", "whatever-pass").status_code for i in range(25)]
    assert codes[:20] == [401] * 20
    assert set(codes[20:]) == {429}
    assert login(client, "alice@acme.test").status_code == 429  # right, but over the budget


def test_sign_ins_with_the_right_password_spend_no_budget(client: TestClient, world: World) -> None:
    # An office behind one address: its 21st sign-in of the shift was refused (429), the
    # successful ones counted as attempts.
    for _ in range(30):
        assert login(client, "bob@acme.test").status_code == 200
    for i in range(19):
        assert login(client, f"user{i}@nowhere.test", "whatever-pass").status_code == 401
    assert login(client, "alice@acme.test").status_code == 200  # failures still count...
    codes = {login(client, f"more{i}@nowhere.test", "whatever").status_code for i in range(2)}
    assert codes == {401, 429}  # ... to the 20th


def later_code(secret: str, steps: int = 1) -> str:
    """The code of a step after the current one: a code is accepted once (the current one
    went to the activation), and a step either side of now is accepted (clocks drift)."""
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps))


def in_a_browser(client: TestClient, token: str) -> tuple[TestClient, dict[str, str]]:
    """A browser of its own signed in as the member holding ``token`` (two-factor is turned
    on from a browser, not with a token), and the headers its changes send."""
    email = client.get("/api/v1/auth/me", headers=auth(token)).json()["email"]
    browser = TestClient(client.app, base_url=str(client.base_url))
    r = login(browser, email)
    assert r.status_code == 200, r.text
    return browser, {"X-CSRF-Token": r.json()["csrf_token"]}


def _enrol(client: TestClient, token: str) -> tuple[str, list[str]]:
    browser, csrf = in_a_browser(client, token)
    secret = browser.post("/api/v1/auth/totp/enroll", headers=csrf).json()["secret"]
    r = browser.post(
        "/api/v1/auth/totp/activate",
        json={"code": pyotp.TOTP(secret).now(), "password": PASSWORD},
        headers=csrf,
    )
    assert r.status_code == 200, r.text
    return secret, r.json()["recovery_codes"]


def test_two_factor_login_refuses_a_wrong_code_and_accepts_the_right_one(
    client: TestClient, world: World
) -> None:
    secret, _ = _enrol(client, world.bob)
    first = login(client, "bob@acme.test")
    assert first.json()["mfa_required"] is True
    # Half-signed-in: nothing but finishing the login is allowed.
    assert client.get("/api/v1/conversations").status_code == 401
    csrf = {"X-CSRF-Token": first.json()["csrf_token"]}
    wrong = client.post("/api/v1/auth/login/totp", json={"code": "000000"}, headers=csrf)
    assert wrong.status_code == 401 and wrong.json()["type"].endswith("/totp-invalid")
    assert client.get("/api/v1/conversations").status_code == 401
    half = client.cookies["rapport_session"]
    right = client.post("/api/v1/auth/login/totp", json={"code": later_code(secret)}, headers=csrf)
    assert right.status_code == 200 and right.json()["mfa_passed"] is True
    assert client.get("/api/v1/conversations").status_code == 200
    # A new session, not the half-signed-in one made whole: whoever knew the first cookie
    # (or its CSRF token) holds nothing.
    assert client.cookies["rapport_session"] != half
    assert right.json()["csrf_token"] != first.json()["csrf_token"]
    other = TestClient(client.app, cookies={"rapport_session": half})
    assert other.get("/api/v1/conversations").status_code == 401


def test_a_totp_code_is_good_once(client: TestClient, world: World) -> None:
    secret, _ = _enrol(client, world.bob)
    code = later_code(secret)
    assert login(client, "bob@acme.test", totp_code=code).status_code == 200
    client.cookies.clear()
    again = login(client, "bob@acme.test", totp_code=code)  # seen over a shoulder, replayed
    assert again.status_code == 401 and again.json()["type"].endswith("/totp-invalid")
    client.cookies.clear()
    first = login(client, "bob@acme.test")
    csrf = {"X-CSRF-Token": first.json()["csrf_token"]}
    replayed = client.post("/api/v1/auth/login/totp", json={"code": code}, headers=csrf)
    assert replayed.status_code == 401


def test_wrong_codes_lock_the_account_and_a_locked_one_cannot_finish(
    client: TestClient, world: World, settings: Settings
) -> None:
    # The right password used to clear the failures before a wrong code was counted, so
    # wrong codes never locked; and the second step never looked at the lock.
    secret, _ = _enrol(client, world.bob)
    first = login(client, "bob@acme.test")
    csrf = {"X-CSRF-Token": first.json()["csrf_token"]}
    for n in range(settings.login_max_failures):
        client.cookies.clear()
        wrong = login(client, "bob@acme.test", totp_code=f"{n:06d}")
        assert wrong.status_code in (401, 429), wrong.text
    client.cookies.set("rapport_session", first.cookies["rapport_session"])
    r = client.post("/api/v1/auth/login/totp", json={"code": later_code(secret)}, headers=csrf)
    assert r.status_code == 429 and r.json()["type"].endswith("/account-locked"), r.text


def test_a_password_alone_cannot_sign_out_everywhere(client: TestClient, world: World) -> None:
    _enrol(client, world.bob)
    half = login(client, "bob@acme.test")
    csrf = {"X-CSRF-Token": half.json()["csrf_token"]}
    for path in ("/api/v1/auth/logout-all", "/api/v1/auth/totp/disable"):
        r = client.post(path, json={"code": "000000"}, headers=csrf)
        assert r.status_code == 401, (path, r.text)
    assert client.get("/api/v1/auth/me").json()["mfa_passed"] is False


def test_a_wrong_totp_code_in_the_login_request_is_refused(
    client: TestClient, world: World
) -> None:
    _enrol(client, world.bob)
    r = login(client, "bob@acme.test", totp_code="123456")
    assert r.status_code == 401 and r.json()["type"].endswith("/totp-invalid")
    assert "set-cookie" not in r.headers


def test_a_totp_code_of_non_ascii_digits_is_a_wrong_code(client: TestClient, world: World) -> None:
    # str.isdigit() takes these for digits; compared as text with ours, they raised (a 500).
    _enrol(client, world.bob)
    for code in ("١٢٣٤٥٦", "²³⁴⁵⁶⁷"):
        client.cookies.clear()
        r = login(client, "bob@acme.test", totp_code=code)
        assert r.status_code == 401 and r.json()["type"].endswith("/totp-invalid"), code


def test_activation_with_a_wrong_code_leaves_two_factor_off(
    client: TestClient, world: World
) -> None:
    browser, csrf = in_a_browser(client, world.bob)
    browser.post("/api/v1/auth/totp/enroll", headers=csrf)
    r = browser.post(
        "/api/v1/auth/totp/activate", json={"code": "000000", "password": PASSWORD}, headers=csrf
    )
    assert r.status_code == 401
    assert client.get("/api/v1/auth/me", headers=auth(world.bob)).json()["totp_enabled"] is False


def test_a_recovery_code_works_once(client: TestClient, world: World) -> None:
    _, codes = _enrol(client, world.bob)
    assert login(client, "bob@acme.test", totp_code=codes[0]).json()["mfa_passed"] is True
    client.cookies.clear()
    again = login(client, "bob@acme.test", totp_code=codes[0])
    assert again.status_code == 401


@postgresql_only
def test_one_recovery_code_spent_twice_at_once_signs_in_once(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # PostgreSQL runs both checks side by side: each read the code as unused, and both
    # signed in. The second now waits for the first and reads the code gone.
    import threading

    from sqlalchemy import select

    from rapport.auth import service
    from rapport.auth.models import User
    from rapport.crypto import box_for

    _, codes = _enrol(client, world.bob)
    box = box_for(settings.secret_key.get_secret_value())
    first_checked, first_may_commit = threading.Event(), threading.Event()
    results: list[bool] = []

    def spend(wait: bool) -> None:
        with database.session() as db:
            user = db.scalar(select(User).where(User.email == "bob@acme.test"))
            assert user is not None
            results.append(service.verify_second_factor(db, user=user, box=box, code=codes[0]))
            if wait:
                first_checked.set()
                assert first_may_commit.wait(10)

    first = threading.Thread(target=spend, args=(True,))
    first.start()
    assert first_checked.wait(10)
    second = threading.Thread(target=spend, args=(False,))
    second.start()
    second.join(0.5)  # it waits on the first's lock meanwhile
    first_may_commit.set()
    first.join(10)
    second.join(10)
    assert results == [True, False]


def test_owner_can_require_two_factor_for_the_workspace(client: TestClient, world: World) -> None:
    r = client.patch(
        "/api/v1/workspace", json={"settings": {"require_2fa": True}}, headers=auth(world.bob)
    )
    assert r.status_code == 403
    r = client.patch(
        "/api/v1/workspace", json={"settings": {"require_2fa": True}}, headers=auth(world.alice)
    )
    assert r.status_code == 200
    blocked = client.get("/api/v1/conversations", headers=auth(world.bob))
    assert blocked.status_code == 403 and blocked.json()["type"].endswith("/2fa-required")
    _enrol(client, world.bob)
    assert client.get("/api/v1/conversations", headers=auth(world.bob)).status_code == 200


def test_sign_out_everywhere_ends_every_session(client: TestClient, world: World) -> None:
    other = TestClient(client.app)
    login(client, "bob@acme.test")
    login(other, "bob@acme.test")
    assert other.get("/api/v1/auth/me").status_code == 200
    r = client.post(
        "/api/v1/auth/logout-all", headers={"X-CSRF-Token": client.cookies["rapport_csrf"]}
    )
    assert r.status_code == 204
    assert other.get("/api/v1/auth/me").status_code == 401
    # This browser's cookies go, as a sign-out's do: the CSRF cookie was kept.
    assert client.cookies.get("rapport_session") is None
    assert client.cookies.get("rapport_csrf") is None


def test_a_viewer_can_read_but_cannot_reply(client: TestClient, world: World) -> None:
    conv = world.acme.opened.conversation.id
    assert (
        client.get(f"/api/v1/conversations/{conv}", headers=auth(world.victor)).status_code == 200
    )
    r = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "hi"}, headers=auth(world.victor)
    )
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden")
    r = client.post(
        f"/api/v1/conversations/{conv}/notes", json={"text": "hi"}, headers=auth(world.victor)
    )
    assert r.status_code == 403


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_an_agent_cannot_mint_a_token_above_their_role(
    client: TestClient, world: World, role: str
) -> None:
    browser, csrf = in_a_browser(client, world.bob)
    r = browser.post("/api/v1/tokens", json={"role": role}, headers=csrf)
    assert r.status_code == 403 and "role above your own" in r.json()["detail"]


def test_a_revoked_token_stops_working(client: TestClient, world: World) -> None:
    browser, csrf = in_a_browser(client, world.bob)
    created = browser.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=csrf)
    token = created.json()["token"]
    assert client.get("/api/v1/conversations", headers=auth(token)).status_code == 200
    client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=auth(world.bob))
    assert client.get("/api/v1/conversations", headers=auth(token)).status_code == 401


def test_requests_without_credentials_get_401_problem(client: TestClient, world: World) -> None:
    r = client.get("/api/v1/customers")
    assert r.status_code == 401
    assert r.json()["status"] == 401 and r.headers["www-authenticate"] == "Bearer"


@sqlite_only
@pytest.mark.parametrize("password", [PASSWORD, "wrong-password-1"])
def test_a_password_is_checked_with_no_write_lock_held(
    client: TestClient,
    world: World,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    password: str,
) -> None:
    # argon2 costs ~90 ms by design. Inside the login's write transaction each attempt (a
    # credential-stuffing run makes thousands) held SQLite's one write lock that long, and
    # every other writer, ingest included, queued behind them.
    held = record_write_lock(monkeypatch, security, "verify_password", database)
    r = login(client, "alice@acme.test", password)
    assert r.status_code == (200 if password == PASSWORD else 401), r.text
    assert held == [False]


def test_enrolment_gives_a_qr_code_of_the_key_for_the_app_to_scan(
    client: TestClient, world: World
) -> None:
    # Only the key as text was shown: typed by hand into a phone, 32 characters.
    browser, csrf = in_a_browser(client, world.bob)
    out = browser.post("/api/v1/auth/totp/enroll", headers=csrf).json()
    assert out["otpauth_uri"].startswith("otpauth://totp/") and out["secret"] in out["otpauth_uri"]
    assert out["qr_code"].startswith("data:image/svg+xml;")
    # What it draws is the URI itself, as segno draws it, drawn by Rapport (offline).
    drawn = segno.make(out["otpauth_uri"], error="m").svg_data_uri(scale=5, border=2)
    assert out["qr_code"] == drawn
