"""An erasure, and a save of a mail that read the mail before it (a bounce, a delivery
receipt, a send's report): the erased address never comes back into the mail's lists, nor
into their index, and what the other save wrote stays."""

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from rapport.channels import email as email_channel
from rapport.channels.base import Outbound, SendResult
from rapport.channels.email import EmailChannel, ingest_email
from rapport.config import Settings
from rapport.conversations import addresses
from rapport.conversations import service as conversations
from rapport.conversations.models import (
    STATUS_AT,
    DeliveryStatus,
    Direction,
    Message,
    MessageAddress,
    MessageKind,
)
from rapport.customers.models import Customer
from rapport.customers.schemas import CustomerCreate
from rapport.customers.service import create
from rapport.db import Database, new_id
from rapport.jobs.worker import Worker
from rapport.privacy.erasure import erase_customer
from rapport.workspaces.models import Workspace
from tests.channels.email.test_copies import delivery_report, failed
from tests.channels.email.test_email import Outbox, customer_mail
from tests.channels.email.test_two_inboxes import sales_inbox
from tests.conftest import auth, postgresql_only
from tests.factories import World

WALTER = "walter@example.org"
GONE = "gone@example.net"


def walter_copied(
    database: Database, settings: Settings, world: World, mail_inbox: str
) -> tuple[str, str]:
    """Walter, a customer, copied on Dana's mail and on our reply to it (sent, with a copy
    to an address that is no more): his id and the reply's."""
    with database.session() as db:
        ws = db.get_one(Workspace, world.acme.workspace.id)
        walter = create(db, workspace=ws, data=CustomerCreate(name="Walter", email=WALTER)).id
        dana = ingest_email(
            db,
            bytes(customer_mail("Our invoice is wrong.", Cc=WALTER)),
            inbox_id=mail_inbox,
            settings=settings,
        )
        reply = conversations.add_message(
            db,
            conversation=dana.ingest.conversation,
            direction=Direction.outbound,
            kind=MessageKind.message,
            sender_type="user",
            sender_id=world.acme.users["bob"].id,
            text="Corrected.",
            external_id=f"<{new_id()}@acme.test>",
            status=DeliveryStatus.sent,
            meta={"email": {"cc": [WALTER, GONE]}},
        )
        return walter, reply.id


def erase(database: Database, customer_id: str) -> None:
    with database.session() as db:
        erase_customer(db, customer=db.get_one(Customer, customer_id))


def waiting_for_a_lock(database: Database) -> bool:
    """Whether a transaction of this database waits for a lock another holds (PostgreSQL)."""
    with database.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return bool(found.scalar())


def paused_after_reading(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str
) -> tuple[threading.Event, threading.Event]:
    """``owner.name`` made to say that it was reached (the save has read the mail) and wait
    to be let go before it does what it does."""
    real = getattr(owner, name)
    read, go = threading.Event(), threading.Event()

    def paused(*args: Any, **kwargs: Any) -> Any:
        read.set()
        assert go.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, paused)
    return read, go


def interleaved(
    database: Database,
    save: Callable[[], None],
    read: threading.Event,
    go: threading.Event,
    walter: str,
) -> None:
    """``save`` in a thread until it has read the mail, then Walter's erasure in another;
    once the erasure has committed, or waits for a lock the save holds, the save goes on."""
    outcome: dict[str, str] = {}

    def run(name: str, work: Callable[[], None]) -> None:
        try:
            work()
            outcome[name] = "done"
        except Exception as exc:  # noqa: BLE001 - reported below, whatever it is
            outcome[name] = repr(exc)[:300]

    saving = threading.Thread(target=run, args=("save", save))
    saving.start()
    assert read.wait(30)
    erasing = threading.Thread(target=run, args=("erase", lambda: erase(database, walter)))
    erasing.start()
    deadline = time.monotonic() + 30
    while erasing.is_alive() and not waiting_for_a_lock(database):
        assert time.monotonic() < deadline, "the erasure neither ended nor waited"
        time.sleep(0.01)
    go.set()
    saving.join(30)
    erasing.join(30)
    assert outcome == {"save": "done", "erase": "done"}


def listed_nowhere(database: Database, reply: str) -> Message:
    """The reply, which neither its lists nor their index list Walter in."""
    with database.session(write=False) as db:
        msg = db.get_one(Message, reply)
        assert WALTER not in json.dumps(msg.meta)
        held = db.scalars(
            select(MessageAddress.message_id).where(
                MessageAddress.address_key == addresses.key(WALTER)
            )
        ).all()
        assert held == []
        db.expunge(msg)
        return msg


