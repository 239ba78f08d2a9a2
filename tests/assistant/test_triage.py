"""Triage of every inbound message, rules that use it, and what a workspace teaches it."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.assistant import training, triage
from rapport.assistant.models import TriageModel
from rapport.channels.models import Inbox
from rapport.config import Settings
from rapport.conversations import service as conversations
from rapport.conversations.models import Conversation, ConversationLabel
from rapport.crypto import box_for
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from rapport.jobs.worker import Worker
from tests.conftest import auth, pause_first_fit
from tests.factories import World, planted_pickle


def test_the_text_alone_tells_language_sentiment_spam_and_urgency() -> None:
    angry = triage.triage("This is ridiculous, my card was charged twice and nobody answers!!")
    assert angry["language"] == "en"
    assert angry["sentiment"] == "negative" and angry["sentiment_score"] < -0.35
    assert angry["priority"] == "high" and angry["spam"] is False
    happy = triage.triage("Thank you so much, the new plan works great!")
    assert happy["sentiment"] == "positive" and happy["priority"] is None
    french = triage.triage("Bonjour, je voudrais changer mon adresse de livraison s'il vous plaît")
    assert french["language"] == "fr" and french["sentiment"] is None
    assert triage.triage("ok")["language"] is None
    outage = triage.triage("Your whole site is down for all our users")
    assert outage["priority"] == "urgent"
    spam = triage.triage(
        "Best SEO services and backlinks! http://a.example http://b.example http://bit.ly/x"
    )
    assert spam["spam"] is True and len(spam["spam_signals"]) >= 2
    assert "bait words (backlinks, seo services)" in spam["spam_signals"]
    # Whatever the case it is written in.
    assert triage.priority("OUR WHOLE SITE IS DOWN", 0.0) == "urgent"
    assert triage.priority("I Can't Log In, ASAP please", 0.0) == "high"
    assert triage.spam_signals("CLAIM YOUR PRIZE at our CASINO") == [
        "bait words (casino, claim your prize)",
        "repeated bait",
    ]


def test_every_inbound_message_carries_its_triage(client: TestClient, world: World) -> None:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "t-1",
            "text": "I am really angry, the order arrived broken and support is useless",
            "from": {"email": "angry@example.com"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    conv = client.get(
        f"/api/v1/conversations/{r.json()['conversation_id']}", headers=auth(world.bob)
    ).json()
    (message,) = conv["messages"]
    found = message["meta"]["triage"]
    assert found["sentiment"] == "negative" and found["language"] == "en"
    assert set(found) >= {"language", "sentiment", "sentiment_score", "spam", "priority"}


def test_a_rule_routes_negative_messages_to_a_team(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    team = client.post(
        "/api/v1/teams", json={"name": "Escalations"}, headers=auth(world.alice)
    ).json()
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "angry customers to escalations",
            "event": "message.received",
            "conditions": [{"field": "message.sentiment", "op": "equals", "value": "negative"}],
            "actions": [{"type": "assign_team", "value": team["id"]}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    ids = {}
    for ext, text in (
        ("calm", "Hello, could you tell me your opening hours?"),
        ("angry", "This is terrible, I am furious, worst service ever"),
    ):
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": text, "from": {"email": f"{ext}@example.com"}},
            headers=auth(world.bob),
        )
        ids[ext] = r.json()["conversation_id"]
    Worker(database, settings).run_until_idle(max_jobs=50)
    teams = {
        k: client.get(f"/api/v1/conversations/{v}", headers=auth(world.bob)).json()["team_id"]
        for k, v in ids.items()
    }
    assert teams == {"calm": None, "angry": team["id"]}


def label_examples(database: Database, settings: Settings, inbox: Inbox) -> None:
    """24 conversations, each labelled with its category (billing or login)."""
    examples = {
        "billing": [
            "I was charged twice this month",
            "please refund my last invoice",
            "my invoice shows the wrong amount",
            "how do I update my credit card",
            "cancel my subscription and refund me",
            "the payment failed but money left my account",
            "why is there an extra fee on my bill",
            "I need a copy of my receipt",
            "change the billing address on my invoices",
            "you billed me after I cancelled",
            "discount code was not applied to my payment",
            "can I pay by bank transfer instead of card",
        ],
        "login": [
            "I cannot log in to my account",
            "password reset email never arrives",
            "my two factor code is rejected",
            "the login page says my account is locked",
            "how do I change my password",
            "I forgot my username",
            "sign in keeps failing with an error",
            "my session expires every minute",
            "I lost the phone with my authenticator app",
            "cannot access my account after changing email",
            "the reset password link has expired",
            "single sign on does not work for me",
        ],
    }
    with database.session() as db:
        for label, texts in examples.items():
            for i, text in enumerate(texts):
                stored = receive(
                    db,
                    InboundMessage(
                        inbox_id=inbox.id,
                        external_id=f"{label}-{i}",
                        text=text,
                        handles=[handle(IdentityKind.email, f"{label}{i}@example.com")],
                    ),
                    settings=settings,
                )
                conversations.add_labels(db, conversation=stored.conversation, labels=[label])


def test_a_workspace_teaches_triage_its_own_categories(
    client: TestClient, world: World, database: Database, settings: Settings, tmp_path: Path
) -> None:
    inbox = world.acme.inbox
    assert inbox is not None
    box = box_for(settings.secret_key.get_secret_value())
    label_examples(database, settings, inbox)
    assert training.train(database, world.acme.workspace.id, box) == {"category": 24}
    with database.session() as db:
        stored = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="new-1",
                text="I was charged twice and want a refund of the invoice",
                handles=[handle(IdentityKind.email, "newbie@example.com")],
            ),
            settings=settings,
        )
        assert stored.message.meta["triage"]["category"] == "billing"
        assert db.scalar(select(Conversation.id).where(Conversation.id == stored.conversation.id))
    # Through the API channel (the group-committing writer): the same category.
    r = client.post(
        f"/api/v1/inboxes/{inbox.id}/messages",
        json={
            "external_id": "new-2",
            "text": "my password reset link has expired and I cannot log in",
            "from": {"email": "newbie2@example.com"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    conv = client.get(
        f"/api/v1/conversations/{r.json()['conversation_id']}", headers=auth(world.bob)
    ).json()
    assert conv["messages"][0]["meta"]["triage"]["category"] == "login"

    # A model someone else wrote into the database (unpickling it would create a file) is
    # not loaded, and messages are stored, triaged without it.
    marker = tmp_path / "ran"
    with database.session() as db:
        db.execute(update(TriageModel).values(model=planted_pickle(marker)))
    triage.forget_cached(world.acme.workspace.id)
    r = client.post(
        f"/api/v1/inboxes/{inbox.id}/messages",
        json={"external_id": "new-3", "text": "refund my invoice", "from": {"email": "n3@x.org"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    triaged = r.json()["meta"]["triage"]
    assert triaged["category"] is None and triaged["sentiment"] == "neutral"
    assert not marker.exists()


def test_triage_learns_with_no_lock_held_and_never_from_what_was_erased_meanwhile(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The nightly training fits for seconds (a large workspace: tens). Meanwhile the inbox
    # goes on, and a conversation it is learning from may be erased: a model must never
    # keep words that are gone, so it learns again from what is there.
    inbox = world.acme.inbox
    assert inbox is not None
    label_examples(database, settings, inbox)
    box = box_for(settings.secret_key.get_secret_value())
    paused = pause_first_fit(monkeypatch)
    outcome: list[object] = []
    trainer = threading.Thread(
        target=lambda: outcome.append(training.train(database, world.acme.workspace.id, box))
    )
    trainer.start()
    try:
        assert paused.fitting.wait(30)
        with database.session(write=False) as db:
            gone = db.scalar(  # the customer of a conversation it is learning from
                select(Conversation.customer_id)
                .join(ConversationLabel, ConversationLabel.conversation_id == Conversation.id)
                .order_by(Conversation.created_at)
                .limit(1)
            )
        with ThreadPoolExecutor(1) as pool:  # waiting on a lock would hang, not fail
            stored = pool.submit(
                client.post,
                f"/api/v1/inboxes/{inbox.id}/messages",
                json={"external_id": "meanwhile", "text": "hi", "from": {"email": "m@x.org"}},
                headers=auth(world.bob),
            ).result(timeout=30)
            erased = pool.submit(
                client.delete, f"/api/v1/customers/{gone}", headers=auth(world.alice)
            ).result(timeout=30)
        assert stored.status_code == 201, stored.text
        assert erased.status_code == 204, erased.text
    finally:
        paused.release.set()
        trainer.join(60)
    assert paused.sizes == [24, 23]
    assert outcome == [{"category": 23}]
    with database.session(write=False) as db:
        (model,) = db.scalars(select(TriageModel)).all()
        assert model.examples == 23


def test_a_server_process_runs_native_math_on_one_thread() -> None:
    # In a process of its own (the limit is for the life of the process that sets it),
    # started with two threads each, whatever this machine's cores would give.
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, threadpoolctl\n"
        "from rapport.assistant import classify, one_compute_thread\n"
        "one_compute_thread()\n"
        "print(json.dumps([(i['internal_api'], i['num_threads'])"
        " for i in threadpoolctl.threadpool_info()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pools = json.loads(out)
    assert {api for api, _ in pools} >= {"openblas"}  # numpy's BLAS at least was found
    assert all(threads == 1 for _, threads in pools), pools


def test_two_threads_warming_up_at_once_load_the_language_model_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # functools.cache holds no lock: the app's warm-up and the first message each loaded it.
    from py3langid.langid import LanguageIdentifier

    loads: list[int] = []
    original = LanguageIdentifier.from_modelpath

    def slow(*args: Any, **kwargs: Any) -> Any:
        loads.append(threading.get_ident())
        time.sleep(0.3)  # long enough for the other thread to ask meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(LanguageIdentifier, "from_modelpath", slow)
    triage._language_model.cache_clear()
    together = threading.Barrier(2)
    got: list[Any] = []

    def ask() -> None:
        together.wait()
        got.append(triage._language_model())

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(loads) == 1 and len(got) == 2 and got[0] is got[1]
    assert triage.detect_language("Bonjour, je voudrais annuler ma commande")[0] == "fr"
