"""Sessions and lock-outs under attack: what a stolen password, cookie or token can still do."""

import time
from datetime import timedelta
from types import SimpleNamespace

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.auth import ratelimit, service
from rapport.auth.models import Role, User
from rapport.config import Settings
from rapport.db import Database
from rapport.privacy.models import AuditLog
from rapport.workspaces import service as workspaces
from tests.auth.test_login import _enrol, in_a_browser, later_code, login
from tests.conftest import auth, postgresql_only
from tests.factories import PASSWORD, World


def csrf(c: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": c.cookies["rapport_csrf"]}


def test_a_removed_members_session_comes_back_to_life_when_re_added(
    client: TestClient, world: World, database: Database
) -> None:
    # bob signs in on a shared computer (or his cookie is stolen); then he is removed.
    stolen = TestClient(client.app)
    assert login(stolen, "bob@acme.test").status_code == 200
    assert stolen.get("/api/v1/auth/me").status_code == 200
    bob_id = world.acme.users["bob"].id
    r = client.delete(f"/api/v1/members/{bob_id}", headers=auth(world.alice))
    assert r.status_code == 204
    assert stolen.get("/api/v1/auth/me").status_code == 401  # so far so good
    # Weeks later bob is added back (same person, same account).
    with database.session() as db:
        workspaces.add_member(
            db,
            workspace_id=world.acme.workspace.id,
            email="bob@acme.test",
            role=Role.agent,
            password=None,
            actor_role=Role.owner,
        )
    # remove_member revokes his API tokens "so they do not work again the day he is added
    # back" -- but the old browser session does exactly that:
    assert stolen.get("/api/v1/auth/me").status_code == 401


def test_turning_on_two_factor_ends_password_only_sessions(
    client: TestClient, world: World
) -> None:
    # An attacker who learnt bob's password signed in before bob turned on 2FA.
    attacker = TestClient(client.app)
    assert login(attacker, "bob@acme.test").status_code == 200
    me = TestClient(client.app)
    assert login(me, "bob@acme.test").status_code == 200
    # bob enrols (in his own browser), precisely to lock out password-only access.
    secret = me.post("/api/v1/auth/totp/enroll", headers=csrf(me)).json()["secret"]
    r = me.post(
        "/api/v1/auth/totp/activate",
        json={"code": pyotp.TOTP(secret).now(), "password": PASSWORD},
        headers=csrf(me),
    )
    assert r.status_code == 200, r.text
    # The attacker's session, which never passed a second factor, stays fully signed in
    # (14 days) and could mint an API token, which outlives it.
    tok = attacker.post(
        "/api/v1/tokens", json={"name": "x", "role": "agent"}, headers=csrf(attacker)
    )
    assert tok.status_code in (401, 403), tok.text


def test_wrong_codes_to_turn_two_factor_off_are_counted(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    _enrol(client, world.bob)
    codes = []
    for n in range(40):
        r = client.post(
            "/api/v1/auth/totp/disable", json={"code": f"{n:06d}"}, headers=auth(world.bob)
        )
        codes.append(r.status_code)
    with database.session(write=False) as db:
        user = db.scalar(select(User).where(User.email == "bob@acme.test"))
        assert user is not None
        failed, locked = user.failed_logins, user.locked_until
    # Login and password change: 20 per 5 minutes and lock-out after 10 wrong codes.
    assert 429 in codes or failed > 0 or locked is not None, (codes[-3:], failed, locked)


def test_lock_out_tells_which_addresses_have_accounts(client: TestClient, world: World) -> None:
    def probe(email: str) -> str:
        client.app.state.login_limiter.reset("ip:testclient")  # another address each time
        last = ""
        for _ in range(11):
            client.cookies.clear()
            last = login(client, email, "wrong password!").json()["type"]
        return last.rsplit("/", 1)[-1]

    # The 401s are worded alike on purpose (test_wrong_password_is_refused_with_a_problem_
    # document), yet 11 tries tell the two apart:
    assert probe("bob@acme.test") == probe("nobody@acme.test")


def test_a_leaked_api_token_cannot_make_another_that_outlives_its_revocation(
    client: TestClient, world: World
) -> None:
    # mallory found bob's token and made herself a second one; bob, told of the leak,
    # revoked the first and believed her gone.
    second = client.post(
        "/api/v1/tokens", json={"name": "backup", "role": "agent"}, headers=auth(world.bob)
    )
    assert second.status_code == 403, second.text
    # bob's own browser still makes them.
    browser, made = in_a_browser(client, world.bob)
    mine = browser.post("/api/v1/tokens", json={"name": "ci", "role": "agent"}, headers=made)
    assert mine.status_code == 201, mine.text


def test_a_browser_left_signed_in_cannot_turn_on_two_factor_without_the_password(
    client: TestClient, world: World
) -> None:
    # bob left his browser signed in; someone at it turns on two-factor with their own
    # phone: bob's sessions end and he can no longer sign in (a reset changes his password,
    # not the key), while they hold the recovery codes.
    left = TestClient(client.app)
    assert login(left, "bob@acme.test").status_code == 200
    secret = left.post("/api/v1/auth/totp/enroll", headers=csrf(left)).json()["secret"]
    guessed = left.post(
        "/api/v1/auth/totp/activate",
        json={"code": pyotp.TOTP(secret).now(), "password": "not bob's password"},
        headers=csrf(left),
    )
    assert guessed.status_code == 403, guessed.text
    assert guessed.json()["type"].endswith("/current-password-wrong")
    me = left.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["totp_enabled"] is False
    # bob himself, who knows it, turns it on.
    mine = left.post(
        "/api/v1/auth/totp/activate",
        json={"code": later_code(secret), "password": PASSWORD},
        headers=csrf(left),
    )
    assert mine.status_code == 200, mine.text


def test_a_leaked_api_token_cannot_turn_on_two_factor_with_its_holders_key(
    client: TestClient, world: World
) -> None:
    # bob's read-only token, left in a script, is found by mallory.
    maker, made = in_a_browser(client, world.bob)
    token = maker.post(
        "/api/v1/tokens", json={"name": "report", "role": "viewer"}, headers=made
    ).json()["token"]
    browser = TestClient(client.app)
    assert login(browser, "bob@acme.test").status_code == 200
    enrol = client.post("/api/v1/auth/totp/enroll", headers=auth(token))
    assert enrol.status_code == 403, enrol.text
    code = pyotp.TOTP(pyotp.random_base32()).now()
    activate = client.post(
        "/api/v1/auth/totp/activate",
        json={"code": code, "password": "bob's password, guessed"},
        headers=auth(token),
    )
    assert activate.status_code == 403, activate.text
    # bob still signs in with his password alone, and his browser stayed signed in.
    assert login(TestClient(client.app), "bob@acme.test").json()["mfa_required"] is False
    assert browser.get("/api/v1/auth/me").status_code == 200


def test_every_workspace_of_an_account_audits_its_two_factor_and_sign_outs(
    client: TestClient, world: World, database: Database
) -> None:
    # bob works for globex too: what he does to his account (two-factor on and off, sign
    # out everywhere) reaches his globex sessions as well, so globex's admins must see it,
    # as they see his password changes.
    with database.session() as db:
        workspaces.add_member(
            db,
            workspace_id=world.globex.workspace.id,
            email="bob@acme.test",
            role=Role.agent,
            password=None,
            actor_role=Role.owner,
        )
    secret, _ = _enrol(client, world.bob)
    off = client.post(
        "/api/v1/auth/totp/disable", json={"code": later_code(secret)}, headers=auth(world.bob)
    )
    assert off.status_code == 204, off.text
    assert client.post("/api/v1/auth/logout-all", headers=auth(world.bob)).status_code == 204
    with database.session(write=False) as db:
        logged = set(
            db.execute(
                select(AuditLog.workspace_id, AuditLog.action).where(
                    AuditLog.action.in_(("auth.totp_on", "auth.totp_off", "auth.logout_all"))
                )
            ).all()
        )
    assert logged == {
        (ws.workspace.id, action)
        for ws in (world.acme, world.globex)
        for action in ("auth.totp_on", "auth.totp_off", "auth.logout_all")
    }


def test_slow_guessing_does_not_tell_which_addresses_have_accounts(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nine wrong passwords, a pause longer than the lock-out's 15 minutes, two more, the
    # lock-out waited out, then eleven more: an account kept its count through the pause
    # and locked at the tenth, an address with no account had forgotten its nine.
    skipped = timedelta()
    real_now, real_monotonic = service.utcnow, time.monotonic
    monkeypatch.setattr(service, "utcnow", lambda: real_now() + skipped)
    monkeypatch.setattr(
        ratelimit,
        "time",
        SimpleNamespace(
            monotonic=lambda: real_monotonic() + skipped.total_seconds(), time=time.time
        ),
    )

    def probe(email: str) -> list[tuple[int, str, str | None]]:
        nonlocal skipped
        seen = []
        for tries in (9, 2, 11):
            client.app.state.login_limiter.reset("ip:testclient")
            client.app.state.login_limiter.reset(f"email:{email}")
            for _ in range(tries):
                r = login(client, email, "wrong password!")
                seen.append((r.status_code, r.json()["detail"], r.headers.get("retry-after")))
            skipped += timedelta(minutes=16)
        return seen

    assert probe("nobody@acme.test") == probe("bob@acme.test")


class Clock:
    """Rapport's clock moved on by ``skip``: the lock-out's (``service.utcnow``) and the
    login rate limits' (``ratelimit.time``) alike."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.skipped = timedelta()
        real_now, real_monotonic = service.utcnow, time.monotonic
        monkeypatch.setattr(service, "utcnow", lambda: real_now() + self.skipped)
        monkeypatch.setattr(
            ratelimit,
            "time",
            SimpleNamespace(
                monotonic=lambda: real_monotonic() + self.skipped.total_seconds(),
                time=lambda: time.time() + self.skipped.total_seconds(),
            ),
        )

    def skip(self, **delta: float) -> None:
        self.skipped += timedelta(**delta)


def test_typos_spread_over_months_never_lock_an_account_out(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wrong password a week, for three months: the count never lapsed, and the tenth
    # locked bob out (an address with no account likewise, since 0038).
    clock = Clock(monkeypatch)

    def weekly(email: str) -> list[int]:
        seen = []
        for _ in range(10):
            clock.skip(days=7)
            seen.append(login(client, email, "wrong password!").status_code)
        return seen

    assert weekly("bob@acme.test") == weekly("nobody@acme.test") == [401] * 10
    # At once after the tenth: neither is locked.
    assert login(client, "nobody@acme.test", "wrong password!").status_code == 401
    assert login(client, "bob@acme.test").status_code == 200


def test_wrong_passwords_each_within_the_lock_outs_length_of_the_last_still_lock(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The count lapses after 15 quiet minutes, not 15 minutes after it started: guesses
    # kept 14 minutes apart are all counted, and the tenth locks either address.
    clock = Clock(monkeypatch)

    def slow(email: str) -> list[int]:
        seen = []
        for _ in range(11):
            seen.append(login(client, email, "wrong password!").status_code)
            clock.skip(minutes=14)
        return seen

    assert slow("bob@acme.test") == slow("nobody@acme.test") == [401] * 10 + [429]


def test_counts_of_addresses_with_no_account_are_deleted_once_lapsed(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every address ever guessed at kept its row (by its hash) for good.
    from rapport.auth.models import LoginFailure
    from rapport.jobs import periodic
    from rapport.jobs.service import enqueue
    from rapport.jobs.worker import Worker

    clock = Clock(monkeypatch)

    def rows() -> set[str]:
        with database.session(write=False) as db:
            return set(db.scalars(select(LoginFailure.address_hash)))

    def prune() -> set[str]:
        with database.session() as db:
            enqueue(db, name="prune_login_failures")
        Worker(database, settings).run_until_idle(max_jobs=5)
        return rows()

    def wrong(email: str, times: int) -> str:
        for _ in range(times):
            login(client, email, "wrong password!")
        return service._address_hash(email)

    old = wrong("old@nowhere.test", 3)
    with database.session() as db:  # a count from before 0039, with no time kept
        db.add(LoginFailure(address_hash="0" * 64, failed_logins=4))
    assert rows() == {old, "0" * 64}
    # One with no time would start again at its next failure: nothing is lost with it.
    assert prune() == {old}
    clock.skip(minutes=10)
    fresh = wrong("fresh@nowhere.test", 3)
    clock.skip(minutes=6)
    locked = wrong("locked@nowhere.test", 10)
    assert prune() == {fresh, locked}  # old's count lapsed
    clock.skip(minutes=10)
    assert prune() == {locked}  # fresh's count lapsed, locked's lock has 5 minutes left
    assert login(client, "locked@nowhere.test").status_code == 429
    clock.skip(minutes=5)
    assert prune() == set()
    assert "prune_login_failures" in periodic.SCHEDULE


def test_ids_in_bodies_of_another_workspace_are_refused(client: TestClient, world: World) -> None:
    g = world.globex
    mallory = g.users["mallory"].id
    conv = world.acme.opened.conversation.id
    cust = world.acme.opened.customer.id
    h = auth(world.alice)
    results = {}
    results["assign user"] = client.post(
        f"/api/v1/conversations/{conv}/assign", json={"assignee_id": mallory}, headers=h
    ).status_code
    results["merge conv"] = client.post(
        f"/api/v1/conversations/{conv}/merge",
        json={"merged_id": g.opened.conversation.id},
        headers=h,
    ).status_code
    results["merge cust"] = client.post(
        f"/api/v1/customers/{cust}/merge", json={"merged_id": g.opened.customer.id}, headers=h
    ).status_code
    results["bulk"] = client.post(
        "/api/v1/conversations/bulk",
        json={"ids": [g.opened.conversation.id], "action": "resolve"},
        headers=h,
    ).status_code
    results["start"] = client.post(
        "/api/v1/conversations",
        json={"customer_id": g.opened.customer.id, "inbox_id": world.acme.inbox.id, "text": "x"},
        headers=h,
    ).status_code
    results["start inbox"] = client.post(
        "/api/v1/conversations",
        json={"customer_id": cust, "inbox_id": g.inbox.id, "text": "x"},
        headers=h,
    ).status_code
    results["team"] = client.post(
        "/api/v1/teams", json={"name": "t", "member_ids": [mallory]}, headers=h
    ).status_code
    bad = {k: v for k, v in results.items() if v < 400}
    assert not bad, results


@postgresql_only
def test_concurrent_wrong_passwords_are_all_counted_toward_the_lock_out(
    world: World, database: Database, settings: Settings
) -> None:
    # PostgreSQL runs logins side by side: each reads failed_logins, adds one in Python and
    # writes the sum back (a lost update), so a burst of wrong passwords never locks.
    import threading

    from rapport.auth import service

    n = settings.login_max_failures
    barrier = threading.Barrier(n, timeout=10)
    real = service.user_by_email

    def slow_lookup(db, email):  # type: ignore[no-untyped-def]
        user = real(db, email)
        barrier.wait()  # every attempt has read the count before any writes it
        return user

    service.user_by_email = slow_lookup  # type: ignore[assignment]
    outcomes: list[str] = []

    try:
        # as views.login: the failure is committed although the request fails
        def committed() -> None:
            db = database.write_session()
            try:
                service.check_password(
                    db,
                    email="bob@acme.test",
                    password="wrong password!",
                    max_failures=n,
                    lockout_minutes=15,
                )
            except service.LoginFailed:
                db.commit()
                outcomes.append("failed")
            finally:
                db.close()

        threads = [threading.Thread(target=committed) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        service.user_by_email = real  # type: ignore[assignment]
    assert outcomes == ["failed"] * n
    with database.session(write=False) as db:
        user = db.scalar(select(User).where(User.email == "bob@acme.test"))
        assert user is not None
        assert user.locked_until is not None, (
            f"{n} wrong passwords, failed_logins={user.failed_logins}"
        )


def test_guessing_the_code_to_turn_two_factor_off_locks_the_account(
    client: TestClient, world: World
) -> None:
    # Any token of the member reaches the route, a viewer's too: its code is the only guard.
    browser, made = in_a_browser(client, world.bob)
    viewer = browser.post(
        "/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=made
    ).json()["token"]
    secret, _ = _enrol(client, world.bob)
    right = later_code(secret)
    answers = []
    for n in range(12):
        wrong = f"{n:06d}" if f"{n:06d}" != right else "999999"
        r = client.post("/api/v1/auth/totp/disable", json={"code": wrong}, headers=auth(viewer))
        answers.append(r.status_code)
    assert answers[:10] == [401] * 10 and answers[10:] == [429, 429]
    # Locked: the right code changes nothing either, until the lock-out ends.
    r = client.post("/api/v1/auth/totp/disable", json={"code": right}, headers=auth(viewer))
    assert r.status_code == 429
    assert r.json()["type"].endswith("/account-locked")
    assert client.get("/api/v1/auth/me", headers=auth(world.bob)).json()["totp_enabled"] is True


def test_turning_off_two_factor_ends_other_sessions(client: TestClient, world: World) -> None:
    secret, recovery = _enrol(client, world.bob)
    other = TestClient(client.app)
    assert login(other, "bob@acme.test", totp_code=later_code(secret)).status_code == 200
    r = client.post(
        "/api/v1/auth/totp/disable", json={"code": recovery[0]}, headers=auth(world.bob)
    )
    assert r.status_code == 204, r.text
    assert other.get("/api/v1/auth/me").status_code == 401


def test_a_password_change_spends_pending_reset_links(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    from rapport.auth import reset, security
    from rapport.auth.models import PasswordReset
    from rapport.crypto import box_for

    box = box_for(settings.secret_key.get_secret_value())
    with database.session() as db:
        reset.request(db, email="bob@acme.test", minutes=30, box=box)
    with database.session() as db:
        row = db.scalar(select(PasswordReset))
        assert row is not None
        plain = security.new_session_token()  # stand-in: know the link's token
        row.token_hash = security.token_hash(plain)
    r = client.post(
        "/api/v1/auth/password",
        json={
            "current_password": "correct horse battery staple",
            "new_password": "brand new password 1",
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    again = client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": plain, "password": "attacker password 1"},
    )
    assert again.status_code >= 400, again.status_code


def test_a_member_blocked_by_the_2fa_rule_cannot_change_anything(
    client: TestClient, world: World
) -> None:
    client.patch(
        "/api/v1/workspace", json={"settings": {"require_2fa": True}}, headers=auth(world.alice)
    )
    assert client.get("/api/v1/conversations", headers=auth(world.bob)).status_code == 403
    r = client.patch("/api/v1/auth/me", json={"name": "Renamed"}, headers=auth(world.bob))
    assert r.status_code == 403, r.text


def test_an_ipv6_subscriber_gets_one_budget_for_all_the_addresses_of_their_network(
    client: TestClient, world: World
) -> None:
    # A provider gives a subscriber a /64: any of its 2^64 addresses is theirs to take.
    # Counted one by one, every limit by address was one new address away from none.
    guesses = iter(range(1000))

    def guess(host: str) -> int:
        from_there = TestClient(client.app, client=(host, 50000))
        body = {"email": f"nobody{next(guesses)}@acme.test", "password": "wrong guess"}
        return from_there.post("/api/v1/auth/login", json=body).status_code

    codes = [guess(f"2001:db8:1:2::{n:x}") for n in range(1, 22)]
    assert codes == [401] * 20 + [429]
    # Another subscriber's network, and an IPv4 address, have budgets of their own.
    assert guess("2001:db8:1:3::1") == 401
    assert guess("192.0.2.1") == 401
    # Written as IPv4 within IPv6, an IPv4 address is that address.
    assert [guess("::ffff:192.0.2.7") for _ in range(20)] == [401] * 20
    assert guess("192.0.2.7") == 429
