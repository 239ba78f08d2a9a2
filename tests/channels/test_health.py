"""Inbox health: each status from what really happens to an inbox (the stand-in Graph API
refusing a token, a mailbox refusing the login, webhook calls that cannot be read, dead
jobs, an inbox gone quiet), scoped to the workspace and its admins."""

import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update

from rapport.channels import health
from rapport.channels.email.imap import LoginRefused
from rapport.channels.models import Inbox, InboxHealth, UnparsedPayload
from rapport.config import Settings
from rapport.conversations.models import Conversation, Message
from rapport.db import Database, utcnow
from rapport.jobs.worker import Worker
from tests.channels.email.test_imap import (  # noqa: F401  (the stand-in IMAP server)
    Mailbox,
    imap,
    poll_once,
    polled_inbox,
)
from tests.channels.test_providers import (  # noqa: F401  (a provider's stand-in)
    TG_UPDATE,
    Provider,
    make_inbox,
    provider,
    telegram_post,
    text_in,
)
from tests.channels.test_whatsapp import (  # noqa: F401  (the stand-in Graph API)
    Graph,
    graph,
    inbox,
    message_event,
    post_signed,
    status_event,
)
from tests.conftest import auth, sqlite_only, sqlite_plans
from tests.factories import World, dead_job, inbound
from tests.web.conftest import free_port

EXPIRED = {
    "message": "Error validating access token: Session has expired on Sunday, 06-Dec-26.",
    "type": "OAuthException",
    "code": 190,
    "error_subcode": 463,
    "fbtrace_id": "AbCdEf0123",
}


def health_of(client: TestClient, token: str, inbox_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/inboxes/{inbox_id}/health", headers=auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


def codes(found: dict[str, Any]) -> list[str]:
    return [r["code"] for r in found["reasons"]]


def reply(
    client: TestClient, world: World, inbox_id: str, database: Database, settings: Settings
) -> None:
    """The customer writes (a new message id each time), an agent answers, the worker sends."""
    wamid = f"wamid.IN{utcnow().timestamp()}"
    assert post_signed(client, inbox_id, message_event(wamid, "hello")).status_code == 200
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox_id}, headers=auth(world.bob)
    ).json()["items"]
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()


def test_an_inbox_that_works_is_ok_and_says_when_it_last_received(
    client: TestClient, world: World
) -> None:
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    found = health_of(client, world.alice, inbox_id)
    assert found["status"] == "ok" and found["reasons"] == []
    assert found["inbox_id"] == inbox_id and found["channel"] == "api"
    # The world's first message came in through it.
    assert found["last_received_at"] is not None and found["last_sent_at"] is None
    assert (found["failures_24h"], found["dead_jobs"], found["unparsed_24h"]) == (0, 0, 0)
    assert found["last_failure"] is None and found["connection"] is None


def test_an_inbox_without_what_it_needs_is_not_set_up_and_a_disabled_one_says_so(
    client: TestClient, world: World
) -> None:
    r = client.post(
        "/api/v1/inboxes", json={"name": "Bot", "channel": "telegram"}, headers=auth(world.alice)
    )
    bot = r.json()["id"]
    found = health_of(client, world.alice, bot)
    assert found["status"] == "not_set_up" and codes(found) == ["not_set_up"]
    assert "needs bot_token, secret_token" in found["reasons"][0]["detail"]
    client.patch(f"/api/v1/inboxes/{bot}", json={"enabled": False}, headers=auth(world.alice))
    found = health_of(client, world.alice, bot)
    # Switched off is said first; what it needs is still said.
    assert found["status"] == "disabled" and codes(found) == ["disabled", "not_set_up"]