@postgresql_only
def test_a_delivery_receipt_read_before_an_erasure_never_writes_the_address_back(
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The receipt read the reply (its lists naming Walter), the erasure took him out of
    # them and committed, and the receipt wrote its copy back with the time of delivery:
    # Walter was copied again, offered in the next reply's Cc.
    walter, reply = walter_copied(database, settings, world, mail_inbox)
    with database.session(write=False) as db:
        sent_as = db.get_one(Message, reply).external_id
    assert sent_as is not None
    read, go = paused_after_reading(monkeypatch, conversations, "_settle")

    def receipt() -> None:
        with database.session() as db:
            conversations.update_delivery(
                db,
                inbox_id=mail_inbox,
                external_id=sent_as,
                status=DeliveryStatus.delivered,
                error=None,
            )

    interleaved(database, receipt, read, go, walter)
    msg = listed_nowhere(database, reply)
    # Both stand: the receipt's status and time, the erasure's lists.
    assert msg.status == DeliveryStatus.delivered and "delivered" in msg.meta[STATUS_AT]
    assert msg.meta["email"]["cc"] == [GONE]


@postgresql_only
def test_a_bounce_read_before_an_erasure_never_writes_the_address_back(
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walter, reply = walter_copied(database, settings, world, mail_inbox)
    with database.session(write=False) as db:
        sent_as = db.get_one(Message, reply).external_id
    assert sent_as is not None
    # The bounce has read the reply and noted the copy that bounced; it stores the report
    # itself next.
    read, go = paused_after_reading(monkeypatch, email_channel, "receive")

    def bounce() -> None:
        with database.session() as db:
            ingest_email(
                db, delivery_report(sent_as, failed(GONE)), inbox_id=mail_inbox, settings=settings
            )

    interleaved(database, bounce, read, go, walter)
    msg = listed_nowhere(database, reply)
    assert msg.status == DeliveryStatus.sent  # a copy bounced: the customer had it
    assert msg.meta["email"] == {"cc": [GONE], "bounced": [GONE]}


@postgresql_only
def test_a_mails_copy_to_a_second_inbox_read_before_an_erasure_never_writes_it_back(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    outbox: tuple[Outbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same mail came to the sales inbox too: its copy found the one kept (listing
    # Walter), and wrote it back with the second inbox noted, after his erasure.
    sales = sales_inbox(client, world, outbox)
    with database.session() as db:
        ws = db.get_one(Workspace, world.acme.workspace.id)
        walter = create(db, workspace=ws, data=CustomerCreate(name="Walter", email=WALTER)).id
    mail = bytes(customer_mail("Can I buy a licence?", Cc=f"sales@acme.test, {WALTER}"))
    with database.session() as db:
        kept = ingest_email(db, mail, inbox_id=mail_inbox, settings=settings).message.id
    real = email_channel._copy_stored_elsewhere
    read, go = threading.Event(), threading.Event()

    def found_then_paused(*args: Any) -> Message | None:
        first = real(*args)
        read.set()
        assert go.wait(30)
        return first

    monkeypatch.setattr(email_channel, "_copy_stored_elsewhere", found_then_paused)

    def copy() -> None:
        with database.session() as db:
            assert ingest_email(db, mail, inbox_id=sales, settings=settings).message.id == kept

    interleaved(database, copy, read, go, walter)
    msg = listed_nowhere(database, kept)
    assert msg.meta["email"]["also_received_by"] == [sales]
    assert msg.meta["email"]["cc"] == ["sales@acme.test"]


def test_a_send_that_read_the_copies_before_an_erasure_never_reports_the_address_refused(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    outbox: tuple[Outbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The send reads the reply's copies in a transaction of its own, mails them outside any,
    # and records what came of it in a third: Walter, refused by his server and erased while
    # the mail went, came back as a refused copy (on SQLite too, whose writers take turns).
    walter, _ = walter_copied(database, settings, world, mail_inbox)
    with database.session(write=False) as db:
        conv = db.scalars(
            select(Message.conversation_id).where(Message.inbox_id == mail_inbox)
        ).first()
    outbox[0].refused = {WALTER, GONE}
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Thanks both.", "cc": [WALTER, GONE]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    ours = r.json()["id"]
    real = EmailChannel.send

    def erased_while_sending(self: EmailChannel, out: Outbound) -> SendResult:
        result = real(self, out)
        erase(database, walter)
        return result

    monkeypatch.setattr(EmailChannel, "send", erased_while_sending)
    Worker(database, settings).run_until_idle(max_jobs=20)
    assert outbox[0].recipients == [["dana@example.org"]]  # the send had read him
    msg = listed_nowhere(database, ours)
    assert msg.status == DeliveryStatus.sent
    assert msg.meta["delivery"]["refused_copies"] == [GONE]
