"""The bot: answers from intents and articles, asks when unsure, hands over with context."""

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update

from rapport.auth.models import Team
from rapport.bot import service as bot_service
from rapport.bot.models import IntentModelBlob
from rapport.config import Settings
from rapport.crypto import box_for
from rapport.customers.models import Identity
from rapport.db import Database, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.worker import Worker
from tests.channels.test_providers import (  # noqa: F401
    Provider,
    meta_event,
    meta_post,
    page_inbox,
    provider,
)
from tests.channels.test_whatsapp import Graph, graph, inbox, message_event, post_signed  # noqa: F401
from tests.channels.webchat.test_widget import HOST_PAGE, chat, say, start  # noqa: F401
from tests.conftest import auth, pause_first_fit, postgresql_only, published_events
from tests.factories import World, planted_pickle
from tests.standin import serving

ORDERS = {"1042": {"status": "shipped", "carrier": "DHL", "eta": "Thursday"}}

INTENTS = {
    "opening_hours": (
        "We are open Monday to Friday, 9:00 to 18:00, {{ customer.first_name or 'there' }}.",
        [
            "when are you open",
            "what are your opening hours",
            "are you open on saturday",
            "what time do you close today",
            "opening times please",
            "until what time can I call you",
        ],
    ),
    "order_status": (
        "Order {{ data.order }} is {{ data.status }} with {{ data.carrier }}, "
        "expected {{ data.eta }}.",
        [
            "where is my order",
            "status of my order 1234",
            "has my order shipped",
            "track my parcel",
            "when will my order arrive",
            "my package has not arrived yet, order 555",
        ],
    ),
}


class Shop(BaseHTTPRequestHandler):
    """A stand-in order-status service: answers only requests signed with its secret."""

    secret = ""
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        ts = self.headers.get("X-Rapport-Timestamp", "")
        url = f"http://{self.headers['Host']}{self.path}"
        expected = (
            "v1="
            + hmac.new(
                type(self).secret.encode(), f"{ts}.{url}".encode(), hashlib.sha256
            ).hexdigest()
        )
        if not hmac.compare_digest(expected, self.headers.get("X-Rapport-Signature", "")):
            self.send_response(401)
            self.end_headers()
            return
        type(self).seen.append(self.path)
        number = urlparse(self.path).path.rsplit("/", 1)[-1]
        order = ORDERS.get(number)
        self.send_response(200 if order else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"order": number, **(order or {})}).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def shop() -> Iterator[tuple[str, type[Shop]]]:
    handler = type("S", (Shop,), {"secret": "", "seen": []})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_port}", handler


def work(database: Database, settings: Settings) -> None:
    Worker(database, settings).run_until_idle(max_jobs=100)


