"""The assistant where it met the rest: a photo alone, a backlog when the bot is switched
on, a rating after a hand-over, two bots by mail, votes from other sites, the ways people
ask for a person, a switched-off help center."""

import base64

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.db import Database
from tests.bot.test_bot import bot_messages, set_up_bot, thread, work
from tests.conftest import auth
from tests.factories import World


def test_a_photo_alone_on_a_bot_inbox_reaches_a_person(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A customer who sends only a picture (no text): the bot skips it ("nothing to read"),
    # and routing leaves every conversation of a bot inbox alone until the bot hands over.
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    set_up_bot(client, world, inbox_id)
    client.put(
        f"/api/v1/bot/inboxes/{inbox_id}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.patch(
        f"/api/v1/inboxes/{inbox_id}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    work(database, settings)
    r = client.post(
        f"/api/v1/inboxes/{inbox_id}/messages",
        json={
            "external_id": "photo-1",
            "text": "",
            "from": {"email": "kim@example.com", "name": "Kim Lee"},
            "attachments": [
                {
                    "filename": "broken-item.png",
                    "content_type": "image/png",
                    "data_base64": base64.b64encode(b"\x89PNG fake").decode(),
                }
            ],
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    conv_id = r.json()["conversation_id"]
    work(database, settings)
    conv = thread(client, world, conv_id)
    # It was neither answered nor handed over: routing leaves a bot's conversation alone
    # until it hands over, and nobody would ever be given it. Now a person takes it.
    notes = [m["text"] for m in conv["messages"] if m["kind"] == "note"]
    assert any(n.startswith("Bot handed over: the message has no text") for n in notes), notes


def test_a_disabled_help_center_is_not_linked_by_the_bot(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The help center is switched off (its pages answer 404); the bot still sends
    # customers a link into it.
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    client.put(
        "/api/v1/kb/help-center", json={"enabled": False}, headers=auth(world.alice)
    ).raise_for_status()
    assert client.get("/help/acme/articles/refunds-and-returns").status_code == 404
    from tests.bot.test_bot import ask

    conv_id = ask(client, world, "q1", "how long does a refund take to reach my payment method?")
    work(database, settings)
    (answer,) = bot_messages(thread(client, world, conv_id))
    links = [w for w in answer["text"].split() if w.startswith("http")]
    for link in links:
        assert client.get(link.replace("http://testserver", "")).status_code == 200, (
            f"the bot sent a dead link: {link}"
        )


def test_one_reader_cannot_vote_many_times_or_from_another_site(
    client: TestClient, world: World
) -> None:
    from tests.kb.test_kb import setup_center

    ids = setup_center(client, world)
    url = "/help/acme/articles/refunds-and-returns/feedback"
    # The same address, a different User-Agent header each time: each a new "reader".
    for n in range(10):
        client.post(
            url,
            data={"helpful": "no"},
            headers={"User-Agent": f"bot/{n}", "Origin": "https://evil.example"},
            follow_redirects=False,
        )
    article = client.get(
        f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
    ).json()
    assert article["not_helpful"] <= 1, article["not_helpful"]


def test_common_ways_of_asking_for_a_person_are_understood() -> None:
    from rapport.bot.service import asks_for_a_person

    missed = [
        t
        for t in (
            "I want to talk to a live agent",
            "can I speak to a real human?",
            "let me talk to an actual person",
            "I need a human",
            "customer service representative please",
        )
        if not asks_for_a_person(t)
    ]
    assert missed == []
    # And not asking for anyone: talking to a friend, in French.
    assert not asks_for_a_person("je n'ai pas pu en parler à une amie")


from tests.channels.email.test_email import (  # noqa: E402,F401
    Outbox,
    customer_mail,
    mail_inbox,
    outbox,
    send,
    smtp_port,
)


def test_the_bots_mail_says_it_is_automatic_so_two_bots_do_not_answer_each_other(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,  # noqa: F811
    smtp_port: int,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    from email import message_from_bytes, policy

    from rapport.channels.email.parse import parse

    set_up_bot(client, world, mail_inbox)
    send(smtp_port, customer_mail("hi, what are your opening hours on weekdays?"))
    work(database, settings)
    [raw] = outbox[0].messages
    sent = message_from_bytes(raw, policy=policy.default)
    assert "Monday to Friday" in sent.get_body(("plain",)).get_content()
    # RFC 3834: an automatic answer says so, or the other side's responder (another
    # Rapport's bot among them) answers it, and each answers the other.
    assert parse(raw).auto_reply, (
        f"bot mail has no Auto-Submitted header: {sent.get('Auto-Submitted')!r}"
    )


def test_conversations_waiting_before_the_bot_was_switched_on_are_still_routed(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The backlog of an auto-assigning inbox, waiting for an agent to come online; an
    # admin puts the bot in front of the inbox meanwhile. The bot never saw those
    # conversations, and routing now leaves them all alone "until the bot hands over".
    from tests.bot.test_bot import ask

    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    client.patch(
        f"/api/v1/inboxes/{inbox_id}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    waiting = ask(client, world, "w1", "my invoice shows the wrong VAT number")
    work(database, settings)
    assert thread(client, world, waiting)["assignee_id"] is None  # nobody online yet
    set_up_bot(client, world, inbox_id)
    client.put(
        f"/api/v1/bot/inboxes/{inbox_id}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    work(database, settings)
    assert thread(client, world, waiting)["assignee_id"] == world.acme.users["bob"].id


from tests.channels.webchat.test_widget import HOST_PAGE, chat, say, start  # noqa: E402,F401


def test_rating_an_earlier_answer_helpful_does_not_end_the_wait_for_the_person_asked_for(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    chat: dict[str, str],  # noqa: F811
) -> None:
    # Two messages sent together: a question, then "I want a person". The bot answers the
    # first and hands the conversation over for the second. The visitor then marks the
    # first answer helpful: that cleared the wait for the person they asked for.
    set_up_bot(client, world, chat["id"])
    visitor = start(client, chat)["visitor_token"]
    say(client, chat, visitor, "how long does a refund take to reach my payment method?")
    conv_id = say(client, chat, visitor, "I want a person")["conversation_id"]
    work(database, settings)
    conv = thread(client, world, conv_id)
    answer, told = bot_messages(conv)
    assert answer["meta"]["bot"]["source"] == "article"
    assert told["meta"]["bot"]["source"] == "handover"

    def waiting() -> list[str]:
        items = client.get(
            "/api/v1/conversations", params={"sort": "waiting"}, headers=auth(world.bob)
        ).json()["items"]
        return [c["id"] for c in items]

    assert conv_id in waiting()
    r = client.post(
        f"/widget/api/{chat['token']}/messages/{answer['id']}/rating",
        json={"helpful": True},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor},
    )
    assert r.status_code == 204
    assert conv_id in waiting(), "handed over, nobody answered, yet no longer waiting"
