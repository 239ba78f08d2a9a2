"""An owner or admin resets the two-factor authentication of a member who lost their phone
and recovery codes: within the workspace, below their role, never their own, and only for
an account no other workspace shares."""

import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from rapport.auth.models import Role, User
from rapport.cli import app as cli_app
from rapport.config import Settings
from rapport.crypto import box_for
from rapport.db import Database
from rapport.privacy.models import AuditLog
from rapport.workspaces import invitations
from rapport.workspaces import service as workspaces
from tests.auth.test_login import _enrol, in_a_browser, later_code, login
from tests.auth.test_password_reset import deliver, mails
from tests.channels.email.test_email import Outbox
from tests.conftest import auth
from tests.factories import PASSWORD, World, ada_the_admin


def csrf_of(browser: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": browser.cookies["rapport_csrf"]}


def signed_in(client: TestClient, email: str, secret: str) -> tuple[TestClient, dict[str, str]]:
    """A browser signed in as this member with their password and second factor."""
    browser = TestClient(client.app, base_url=str(client.base_url))
    assert login(browser, email).json()["mfa_required"] is True
    second = browser.post(
        "/api/v1/auth/login/totp", json={"code": later_code(secret)}, headers=csrf_of(browser)
    )
    assert second.status_code == 200, second.text
    return browser, csrf_of(browser)


def reset(
    browser: TestClient, csrf: dict[str, str], user_id: str, password: str = PASSWORD
) -> tuple[int, dict[str, str]]:
    """The reset, with the acting member's password (everyone's in the tests' world)."""
    r = browser.post(
        f"/api/v1/members/{user_id}/totp/reset", json={"password": password}, headers=csrf
    )
    return r.status_code, (r.json() if r.content else {})


def test_an_owner_resets_a_members_two_factor_and_ends_their_sessions(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    secret, _ = _enrol(client, world.bob)
    bob = world.acme.users["bob"].id
    # bob's browser, signed in with his second factor (the phone he is about to lose).
    his, _ = signed_in(client, "bob@acme.test", secret)
    assert his.get("/api/v1/auth/me").status_code == 200

    alice, csrf = in_a_browser(client, world.alice)
    assert reset(alice, csrf, bob) == (204, {})
    assert his.get("/api/v1/auth/me").status_code == 401  # every session of his ended
    # He signs in with his password alone, and may enrol again.
    again = TestClient(client.app, base_url=str(client.base_url))
    r = login(again, "bob@acme.test")
    assert r.status_code == 200 and r.json()["mfa_required"] is False
    members = client.get("/api/v1/members", headers=auth(world.alice)).json()
    assert next(m for m in members if m["user_id"] == bob)["totp_enabled"] is False
    with database.session(write=False) as db:
        entry = db.scalars(select(AuditLog).where(AuditLog.action == "member.totp_reset")).one()
        assert entry.workspace_id == world.acme.workspace.id
        assert (entry.target_id, entry.actor_user_id) == (bob, world.acme.users["alice"].id)
        user = db.get(User, bob)
        assert user is not None and user.totp_secret is None and user.recovery_codes == []
    # bob's address hears of it, and who did it: a reset he did not ask for is noticed.
    deliver(database, settings)
    [mail] = mails(relay)
    assert mail["To"] == "bob@acme.test" and "turned off" in mail["Subject"]
    assert "Alice" in mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    # Nothing left to reset now.
    status, problem = reset(alice, csrf, bob)
    assert status == 409 and "no two-factor" in problem["detail"]


def test_who_may_reset_whose_two_factor(
    client: TestClient, world: World, database: Database
) -> None:
    ada, ada_token = ada_the_admin(database, world)
    _enrol(client, world.alice)
    _enrol(client, world.bob)
    ada_secret, _ = _enrol(client, ada_token)
    alice, bob = world.acme.users["alice"].id, world.acme.users["bob"].id
    # An admin cannot reset an owner's, nor her own this way (her account page does it).
    admin, csrf = signed_in(client, "ada@acme.test", ada_secret)
    assert reset(admin, csrf, alice)[0] == 403
    assert reset(admin, csrf, ada)[0] == 403
    # A viewer cannot reset anyone's; nor can an API token, even an owner's.
    viewer, viewer_csrf = in_a_browser(client, world.victor)
    assert reset(viewer, viewer_csrf, bob)[0] == 403
    for body in ({"password": PASSWORD}, None):  # refused before its body is read
        r = client.post(f"/api/v1/members/{bob}/totp/reset", json=body, headers=auth(world.alice))
        assert r.status_code == 403 and "browser" in r.json()["detail"]
    # Another workspace's owner finds no such member.
    other, other_csrf = in_a_browser(client, world.mallory)
    assert reset(other, other_csrf, bob)[0] == 404
    with database.session(write=False) as db:
        for user_id in (alice, ada, bob):
            user = db.get(User, user_id)
            assert user is not None and user.totp_enabled
    assert reset(admin, csrf, bob)[0] == 204  # an admin resets an agent's


def test_an_account_another_workspace_shares_keeps_its_second_factor(
    client: TestClient, world: World, database: Database
) -> None:
    _enrol(client, world.bob)
    bob = world.acme.users["bob"].id
    with database.session() as db:  # bob also belongs to Globex
        workspaces.add_member(
            db,
            workspace_id=world.globex.workspace.id,
            email="bob@acme.test",
            role=Role.agent,
            password=None,
            actor_role=Role.owner,
        )
    alice, csrf = in_a_browser(client, world.alice)
    status, problem = reset(alice, csrf, bob)
    assert status == 409 and problem["type"].endswith("member-of-other-workspaces")
    assert "other workspaces" in problem["detail"]
    with database.session(write=False) as db:
        user = db.get(User, bob)
        assert user is not None and user.totp_enabled
        assert not db.scalars(select(AuditLog).where(AuditLog.action == "member.totp_reset")).all()


def test_the_operator_turns_off_the_second_factor_of_an_account_of_several_workspaces(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    relay: Outbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret, _ = _enrol(client, world.bob)
    bob = world.acme.users["bob"].id
    with database.session() as db:
        workspaces.add_member(
            db,
            workspace_id=world.globex.workspace.id,
            email="bob@acme.test",
            role=Role.agent,
            password=None,
            actor_role=Role.owner,
        )
    his, _ = signed_in(client, "bob@acme.test", secret)
    monkeypatch.setenv("RAPPORT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RAPPORT_SECRET_KEY", settings.secret_key.get_secret_value())
    runner = CliRunner()
    result = runner.invoke(cli_app, ["user", "totp-off", "bob@acme.test"])
    assert result.exit_code == 0, result.output
    assert result.output == "two-factor authentication turned off for bob@acme.test\n"
    # The server's few seconds of cached principals lapse (the command runs elsewhere).
    client.app.state.principal_cache.forget()  # type: ignore[attr-defined]
    assert his.get("/api/v1/auth/me").status_code == 401
    r = login(TestClient(client.app), "bob@acme.test")
    assert r.status_code == 200 and r.json()["mfa_required"] is False
    with database.session(write=False) as db:
        audited = db.scalars(select(AuditLog).where(AuditLog.action == "auth.totp_off")).all()
    assert sorted((a.workspace_id, a.target_id, a.actor) for a in audited) == sorted(
        (w.workspace.id, bob, "system") for w in (world.acme, world.globex)
    )
    deliver(database, settings)
    [mail] = mails(relay)
    assert "operator" in mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    again = runner.invoke(cli_app, ["user", "totp-off", "bob@acme.test"])
    assert again.exit_code == 1 and "no two-factor" in again.output
    assert runner.invoke(cli_app, ["user", "totp-off", "nobody@acme.test"]).exit_code == 1


def test_a_reset_takes_the_acting_members_own_password(
    client: TestClient, world: World, database: Database
) -> None:
    # A browser left signed in (or a stolen cookie) reset another member's second factor
    # with no password: the member's account was then open to a password alone.
    _enrol(client, world.bob)
    bob, alice = world.acme.users["bob"].id, world.acme.users["alice"].id
    browser, csrf = in_a_browser(client, world.alice)
    status, problem = reset(browser, csrf, bob, password="not alice's password")
    assert status == 403 and problem["type"].endswith("/current-password-wrong")
    r = browser.post(f"/api/v1/members/{bob}/totp/reset", headers=csrf)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    with database.session(write=False) as db:
        held, acting = db.get(User, bob), db.get(User, alice)
        assert held is not None and held.totp_enabled
        assert acting is not None and acting.failed_logins == 1  # counted as a login's
        assert not db.scalars(select(AuditLog).where(AuditLog.action == "member.totp_reset")).all()
    assert reset(browser, csrf, bob) == (204, {})


def test_a_reset_lifts_the_members_lock_out(
    client: TestClient, world: World, database: Database
) -> None:
    # Locked out by ten wrong passwords (someone guessing, or the member trying without
    # their phone), the member stayed locked after the admin vouched for them.
    _enrol(client, world.bob)
    bob = world.acme.users["bob"].id
    outside = TestClient(client.app, base_url=str(client.base_url))
    for _ in range(10):
        assert login(outside, "bob@acme.test", "wrong password!").status_code == 401
    assert login(outside, "bob@acme.test").status_code == 429
    alice, csrf = in_a_browser(client, world.alice)
    assert reset(alice, csrf, bob) == (204, {})
    r = login(outside, "bob@acme.test")
    assert r.status_code == 200 and r.json()["mfa_required"] is False
    with database.session(write=False) as db:
        user = db.get(User, bob)
        assert user is not None and (user.failed_logins, user.locked_until) == (0, None)


@pytest.mark.parametrize("joins", ["invitation", "add_member"])
def test_a_workspace_joined_while_a_reset_decides_keeps_the_second_factor(
    joins: str, client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The reset reads the account's workspaces under a lock of its row; joining one
    # took none (a membership's insert takes only PostgreSQL's KEY SHARE lock of the
    # row), so Globex's membership, written but not yet committed, went unseen: the
    # reset turned off the second factor that guards bob's sign-in to Globex too.
    _enrol(client, world.bob)
    bob, globex = world.acme.users["bob"].id, world.globex.workspace.id
    alice, csrf = in_a_browser(client, world.alice)
    box = box_for(settings.secret_key.get_secret_value())
    with database.session() as db:
        _, token = invitations.invite(
            db,
            workspace_id=globex,
            email="bob@acme.test",
            role=Role.agent,
            name="",
            actor_id=None,
            actor_role=Role.owner,
            box=box,
            mail=False,
        )
    joined, errors = threading.Event(), []

    def join() -> None:
        try:
            with database.session() as db:
                if joins == "invitation":
                    invitations.accept(
                        db,
                        token=token,
                        password=PASSWORD,
                        name="",
                        max_failures=10,
                        lockout_minutes=15,
                    )
                else:
                    workspaces.add_member(
                        db,
                        workspace_id=globex,
                        email="bob@acme.test",
                        role=Role.agent,
                        password=None,
                        actor_role=Role.owner,
                    )
                joined.set()
                time.sleep(1.0)  # the reset asks now, before this commits
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            joined.set()

    thread = threading.Thread(target=join)
    thread.start()
    assert joined.wait(10)
    status, problem = reset(alice, csrf, bob)
    thread.join(30)
    assert not errors, errors
    assert status == 409 and problem["type"].endswith("member-of-other-workspaces")
    with database.session(write=False) as db:
        user = db.get(User, bob)
        assert user is not None and user.totp_enabled