def test_an_expired_token_fails_the_inbox_at_its_first_refused_send(
    client: TestClient,
    world: World,
    inbox: str,  # noqa: F811
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],  # noqa: F811
) -> None:
    reply(client, world, inbox, database, settings)
    sent = health_of(client, world.alice, inbox)
    assert sent["status"] == "ok" and sent["last_sent_at"] is not None
    assert sent["last_received_at"] is not None
    graph[1].answer, graph[1].error = 401, EXPIRED
    reply(client, world, inbox, database, settings)
    found = health_of(client, world.alice, inbox)
    assert found["status"] == "failing" and "account_refused" in codes(found)
    assert "190" in found["last_failure"]["error"]
    assert found["failures_24h"] == 1 and found["failures_in_row"] == 1
    assert found["last_sent_at"] == sent["last_sent_at"]
    # Meta's words, and the dead job the refused reply left, said with them.
    assert "Session has expired" in found["last_failure"]["error"]
    assert found["dead_jobs"] == 1 and "dead-letter list" in found["reasons"][-1]["detail"]
    # A new token: its sends are for the next one to tell; the day's failure stays said.
    client.patch(
        f"/api/v1/inboxes/{inbox}",
        json={"settings": {"access_token": "EAAG-new-token"}},
        headers=auth(world.alice),
    )
    found = health_of(client, world.alice, inbox)
    assert found["status"] == "warning" and codes(found) == ["send_failures"]
    graph[1].answer = 200
    reply(client, world, inbox, database, settings)
    found = health_of(client, world.alice, inbox)
    assert found["status"] == "warning" and found["failures_in_row"] == 0
    # What went out is written down once a minute at most.
    assert found["last_sent_at"] == sent["last_sent_at"]
    with database.session() as db:
        db.execute(update(InboxHealth).values(sent_at=utcnow() - timedelta(minutes=2)))
    reply(client, world, inbox, database, settings)
    assert health_of(client, world.alice, inbox)["last_sent_at"] > sent["last_sent_at"]


def answer_first(client: TestClient, world: World, inbox_id: str, token: str) -> None:
    """An agent answers the inbox's one conversation (the customer wrote first)."""
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox_id}, headers=auth(token)
    ).json()["items"]
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(token)
    )
    assert r.status_code == 201, r.text


