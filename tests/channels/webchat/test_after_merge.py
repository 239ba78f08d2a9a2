"""Web chat after an agent merged the chat with the same customer's conversation of another
inbox: the visitor's widget shows what went through the chat, wherever it now sits, and
only that; what it shows can be marked read, rated and downloaded."""

from typing import Any

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.db import Database
from tests.bot.test_bot import set_up_bot, work
from tests.channels.webchat.test_widget import HOST_PAGE, chat, say, start  # noqa: F401
from tests.conftest import auth
from tests.factories import World


def as_visitor(visitor: str) -> dict[str, str]:
    return {"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor}


def by_email(client: TestClient, world: World, chat_conversation: str, text: str) -> str:
    """The same customer's conversation in the email inbox, an agent's message in it."""
    customer = client.get(
        f"/api/v1/conversations/{chat_conversation}", headers=auth(world.bob)
    ).json()["customer_id"]
    r = client.post(
        "/api/v1/conversations",
        json={"customer_id": customer, "inbox_id": world.acme.inbox.id, "text": text},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def merge(client: TestClient, world: World, *, into: str, merged: str) -> None:
    r = client.post(
        f"/api/v1/conversations/{into}/merge",
        json={"merged_id": merged},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text


def statuses(client: TestClient, world: World, conversation: str) -> dict[str, str]:
    conv = client.get(f"/api/v1/conversations/{conversation}", headers=auth(world.bob)).json()
    return {m["text"]: m["status"] for m in conv["messages"] if m["direction"] == "out"}


def test_a_chat_merged_into_an_email_conversation_can_still_be_read_rated_and_downloaded(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    chat: dict[str, str],  # noqa: F811
) -> None:
    # The visitor's widget showed the messages, but marking them read and rating the bot's
    # answer were refused (404): the conversation holding them was the email inbox's.
    set_up_bot(client, world, chat["id"])
    visitor = start(client, chat, name="Ada")["visitor_token"]
    conv = say(client, chat, visitor, "how long does a refund take to reach my payment method?")[
        "conversation_id"
    ]
    work(database, settings)
    upload = client.post(
        f"/api/v1/conversations/{conv}/uploads",
        files={"file": ("label.pdf", b"%PDF-1.4 return label", "application/pdf")},
        headers=auth(world.bob),
    ).json()
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Here is your return label.", "attachment_ids": [upload["id"]]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    email = by_email(client, world, conv, "We wrote to you by email too.")
    merge(client, world, into=email, merged=conv)

    url = f"/widget/api/{chat['token']}"
    history: list[dict[str, Any]] = client.get(
        f"{url}/messages", headers=as_visitor(visitor)
    ).json()
    texts = [m["text"] for m in history]
    assert texts[0].startswith("how long does a refund") and len(texts) == 3
    assert "five business days" in texts[1] and texts[2] == "Here is your return label."
    answer, label = history[1], history[2]
    assert answer["rateable"] and all(m["conversation_id"] == email for m in history)
    r = client.post(
        f"{url}/messages/{answer['id']}/rating",
        json={"helpful": True},
        headers=as_visitor(visitor),
    )
    assert r.status_code == 204, r.text
    r = client.post(f"{url}/read", json={"message_id": label["id"]}, headers=as_visitor(visitor))
    assert r.status_code == 204, r.text
    states = statuses(client, world, email)
    assert states["Here is your return label."] == "read"
    assert states["We wrote to you by email too."] != "read"  # the widget never showed it
    got = client.get(
        f"{url}/attachments/{label['attachments'][0]['id']}", headers=as_visitor(visitor)
    )
    assert got.status_code == 200 and got.content == b"%PDF-1.4 return label"
    # Still no one else's.
    stranger = start(client, chat)["visitor_token"]
    r = client.post(
        f"{url}/messages/{answer['id']}/rating",
        json={"helpful": False},
        headers=as_visitor(stranger),
    )
    assert r.status_code == 404
    r = client.post(f"{url}/read", json={"message_id": label["id"]}, headers=as_visitor(stranger))
    assert r.status_code == 404


def test_an_email_conversation_merged_into_the_chat_stays_out_of_the_widget(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
) -> None:
    # The history showed the customer's email thread in the chat (the live socket did not),
    # and reading the chat marked the email replies read.
    visitor = start(client, chat, name="Ada")["visitor_token"]
    conv = say(client, chat, visitor, "hello?")["conversation_id"]
    email = by_email(client, world, conv, "Our reply by email.")
    merge(client, world, into=conv, merged=email)
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "And here in the chat."},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    url = f"/widget/api/{chat['token']}"
    history = client.get(f"{url}/messages", headers=as_visitor(visitor)).json()
    assert [m["text"] for m in history] == ["hello?", "And here in the chat."]
    r = client.post(
        f"{url}/read", json={"message_id": history[-1]["id"]}, headers=as_visitor(visitor)
    )
    assert r.status_code == 204, r.text
    states = statuses(client, world, conv)
    assert states["And here in the chat."] == "read"
    assert states["Our reply by email."] != "read"


def test_agents_see_the_visitor_typing_in_the_conversation_their_chat_was_merged_into(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
) -> None:
    # The typing call looked for the visitor's conversation of this inbox not merged away:
    # there was none, and agents never saw them typing again.
    visitor = start(client, chat, name="Ada")["visitor_token"]
    conv = say(client, chat, visitor, "hello?")["conversation_id"]
    email = by_email(client, world, conv, "Our reply by email.")
    merge(client, world, into=email, merged=conv)
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        r = client.post(f"/widget/api/{chat['token']}/typing", headers=as_visitor(visitor))
        assert r.status_code == 204
        # An event surely after it: what came before is all there is.
        say(client, chat, visitor, "are you there?")
        events = [ws.receive_json()]
        while events[-1]["type"] != "message.created":
            events.append(ws.receive_json())
    typing = [e["payload"] for e in events if e["type"] == "visitor.typing"]
    assert [t["conversation_id"] for t in typing] == [email]