def set_up_bot(
    client: TestClient,
    world: World,
    inbox_id: str,
    shop: tuple[str, type[Shop]] | None = None,
) -> dict[str, str]:
    team = client.post("/api/v1/teams", json={"name": "Tier 2"}, headers=auth(world.alice)).json()
    integration_id = None
    if shop is not None:
        r = client.post(
            "/api/v1/bot/integrations",
            json={"name": "orders", "url": shop[0] + "/orders/{{ order_number }}"},
            headers=auth(world.alice),
        )
        assert r.status_code == 201, r.text
        shop[1].secret = r.json()["secret"]
        integration_id = r.json()["id"]
    for name, (reply, examples) in INTENTS.items():
        r = client.post(
            "/api/v1/bot/intents",
            json={
                "name": name,
                "reply": reply,
                "examples": examples,
                "integration_id": integration_id if name == "order_status" else None,
            },
            headers=auth(world.alice),
        )
        assert r.status_code == 201, r.text
    assert client.post("/api/v1/bot/train", headers=auth(world.alice)).json()["examples"] == 12
    client.put(
        "/api/v1/kb/help-center", json={"slug": "acme"}, headers=auth(world.alice)
    ).raise_for_status()
    article = client.post(
        "/api/v1/kb/articles",
        json={
            "title": "Refunds and returns",
            "body": "You can return any item within 30 days of delivery for a full refund. "
            "The refund reaches your original payment method within five business days.",
        },
        headers=auth(world.bob),
    ).json()
    client.post(f"/api/v1/kb/articles/{article['id']}/publish", headers=auth(world.bob))
    r = client.put(
        f"/api/v1/bot/inboxes/{inbox_id}",
        json={"enabled": True, "handover_team_id": team["id"]},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    return {"team": team["id"], "article": article["id"]}


def ask(
    client: TestClient, world: World, ext: str, text: str, email: str = "kim@example.com"
) -> str:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": text, "from": {"email": email, "name": "Kim Lee"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def thread(client: TestClient, world: World, conversation_id: str) -> dict:  # type: ignore[type-arg]
    return client.get(  # type: ignore[no-any-return]
        f"/api/v1/conversations/{conversation_id}", headers=auth(world.bob)
    ).json()


def bot_messages(conv: dict) -> list[dict]:  # type: ignore[type-arg]
    return [m for m in conv["messages"] if m["kind"] == "bot"]


def test_a_confident_intent_answers_and_says_why(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    conv_id = ask(client, world, "q1", "hi, what are your opening hours on weekdays?")
    work(database, settings)
    conv = thread(client, world, conv_id)
    (answer,) = bot_messages(conv)
    assert answer["text"] == "We are open Monday to Friday, 9:00 to 18:00, Kim."
    assert answer["sender_type"] == "bot" and answer["direction"] == "out"
    why = answer["meta"]["bot"]
    assert why["source"] == "intent" and why["intent"] == "opening_hours"
    assert why["confidence"] >= 0.55
    assert conv["assignee_id"] is None  # still with the bot


def test_an_intent_model_rapport_did_not_sign_is_not_loaded(
    client: TestClient, world: World, database: Database, settings: Settings, tmp_path: Path
) -> None:
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    work(database, settings)  # the trainings each change queued
    marker = tmp_path / "ran"
    with database.session() as db:  # written straight into the database, newer than ours
        db.execute(
            update(IntentModelBlob).values(model=planted_pickle(marker), trained_at=utcnow())
        )
    conv_id = ask(client, world, "q1", "hi, what are your opening hours on weekdays?")
    work(database, settings)
    (told,) = bot_messages(thread(client, world, conv_id))
    assert told["meta"]["bot"]["source"] == "handover"  # no intents to answer from
    assert not marker.exists()
    # Retraining stores a model of ours again, and it answers.
    assert client.post("/api/v1/bot/train", headers=auth(world.alice)).json()["examples"] == 12
    conv_id = ask(client, world, "q2", "what are your opening hours?", email="lee@example.com")
    work(database, settings)
    (answer,) = bot_messages(thread(client, world, conv_id))
    assert answer["meta"]["bot"]["source"] == "intent"


def test_the_inbox_goes_on_while_a_training_fits_and_what_it_learnt_from_is_checked(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A large workspace's training takes minutes with the ai extra. It holds no lock while
    # it fits: messages are stored and intents edited meanwhile, on both databases (SQLite
    # has one writer; on PostgreSQL a locked workspace row stops every insert naming it).
    api_inbox = world.acme.inbox
    assert api_inbox is not None
    set_up_bot(client, world, api_inbox.id)
    box = box_for(settings.secret_key.get_secret_value())
    paused = pause_first_fit(monkeypatch)
    outcome: list[object] = []
    trainer = threading.Thread(
        target=lambda: outcome.append(
            bot_service.train(database, workspace_id=world.acme.workspace.id, box=box)
        )
    )
    trainer.start()
    try:
        assert paused.fitting.wait(30)
        intent_id = next(
            i["id"]
            for i in client.get("/api/v1/bot/intents", headers=auth(world.alice)).json()
            if i["name"] == "opening_hours"
        )
        with ThreadPoolExecutor(1) as pool:  # waiting on a lock would hang, not fail
            stored = pool.submit(
                client.post,
                f"/api/v1/inboxes/{api_inbox.id}/messages",
                json={
                    "external_id": "during-training",
                    "text": "hello",
                    "from": {"email": "d@example.com"},
                },
                headers=auth(world.alice),
            ).result(timeout=30)
            # Examples it is learning from go away: what it learnt is not stored.
            deleted = pool.submit(
                client.delete, f"/api/v1/bot/intents/{intent_id}", headers=auth(world.alice)
            ).result(timeout=30)
        assert stored.status_code == 201, stored.text
        assert deleted.status_code == 204, deleted.text
    finally:
        paused.release.set()
        trainer.join(60)
    # Read again: one intent is left, too few to learn from, and the old model is dropped.
    assert outcome == [0]
    assert paused.sizes == [12]
    with database.session(write=False) as db:
        assert db.get(IntentModelBlob, world.acme.workspace.id) is None


def test_two_trainings_at_once_do_not_collide(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Each change to the intents queues a training; two workers may run two at once. Both
    # store their model, one after the other, instead of failing on its key when neither
    # found a model to update.
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    box = box_for(settings.secret_key.get_secret_value())
    workspace_id = world.acme.workspace.id
    with database.session() as db:
        db.execute(delete(IntentModelBlob))
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(bot_service.train, database, workspace_id=workspace_id, box=box)
            for _ in range(2)
        ]
        assert [r.result(timeout=60) for r in runs] == [12, 12]
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).select_from(IntentModelBlob)) == 1


def test_a_question_the_help_center_answers_is_answered_with_the_article_on_whatsapp(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],  # noqa: F811
    inbox: str,  # noqa: F811
) -> None:
    set_up_bot(client, world, inbox)
    post_signed(client, inbox, message_event("wamid.BOT1", "Can I return an item for a refund?"))
    work(database, settings)
    sent = [body for path, _, body in graph[1].calls if path.endswith("/messages")]
    assert len(sent) == 1
    text = sent[0]["text"]["body"]
    assert "30 days" in text and "/help/acme/articles/refunds-and-returns" in text