def telegram(client: TestClient, world: World, url: str) -> str:
    inbox_id = make_inbox(
        client,
        world,
        "telegram",
        {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
    )
    telegram_post(client, inbox_id, TG_UPDATE)
    return inbox_id


def twilio(client: TestClient, world: World, url: str) -> str:
    inbox_id = make_inbox(
        client,
        world,
        "twilio_sms",
        {
            "account_sid": "AC00000000000000000000000000000000",
            "auth_token": "twilio-token",
            "phone_number": "+14155550100",
            "api_base_url": url,
        },
    )
    app_settings = client.app.state.settings  # type: ignore[attr-defined]
    text_in(client, app_settings, f"/webhooks/twilio_sms/{inbox_id}", "SM1", "Where is it?")
    return inbox_id


def api_webhook(client: TestClient, world: World, url: str) -> str:
    inbox_id = make_inbox(client, world, "api", {"webhook_url": f"{url}/replies"})
    r = client.post(
        f"/api/v1/inboxes/{inbox_id}/messages",
        json={"external_id": "crm-1", "text": "Hello", "from": {"email": "kim@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return inbox_id


@pytest.mark.parametrize(
    ("setup", "status", "body", "refused"),
    [
        (telegram, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, True),
        # The customer blocked the bot: theirs, not the inbox's.
        (
            telegram,
            403,
            {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"},
            False,
        ),
        (twilio, 401, {"code": 20003, "message": "Authenticate"}, True),
        (twilio, 400, {"code": 21211, "message": "The 'To' number is not valid"}, False),
        (api_webhook, 401, {}, True),
        (api_webhook, 422, {}, False),
    ],
)
def test_a_provider_refusing_the_inbox_credentials_fails_it_at_once(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],  # noqa: F811
    setup: Callable[[TestClient, World, str], str],
    status: int,
    body: dict[str, Any],
    refused: bool,
) -> None:
    url, handler = provider
    inbox_id = setup(client, world, url)
    handler.status, handler.reply = status, body
    answer_first(client, world, inbox_id, world.bob)
    Worker(database, settings).run_until_idle()
    found = health_of(client, world.alice, inbox_id)
    assert found["failures_24h"] == 1, found
    if refused:
        assert found["status"] == "failing" and codes(found)[0] == "account_refused"
    else:
        assert found["status"] == "warning" and codes(found) == ["send_failures"]


@pytest.fixture
def refusing_relay() -> Iterator[int]:
    """A mail server that refuses every login."""

    def refuse(*args: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    port = free_port()
    controller = Controller(
        object(),
        hostname="127.0.0.1",
        port=port,
        authenticator=refuse,
        auth_require_tls=False,
    )
    controller.start()
    yield port
    controller.stop()


def test_a_mail_server_refusing_the_login_fails_the_email_inbox(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    refusing_relay: int,
) -> None:
    inbox_id = make_inbox(
        client,
        world,
        "email",
        {
            "address": "support@acme.test",
            "smtp_host": "127.0.0.1",
            "smtp_port": refusing_relay,
            "smtp_security": "none",
            "smtp_username": "support@acme.test",
            "smtp_password": "wrong",
        },
    )
    with database.session() as db:
        inbox_row = db.get(Inbox, inbox_id)
        assert inbox_row is not None
        inbound(db, settings, inbox_row, external_id="<m1@example.com>", email="kim@example.com")
    answer_first(client, world, inbox_id, world.bob)
    Worker(database, settings).run_until_idle()
    found = health_of(client, world.alice, inbox_id)
    assert found["status"] == "failing" and codes(found)[0] == "account_refused"
    assert "SMTP authentication failed" in found["last_failure"]["error"]


def test_three_refused_sends_in_a_row_fail_the_inbox_and_one_that_goes_ends_it(
    client: TestClient,
    world: World,
    inbox: str,  # noqa: F811
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],  # noqa: F811
) -> None:
    graph[1].answer = 400
    graph[1].error = {
        "message": "(#131026) Message undeliverable to +1 650-555-1234 (kerry@example.com)",
        "type": "OAuthException",
        "code": 131026,
    }
    reply(client, world, inbox, database, settings)
    found = health_of(client, world.alice, inbox)
    # One refusal may be the customer's number: a warning, not yet failing.
    assert found["status"] == "warning" and codes(found) == ["send_failures"]
    reply(client, world, inbox, database, settings)
    reply(client, world, inbox, database, settings)
    found = health_of(client, world.alice, inbox)
    assert found["status"] == "failing" and codes(found) == ["sends_failing", "send_failures"]
    assert found["failures_24h"] == 3 and found["failures_in_row"] == 3
    # Why, without the customer's number or address.
    error = found["last_failure"]["error"]
    assert "131026" in error and "[number]" in error and "[address]" in error
    assert "555" not in error and "kerry" not in error
    assert "555" not in str(found) and "kerry" not in str(found)
    graph[1].answer = 200
    reply(client, world, inbox, database, settings)
    found = health_of(client, world.alice, inbox)
    assert found["status"] == "warning" and found["failures_in_row"] == 0


def test_a_failure_the_provider_reports_later_counts_once_and_is_a_warning(
    client: TestClient,
    world: World,
    inbox: str,  # noqa: F811
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],  # noqa: F811
) -> None:
    reply(client, world, inbox, database, settings)
    error = {"code": 131047, "title": "Re-engagement message"}
    for _ in range(2):  # Meta sends a webhook call again until it is answered
        post_signed(client, inbox, status_event("wamid.OUT1", "failed", [error]))
    found = health_of(client, world.alice, inbox)
    assert found["status"] == "warning" and codes(found) == ["send_failures"]
    assert found["failures_24h"] == 1 and found["failures_in_row"] == 0
    assert "131047" in found["last_failure"]["error"]


def test_dead_jobs_of_the_inbox_are_counted_and_those_of_the_last_day_warn(
    client: TestClient, world: World, database: Database
) -> None:
    acme, globex = world.acme.opened.message.id, world.globex.opened.message.id
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    ws = world.acme.workspace.id
    dead_job(database, workspace_id=ws, name="deliver", args={"message_id": acme})
    dead_job(
        database,
        workspace_id=ws,
        name="fetch_media",
        args={"message_id": acme},
        seconds_ago=3 * 86400,
    )
    # Not the inbox's: another workspace's message, a job of no message.
    dead_job(
        database,
        workspace_id=world.globex.workspace.id,
        name="deliver",
        args={"message_id": globex},
    )
    dead_job(database, workspace_id=ws, name="webhook_deliver")
    found = health_of(client, world.alice, inbox_id)
    assert (found["dead_jobs"], found["dead_jobs_24h"]) == (2, 1)
    assert found["status"] == "warning" and codes(found) == ["dead_jobs"]
    client.post("/api/v1/jobs/retry-all", headers=auth(world.alice))
    other = health_of(client, world.mallory, world.globex.inbox.id)  # type: ignore[union-attr]
    assert (other["dead_jobs"], other["dead_jobs_24h"]) == (1, 1)


def test_webhook_calls_that_cannot_be_read_warn_for_a_day(
    client: TestClient,
    world: World,
    inbox: str,  # noqa: F811
    database: Database,
) -> None:
    for n in range(2):
        bad = {"entry": [{"changes": [{"value": {"messages": [{"no": f"from {n}"}]}}]}]}
        assert post_signed(client, inbox, bad).status_code == 200
    found = health_of(client, world.alice, inbox)
    assert found["unparsed_24h"] == 2
    assert found["status"] == "warning" and codes(found) == ["unparsed"]
    with database.session() as db:
        db.execute(update(UnparsedPayload).values(created_at=utcnow() - timedelta(hours=25)))
    found = health_of(client, world.alice, inbox)
    assert found["unparsed_24h"] == 0 and found["status"] == "ok"


def test_a_mailbox_that_refuses_the_login_fails_the_inbox_until_it_is_read_again(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    imap: tuple[Mailbox, int],  # noqa: F811
) -> None:
    box, port = imap
    inbox_id = polled_inbox(client, world, port)
    client.patch(
        f"/api/v1/inboxes/{inbox_id}",
        json={"settings": {"imap_password": "old-pass"}},
        headers=auth(world.alice),
    )
    with pytest.raises(LoginRefused):
        poll_once(database, settings, inbox_id)
    found = health_of(client, world.alice, inbox_id)
    assert found["status"] == "failing" and codes(found) == ["login_refused"]
    assert "bad password" in found["reasons"][0]["detail"]
    conn = found["connection"]
    assert conn["login_refused"] and conn["failing_since"] and "bad password" in conn["error"]
    client.patch(
        f"/api/v1/inboxes/{inbox_id}",
        json={"settings": {"imap_password": "imap-pass"}},
        headers=auth(world.alice),
    )
    box.add("Are you there?")
    assert poll_once(database, settings, inbox_id) == 1
    found = health_of(client, world.alice, inbox_id)
    assert found["status"] == "ok" and found["connection"]["failing_since"] is None
    assert found["connection"]["reached_at"] is not None
    assert found["last_received_at"] is not None
    # A working mailbox's polls (every minute) are written down every 5 minutes at most.
    poll_once(database, settings, inbox_id)
    assert health_of(client, world.alice, inbox_id)["connection"] == found["connection"]


def test_a_mailbox_out_of_reach_warns_then_fails_and_one_never_polled_warns(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox_id = polled_inbox(client, world, port)
    with pytest.raises(ConnectionRefusedError):
        poll_once(database, settings, inbox_id)
    found = health_of(client, world.alice, inbox_id)
    assert found["status"] == "warning" and codes(found) == ["mailbox_error"]
    assert "ConnectionRefusedError" in found["connection"]["error"]
    with database.session() as db:
        db.execute(update(InboxHealth).values(poll_failing_since=utcnow() - timedelta(minutes=6)))
    found = health_of(client, world.alice, inbox_id)
    assert found["status"] == "failing" and codes(found) == ["mailbox_unreachable"]
    # Another, made 20 minutes ago and never polled: no worker runs the polls.
    other = polled_inbox(client, world, port)
    with database.session() as db:
        db.execute(
            update(Inbox)
            .where(Inbox.id == other)
            .values(created_at=utcnow() - timedelta(minutes=20))
        )
    found = health_of(client, world.alice, other)
    assert found["status"] == "warning" and codes(found) == ["mailbox_not_polled"]


def received(
    database: Database, settings: Settings, world: World, inbox_id: str, ago: list[timedelta]
) -> None:
    """A customer's conversation through the inbox for each of ``ago``, last written then."""
    with database.session() as db:
        inbox_row = db.get(Inbox, inbox_id)
        assert inbox_row is not None
        for n, when in enumerate(ago):
            got = inbound(db, settings, inbox_row, external_id=f"q-{n}", email=f"c{n}@example.com")
            at = utcnow() - when
            db.execute(
                update(Conversation)
                .where(Conversation.id == got.conversation.id)
                .values(last_inbound_at=at, last_activity_at=at)
            )


def test_a_busy_inbox_that_goes_quiet_for_days_warns_and_a_seldom_one_does_not(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    made = client.post(
        "/api/v1/inboxes", json={"name": "Shop", "channel": "api"}, headers=auth(world.alice)
    )
    busy = made.json()["id"]
    # Three conversations a day for ten days, the last four days ago.
    received(
        database,
        settings,
        world,
        busy,
        [timedelta(days=4, hours=8 * n) for n in range(30)],
    )
    found = health_of(client, world.alice, busy)
    assert found["status"] == "warning" and codes(found) == ["quiet"]
    assert "4 days" in found["reasons"][0]["detail"]
    made = client.post(
        "/api/v1/inboxes", json={"name": "Seldom", "channel": "api"}, headers=auth(world.alice)
    )
    seldom = made.json()["id"]
    # One a week: a week's silence is what it always does.
    received(database, settings, world, seldom, [timedelta(days=7 * n + 6) for n in range(1, 4)])
    assert health_of(client, world.alice, seldom)["status"] == "ok"


def test_health_is_for_admins_of_the_inboxes_workspace(client: TestClient, world: World) -> None:
    acme = world.acme.inbox.id  # type: ignore[union-attr]
    for token in (world.bob, world.victor):
        for path in ("/api/v1/inboxes/health", f"/api/v1/inboxes/{acme}/health"):
            r = client.get(path, headers=auth(token))
            assert r.status_code == 403, r.text
            assert r.headers["content-type"] == "application/problem+json"
    r = client.get(f"/api/v1/inboxes/{acme}/health", headers=auth(world.mallory))
    assert r.status_code == 404 and r.json()["type"].endswith("/not-found")
    listed = client.get("/api/v1/inboxes/health", headers=auth(world.mallory)).json()["items"]
    assert [i["inbox_id"] for i in listed] == [world.globex.inbox.id]  # type: ignore[union-attr]
    r = client.get("/api/v1/inboxes/no-such-inbox/health", headers=auth(world.alice))
    assert r.status_code == 404


def test_the_list_asks_the_same_statements_however_many_inboxes(
    client: TestClient, world: World, database: Database
) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    def count() -> int:
        statements.clear()
        event.listen(database.engine, "before_cursor_execute", seen)
        try:
            r = client.get("/api/v1/inboxes/health", headers=auth(world.alice))
        finally:
            event.remove(database.engine, "before_cursor_execute", seen)
        assert r.status_code == 200
        return len(statements)

    count()  # what the first request of a token asks once
    one = count()
    for n in range(5):
        client.post(
            "/api/v1/inboxes",
            json={"name": f"API {n}", "channel": "api"},
            headers=auth(world.alice),
        )
    assert count() == one


@sqlite_only
def test_each_figure_is_read_through_an_index(
    client: TestClient, world: World, database: Database
) -> None:
    # Two inboxes: their conversations are read in one statement, each through the index.
    client.post(
        "/api/v1/inboxes", json={"name": "Shop", "channel": "api"}, headers=auth(world.alice)
    )
    with sqlite_plans(
        database, "FROM jobs", "FROM conversations", "FROM unparsed_payloads"
    ) as plans:
        client.get("/api/v1/inboxes/health", headers=auth(world.alice))
    said = {
        table: plan
        for statement, plan in plans
        for table in ("jobs", "conversations", "unparsed_payloads")
        if f"FROM {table}" in statement
    }
    assert "USING INDEX ix_jobs_claim (state=?)" in said["jobs"], said
    assert "TEMP B-TREE FOR ORDER BY" not in said["jobs"], said
    assert "SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id=?)" in said["jobs"]
    walks = said["conversations"].count(
        "SEARCH conversations USING INDEX ix_conversations_ws_inbox (workspace_id=? AND inbox_id=?)"
    )
    assert walks == 2 and "TEMP B-TREE" not in said["conversations"], said
    assert "ix_unparsed_payloads_inbox_created" in said["unparsed_payloads"], said


def test_messages_coming_in_write_nothing_of_health(
    client: TestClient,
    world: World,
    inbox: str,  # noqa: F811
    database: Database,
) -> None:
    for n in range(3):
        post_signed(client, inbox, message_event(f"wamid.IN{n}", "hello"))
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).select_from(InboxHealth)) == 0
        assert db.scalar(select(func.count()).select_from(Message)) >= 3


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        (
            "recipient refused: {'kerry@example.com': (550, b'no such user')}",
            "recipient refused: {'[address]",
        ),
        (
            "Twilio refused the message: The 'To' number +14155550100 is not valid",
            "number [number] is",
        ),
        ("(#131026) Message undeliverable", "(#131026) Message undeliverable"),
        ("Telegram refused: Bad Request: chat 1111111 not found", "chat [number] not found"),
    ],
)
def test_an_error_is_kept_without_addresses_or_numbers(said: str, kept: str) -> None:
    assert kept in health.plain(said)
    assert len(health.plain("x" * 1000)) == health.ERROR_MAX