def test_a_question_the_help_center_answers_is_answered_on_web_chat(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    chat: dict[str, str],  # noqa: F811
) -> None:
    set_up_bot(client, world, chat["id"])
    visitor = start(client, chat)["visitor_token"]
    # Words of the article, in the visitor's own sentence: answered with or without the
    # `ai` extra (paraphrases that share no word need it: tests/kb covers those).
    say(client, chat, visitor, "how long does a refund take to reach my payment method?")
    work(database, settings)
    history = client.get(
        f"/widget/api/{chat['token']}/messages",
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor},
    ).json()
    answer = history[-1]
    assert answer["kind"] == "bot" and "five business days" in answer["text"]
    # The visitor says it did not help: counted against the bot.
    r = client.post(
        f"/widget/api/{chat['token']}/messages/{answer['id']}/rating",
        json={"helpful": False},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor},
    )
    assert r.status_code == 204
    other = start(client, chat)["visitor_token"]
    r = client.post(
        f"/widget/api/{chat['token']}/messages/{answer['id']}/rating",
        json={"helpful": True},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": other},
    )
    assert r.status_code == 404  # another visitor cannot rate it


def test_the_bots_hand_over_note_quoting_a_customer_notifies_nobody_they_name(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The note quotes the customer's words, and its @handles notified members: a customer
    # writing "@bob" pinged Bob, with their message as the notification's text.
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    conv_id = ask(client, world, "q-at", "@bob @alice do you sponsor chess in Norway?")
    work(database, settings)
    (note,) = [m for m in thread(client, world, conv_id)["messages"] if m["kind"] == "note"]
    assert "@bob @alice" in note["text"]
    for member in (world.bob, world.alice):
        mine = client.get("/api/v1/notifications", headers=auth(member)).json()["items"]
        assert [n for n in mine if n["kind"] == "mention"] == []


def test_an_unknown_question_goes_to_a_person_with_a_note_and_the_customer_is_told(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ids = set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    conv_id = ask(client, world, "q1", "Do you sponsor amateur chess tournaments in Norway?")
    work(database, settings)
    conv = thread(client, world, conv_id)
    (told,) = bot_messages(conv)
    assert "colleague" in told["text"] and told["meta"]["bot"]["source"] == "handover"
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert "Bot handed over: no confident answer" in note["text"]
    assert "chess tournaments" in note["text"]
    assert conv["team_id"] == ids["team"]
    waiting = client.get(
        "/api/v1/conversations", params={"sort": "waiting"}, headers=auth(world.bob)
    ).json()["items"]
    assert conv_id in [c["id"] for c in waiting]  # still waiting for a person
    unanswered = client.get("/api/v1/bot/unanswered", headers=auth(world.bob)).json()
    assert [u["text"] for u in unanswered] == [
        "Do you sponsor amateur chess tournaments in Norway?"
    ]
    # After the hand-over the bot stays quiet.
    ask(client, world, "q2", "what are your opening hours?")
    work(database, settings)
    assert len(bot_messages(thread(client, world, conv_id))) == 1


def test_an_intent_whose_reply_renders_blank_hands_over(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The blank answer was sent as a message, refused ("a message needs text or a file"):
    # the bot_reply job failed on every attempt, and the customer had neither an answer
    # nor a person (routing leaves the bot's conversations alone until it hands over).
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    intents = client.get("/api/v1/bot/intents", headers=auth(world.alice)).json()
    hours = next(i for i in intents if i["name"] == "opening_hours")
    r = client.patch(
        f"/api/v1/bot/intents/{hours['id']}",
        json={"name": "opening_hours", "reply": "{{ customer.attributes.get('vip', '') }}"},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    conv_id = ask(client, world, "q1", "what are your opening hours?")
    work(database, settings)
    conv = thread(client, world, conv_id)
    (told,) = bot_messages(conv)
    assert told["meta"]["bot"]["source"] == "handover"
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert "the answer was empty" in note["text"] and "opening_hours" in note["text"]
    with database.session(write=False) as db:
        states = set(db.scalars(select(Job.state).where(Job.name == "bot_reply")))
    assert states == {JobState.done}


def test_an_intent_needs_a_reply(client: TestClient, world: World) -> None:
    # An intent saved with a blank reply (the default) could only ever answer nothing.
    for reply in ("", " \n "):
        r = client.post(
            "/api/v1/bot/intents",
            json={"name": "hours", "reply": reply, "examples": ["when are you open"]},
            headers=auth(world.alice),
        )
        assert r.status_code == 422 and r.json()["detail"].startswith("an intent needs a reply")
    r = client.post("/api/v1/bot/intents", json={"name": "hours"}, headers=auth(world.alice))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    made = client.post(
        "/api/v1/bot/intents", json={"name": "hours", "reply": "9 to 5"}, headers=auth(world.alice)
    )
    assert made.status_code == 201, made.text
    r = client.patch(
        f"/api/v1/bot/intents/{made.json()['id']}",
        json={"name": "hours", "reply": "  "},
        headers=auth(world.alice),
    )
    assert r.status_code == 422
    assert client.get("/api/v1/bot/intents", headers=auth(world.alice)).json()[0]["reply"] == (
        "9 to 5"
    )


def test_asking_for_a_person_hands_over_at_once(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    conv_id = ask(client, world, "q1", "I want a person, not a robot")
    work(database, settings)
    conv = thread(client, world, conv_id)
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert "the customer asked for a person" in note["text"]
    assert bot_messages(conv)[0]["meta"]["bot"]["source"] == "handover"
    assert client.get("/api/v1/bot/unanswered", headers=auth(world.bob)).json() == []


def test_a_hand_over_opens_a_set_aside_conversation_as_any_status_change_does(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The hand-over set the status itself: a conversation an agent had marked pending
    # before the bot's job ran came back open with its SLA resolution clock still paused
    # (until some later hook), and no one heard of the change (no activity, no event).
    from rapport.conversations.models import ConversationSla

    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Day", "resolution_minutes": 600},
        headers=auth(world.alice),
    ).raise_for_status()
    conv_id = ask(client, world, "sa1", "I want a person")
    client.post(
        f"/api/v1/conversations/{conv_id}/status",
        json={"status": "pending"},
        headers=auth(world.bob),
    ).raise_for_status()
    with published_events() as events:
        work(database, settings)
    conv = thread(client, world, conv_id)
    assert conv["status"] == "open"
    assert bot_messages(conv)[0]["meta"]["bot"]["source"] == "handover"
    with database.session(write=False) as db:
        record = db.get(ConversationSla, conv_id)
        assert record is not None
        assert record.resolution_started_at is not None and record.resolution_due_at is not None
    # Recorded once, as the bot's doing; the open conversation published.
    (opened,) = [
        m for m in conv["messages"] if m["kind"] == "activity" and m["text"] == "Marked open"
    ]
    assert opened["sender_type"] == "bot" and opened["sender_id"] is None
    updates = [e["payload"] for e in events if e["type"] == "conversation.updated"]
    assert updates and updates[-1]["status"] == "open"
    assert client.get(f"/api/v1/conversations/{conv_id}/sla", headers=auth(world.bob)).json()[
        "resolution_due_at"
    ]

    # Already open (the usual hand-over): no status change to record.
    other = ask(client, world, "sa2", "I want a person", email="ann@example.com")
    work(database, settings)
    assert not [
        m for m in thread(client, world, other)["messages"] if m["text"].startswith("status:")
    ]


def test_a_hand_over_to_a_team_since_deleted_still_hands_over(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Assigning to the team named in the bot's settings raised "team not found": the
    # bot_reply job failed on every attempt, with no note, no word to the customer and
    # nothing routed.
    ids = set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    with database.session() as db:  # gone behind the settings' back (deleting a team
        # through the API also takes it out of them)
        db.execute(delete(Team).where(Team.id == ids["team"]))
        before = set(db.scalars(select(Job.id)))  # the team's set-up woke routing once
    conv_id = ask(client, world, "q1", "I want a person, not a robot")
    with caplog.at_level(logging.WARNING, logger="rapport.bot.service"):
        work(database, settings)
    conv = thread(client, world, conv_id)
    assert bot_messages(conv)[0]["meta"]["bot"]["source"] == "handover"
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert "the customer asked for a person" in note["text"]
    assert conv["team_id"] is None
    with database.session(write=False) as db:  # no routing: the inbox does not auto-assign
        routed = ["bot_reply", "route", "route_waiting"]
        jobs = db.execute(
            select(Job.name, Job.state).where(Job.name.in_(routed), Job.id.not_in(before))
        )
        assert set(jobs) == {("bot_reply", JobState.done)}
    missing = [r for r in caplog.records if r.__dict__.get("event") == "bot.handover_team_missing"]
    assert [r.__dict__["team_id"] for r in missing] == [ids["team"]]


def test_deleting_a_team_takes_it_out_of_the_bots_hand_over(
    client: TestClient, world: World
) -> None:
    # The bot's settings kept naming the deleted team: saved again as they stood, 404.
    api = world.acme.inbox.id  # type: ignore[union-attr]
    ids = set_up_bot(client, world, api)
    assert (
        client.delete(f"/api/v1/teams/{ids['team']}", headers=auth(world.alice)).status_code == 204
    )
    bot = client.get(f"/api/v1/bot/inboxes/{api}", headers=auth(world.alice)).json()
    assert bot["handover_team_id"] is None and bot["enabled"] is True
    r = client.put(f"/api/v1/bot/inboxes/{api}", json=bot, headers=auth(world.alice))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "text",
    [
        "can I talk to a human please",
        "agent",
        "je voudrais parler à un conseiller",
        "ich möchte mit einem Mitarbeiter sprechen",
        "quiero hablar con una persona",
    ],
)
def test_the_ways_of_asking_for_a_person(text: str) -> None:
    from rapport.bot.service import asks_for_a_person

    assert asks_for_a_person(text)
    assert not asks_for_a_person("the person who delivered my parcel was kind")


def test_an_intent_changes_only_what_a_patch_sends(client: TestClient, world: World) -> None:
    # A PATCH replaced the whole intent: leaving out integration_id unlinked its integration.
    link = client.post(
        "/api/v1/bot/integrations",
        json={"name": "orders", "url": "https://shop.example/orders/{{ order_number }}"},
        headers=auth(world.alice),
    ).json()["id"]
    made = client.post(
        "/api/v1/bot/intents",
        json={"name": "order_status", "reply": "It is {{ status }}", "integration_id": link},
        headers=auth(world.alice),
    ).json()
    url = f"/api/v1/bot/intents/{made['id']}"
    r = client.patch(url, json={"reply": "Your order: {{ status }}"}, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "order_status" and r.json()["integration_id"] == link
    assert r.json()["reply"] == "Your order: {{ status }}"
    r = client.patch(url, json={"integration_id": None}, headers=auth(world.alice))
    assert r.json()["integration_id"] is None and r.json()["reply"] == "Your order: {{ status }}"
    assert client.patch(url, json={"name": None}, headers=auth(world.alice)).status_code == 422


def test_an_order_status_intent_answers_from_the_shops_service(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    shop: tuple[str, type[Shop]],
) -> None:
    set_up_bot(client, world, world.acme.inbox.id, shop)  # type: ignore[union-attr]
    conv_id = ask(client, world, "q1", "where is my order 1042?")
    work(database, settings)
    (answer,) = bot_messages(thread(client, world, conv_id))
    assert answer["text"] == "Order 1042 is shipped with DHL, expected Thursday."
    assert answer["meta"]["bot"]["integration"] == "orders"
    assert shop[1].seen == ["/orders/1042"]
    # An order the shop does not know: the lookup fails, and a person takes over.
    other = ask(client, world, "q2", "where is my order 9999?", email="ann@example.com")
    work(database, settings)
    conv = thread(client, world, other)
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert "lookup failed" in note["text"]


def test_two_close_intents_make_the_bot_ask_then_two_misses_hand_over(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    client.put(
        f"/api/v1/bot/inboxes/{world.acme.inbox.id}",  # type: ignore[union-attr]
        json={"enabled": True, "answer_threshold": 0.99, "clarify_margin": 0.9},
        headers=auth(world.alice),
    )
    conv_id = ask(client, world, "q1", "order open")
    work(database, settings)
    (question,) = bot_messages(thread(client, world, conv_id))
    assert question["text"].startswith("Just to be sure: is this about")
    assert "opening hours" in question["text"] and "order status" in question["text"]
    ask(client, world, "q2", "order open")  # still unclear: a second miss
    work(database, settings)
    ask(client, world, "q3", "open order")
    work(database, settings)
    conv = thread(client, world, conv_id)
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert "the bot missed twice" in note["text"]


def test_routing_leaves_the_bots_conversations_until_it_hands_over(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    from rapport.conversations import routing

    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    set_up_bot(client, world, inbox_id)
    client.put(  # hand over to any agent of the workspace
        f"/api/v1/bot/inboxes/{inbox_id}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.patch(
        f"/api/v1/inboxes/{inbox_id}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    answered = ask(client, world, "q1", "what are your opening hours?")
    work(database, settings)
    with database.session() as db:
        routing.assign_waiting(db, workspace_id=world.acme.workspace.id)
    assert thread(client, world, answered)["assignee_id"] is None  # still the bot's
    handed = ask(client, world, "q2", "I want a person", email="other@example.com")
    work(database, settings)
    assert thread(client, world, handed)["assignee_id"] is not None


def test_a_hand_over_in_an_inbox_that_does_not_auto_assign_leaves_it_to_the_agents(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The hand-over queued a route job whatever the inbox said, and the job did not ask:
    # bob, online, was given a conversation of an inbox that leaves assigning to people.
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    set_up_bot(client, world, inbox_id)
    client.put(  # hand over to any agent of the workspace
        f"/api/v1/bot/inboxes/{inbox_id}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    work(database, settings)  # the passes bob's coming online and the team's set-up queued
    with database.session(write=False) as db:
        before = set(db.scalars(select(Job.id)))
    conv_id = ask(client, world, "n1", "I want a person")
    work(database, settings)
    conv = thread(client, world, conv_id)
    assert bot_messages(conv)[0]["meta"]["bot"]["source"] == "handover"
    assert conv["assignee_id"] is None
    with database.session(write=False) as db:  # nothing routed since bob came online
        routings = select(Job.name).where(
            Job.name.in_(["route", "route_waiting"]), Job.id.not_in(before)
        )
        assert db.scalars(routings).all() == []


def test_a_hand_over_that_opens_a_set_aside_conversation_routes_it_once(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Opening it again queued a pass over the queue, and the hand-over its own route job
    # on top: two routings of one conversation, in one transaction.
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    set_up_bot(client, world, inbox_id)
    client.put(  # hand over to any agent of the workspace
        f"/api/v1/bot/inboxes/{inbox_id}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.patch(
        f"/api/v1/inboxes/{inbox_id}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    conv_id = ask(client, world, "o1", "I want a person")
    client.post(
        f"/api/v1/conversations/{conv_id}/status",
        json={"status": "pending"},
        headers=auth(world.bob),
    ).raise_for_status()
    with database.session(write=False) as db:
        before = set(db.scalars(select(Job.id)))
    work(database, settings)
    conv = thread(client, world, conv_id)
    assert conv["status"] == "open" and conv["assignee_id"] == world.acme.users["bob"].id
    with database.session(write=False) as db:
        routings = [
            name
            for job_id, name in db.execute(select(Job.id, Job.name))
            if job_id not in before and name in ("route", "route_waiting")
        ]
    assert routings == ["route_waiting"]


def test_a_resolved_conversation_is_the_bots_again_when_the_customer_writes_back(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    set_up_bot(client, world, inbox_id)
    client.put(  # hand over to any agent of the workspace
        f"/api/v1/bot/inboxes/{inbox_id}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.patch(
        f"/api/v1/inboxes/{inbox_id}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    bob = world.acme.users["bob"].id
    conv_id = ask(client, world, "r1", "I want a person")
    work(database, settings)
    assert thread(client, world, conv_id)["assignee_id"] == bob
    # With a person, still open: the bot stays out of it.
    ask(client, world, "r2", "what are your opening hours?")
    work(database, settings)
    assert len(bot_messages(thread(client, world, conv_id))) == 1
    for path, body in (("messages", {"text": "9 to 6"}), ("status", {"status": "resolved"})):
        client.post(
            f"/api/v1/conversations/{conv_id}/{path}", json=body, headers=auth(world.bob)
        ).raise_for_status()

    # Days later the customer writes again: the conversation reopens, and the bot answers.
    assert ask(client, world, "r3", "what are your opening hours?") == conv_id
    work(database, settings)
    conv = thread(client, world, conv_id)
    assert conv["status"] == "open"
    *_, answer = bot_messages(conv)
    assert answer["meta"]["bot"]["source"] == "intent", answer
    # When it needs a person again, the agent who had it has it again.
    ask(client, world, "r4", "can I talk to a human please")
    work(database, settings)
    conv = thread(client, world, conv_id)
    assert bot_messages(conv)[-1]["meta"]["bot"]["source"] == "handover"
    assert conv["assignee_id"] == bob
    assert len([m for m in conv["messages"] if m["kind"] == "note"]) == 2

    # An agent who takes a conversation the bot holds silences it at once.
    other = ask(client, world, "r5", "what are your opening hours?", email="ann@example.com")
    work(database, settings)
    client.post(
        f"/api/v1/conversations/{other}/assign",
        json={"assignee_id": bob},
        headers=auth(world.bob),
    ).raise_for_status()
    ask(client, world, "r6", "and on saturday?", email="ann@example.com")
    work(database, settings)
    assert len(bot_messages(thread(client, world, other))) == 1


def test_after_a_hand_over_a_new_conversation_starts_with_the_bot(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    client.patch(
        "/api/v1/workspace",
        json={"settings": {"reopen_window_hours": 0}},
        headers=auth(world.alice),
    ).raise_for_status()
    first = ask(client, world, "n1", "I want a person")
    work(database, settings)
    client.post(
        f"/api/v1/conversations/{first}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    ).raise_for_status()
    second = ask(client, world, "n2", "what are your opening hours?")
    assert second != first
    work(database, settings)
    (answer,) = bot_messages(thread(client, world, second))
    assert answer["meta"]["bot"]["source"] == "intent"


def test_a_bot_answer_is_not_a_person_answering(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    from rapport.bot import service as bot
    from rapport.conversations.models import Message

    set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Std", "first_response_minutes": 60, "next_response_minutes": 60},
        headers=auth(world.alice),
    ).raise_for_status()

    def waiting() -> list[str]:
        r = client.get("/api/v1/conversations", params={"sort": "waiting"}, headers=auth(world.bob))
        return [c["id"] for c in r.json()["items"]]

    def sla_of(conv: str) -> dict:  # type: ignore[type-arg]
        return client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()  # type: ignore[no-any-return]

    conv_id = ask(client, world, "w1", "what are your opening hours?")
    work(database, settings)
    (answer,) = bot_messages(thread(client, world, conv_id))
    assert answer["meta"]["bot"]["source"] == "intent"
    # The customer has an answer, but not from a person: still waiting, clock running.
    assert conv_id in waiting()
    assert thread(client, world, conv_id)["first_response_at"] is None
    assert sla_of(conv_id)["first_response_due_at"] is not None
    client.post(
        f"/api/v1/conversations/{conv_id}/messages", json={"text": "hi"}, headers=auth(world.bob)
    ).raise_for_status()
    assert conv_id not in waiting()
    assert thread(client, world, conv_id)["first_response_at"] is not None
    assert sla_of(conv_id)["first_response_due_at"] is None

    # A bot answer the customer says helped did resolve the question: no longer waiting,
    # the response clock stops; still no human first response on record.
    other = ask(client, world, "w2", "what are your opening hours?", email="ann@example.com")
    work(database, settings)
    (helped,) = bot_messages(thread(client, world, other))
    with database.session() as db:
        message = db.get(Message, helped["id"])
        assert message is not None
        bot.rate(db, message=message, helpful=True)
    assert other not in waiting()
    assert sla_of(other)["first_response_due_at"] is None
    assert thread(client, world, other)["first_response_at"] is None

    # Resolving without a word: nobody waits on a resolved conversation.
    third = ask(client, world, "w3", "I want a person", email="cy@example.com")
    work(database, settings)
    (notice,) = bot_messages(thread(client, world, third))
    with database.session() as db:  # "a colleague will reply" is no answer, however liked
        message = db.get(Message, notice["id"])
        assert message is not None
        bot.rate(db, message=message, helpful=True)
    assert third in waiting()
    client.post(
        f"/api/v1/conversations/{third}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    ).raise_for_status()
    assert third not in waiting()


def test_the_bot_hands_over_without_a_word_to_a_customer_who_opted_out_of_the_channel(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],  # noqa: F811
    inbox: str,  # noqa: F811
) -> None:
    # The bot answered on WhatsApp a customer who had withdrawn their WhatsApp consent;
    # refused, its job failed and nobody (the bot holding the conversation) took it up.
    ids = set_up_bot(client, world, inbox)
    post_signed(client, inbox, message_event("wamid.C1", "Can I return an item for a refund?"))
    work(database, settings)

    def sent() -> int:
        return len([p for p, _, _ in graph[1].calls if p.endswith("/messages")])

    assert sent() == 1
    conv_id = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"][0]["id"]
    customer = thread(client, world, conv_id)["customer_id"]
    r = client.post(
        f"/api/v1/customers/{customer}/consents",
        json={"channel": "whatsapp", "purpose": "all", "granted": False, "source": "phone call"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    post_signed(client, inbox, message_event("wamid.C2", "what are your opening hours?"))
    work(database, settings)
    assert sent() == 1
    conv = thread(client, world, conv_id)
    assert len(bot_messages(conv)) == 1  # the first answer only: no reply, no "a colleague..."
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert note["text"].startswith(
        "Bot handed over: the customer opted out of WhatsApp on "
    ) and note["text"].split("\n")[0].endswith("(phone call).")
    assert conv["team_id"] == ids["team"]


def test_the_bot_calls_no_integration_for_an_answer_that_cannot_go(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],  # noqa: F811
    inbox: str,  # noqa: F811
    shop: tuple[str, type[Shop]],
) -> None:
    # The shop's order service was asked for the order of a customer who had withdrawn
    # their WhatsApp consent, only for the answer to be refused and a person to take over:
    # an outside call, with its cost and side effects, for nothing.
    ids = set_up_bot(client, world, inbox, shop)
    post_signed(client, inbox, message_event("wamid.O1", "Can I return an item for a refund?"))
    work(database, settings)
    conv_id = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"][0]["id"]
    customer = thread(client, world, conv_id)["customer_id"]
    r = client.post(
        f"/api/v1/customers/{customer}/consents",
        json={"channel": "whatsapp", "purpose": "all", "granted": False, "source": "phone call"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    post_signed(client, inbox, message_event("wamid.O2", "where is my order 1042?"))
    work(database, settings)
    assert shop[1].seen == []
    conv = thread(client, world, conv_id)
    assert len(bot_messages(conv)) == 1  # the first answer only
    (note,) = [m for m in conv["messages"] if m["kind"] == "note"]
    assert note["text"].startswith("Bot handed over: the customer opted out of WhatsApp on ")
    assert conv["team_id"] == ids["team"]


@pytest.mark.parametrize(
    "asked,said",
    [
        (
            "what are your opening hours?",
            "Bot handed over: the customer never wrote to the page of “Shop”.\n",
        ),
        (
            "hi",
            "Bot handed over: no confident answer.\n"
            "The customer was not told: the customer never wrote to the page of “Shop”.\n",
        ),
    ],
    ids=["an answer", "a hand-over"],
)
def test_the_bot_hands_over_without_a_word_to_a_customer_whose_id_is_another_pages(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],  # noqa: F811
    asked: str,
    said: str,
) -> None:
    # Its answer through a page the customer's id no longer belongs to raised NotThisPage
    # out of the bot's job, tried again until dead, and nobody took the conversation up
    # (the bot holding it), where a customer who opted out is handed over with a note.
    url, handler = provider
    shop = page_inbox(client, world, "messenger", "Shop", "PAGE_A", url)
    desk = page_inbox(client, world, "messenger", "Help desk", "PAGE_B", url)
    ids = set_up_bot(client, world, shop)
    work(database, settings)  # the training the set-up queued
    item = {"timestamp": 1, "message": {"mid": "m_A", "text": asked}}
    event = meta_event("page", item, page="PAGE_A", sender="111")
    assert meta_post(client, "messenger", shop, event).status_code == 200
    with database.session() as db:
        db.execute(update(Identity).where(Identity.value == "111").values(inbox_id=desk))
    work(database, settings)
    assert handler.calls == []
    conv_id = client.get(
        "/api/v1/conversations", params={"inbox_id": shop}, headers=auth(world.bob)
    ).json()["items"][0]["id"]
    found = thread(client, world, conv_id)
    assert bot_messages(found) == []  # no answer, no "a colleague will reply"
    (note,) = [m for m in found["messages"] if m["kind"] == "note"]
    assert note["text"].startswith(said)
    assert found["team_id"] == ids["team"]
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).where(Job.state == JobState.dead)) == 0


@postgresql_only
def test_the_bots_look_ahead_at_the_reply_cap_does_not_hold_the_customer(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    shop: tuple[str, type[Shop]],
) -> None:
    # Before calling an integration the bot checks the answer could go, the automatic
    # reply cap among it. That check held the customer's row in the reading session: it
    # waited behind whoever held the customer (a merge, their next message), and kept
    # them waiting in turn. Now it counts only; the reply is checked again, held, as it
    # is written.
    from rapport.conversations.models import Message
    from rapport.customers.models import Customer

    set_up_bot(client, world, world.acme.inbox.id, shop)  # type: ignore[union-attr]
    conv_id = ask(client, world, "q1", "where is my order 1042?")
    with database.session(write=False) as db:
        message_id = db.scalar(select(Message.id).where(Message.conversation_id == conv_id))
    customer_id = thread(client, world, conv_id)["customer_id"]
    box = box_for(settings.secret_key.get_secret_value())
    done: list[str] = []
    with database.session() as held:
        held.execute(
            select(Customer.id).where(Customer.id == customer_id).with_for_update(key_share=True)
        )
        worker = threading.Thread(
            target=lambda: done.append(
                bot_service.handle(
                    database,
                    message_id=str(message_id),
                    box=box,
                    base_url=settings.public_url,
                    allow_private=True,
                )
            )
        )
        worker.start()
        deadline = time.monotonic() + 5
        while not shop[1].seen and time.monotonic() < deadline:
            time.sleep(0.05)
        asked_while_held = list(shop[1].seen)
    worker.join(10)
    assert asked_while_held == ["/orders/1042"]
    assert len(done) == 1, "the bot's job did not end once the customer was free"
    (answer,) = bot_messages(thread(client, world, conv_id))
    assert answer["text"] == "Order 1042 is shipped with DHL, expected Thursday."
