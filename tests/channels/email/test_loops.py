"""Mail that answers mail by itself: what Rapport sends on its own says so (RFC 3834), so
that no responder answers it and two never answer each other
(tests/channels/email/test_email.py has the SMTP frame)."""

from email import message_from_bytes, policy

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.worker import Worker
from rapport.mail import send_mail
from tests.channels.email.test_email import Outbox, conversations, customer_mail, send
from tests.conftest import auth
from tests.factories import World


def test_a_rules_automatic_answer_says_it_is_automatic_and_an_autoresponder_does_not_loop(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # A rule's "thanks, we got it" went out as any agent's reply: the customer's vacation
    # responder answered it, and a rule on each message answered that, without end.
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "Acknowledge",
            "event": "message.received",
            "actions": [{"type": "send_message", "value": "We got your mail."}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    send(smtp_port, customer_mail("Where is my parcel?"))
    Worker(database, settings).run_until_idle()
    [ack] = [message_from_bytes(m, policy=policy.default) for m in outbox[0].messages]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    # The responder that answers anyway marks its answer: recorded, answered by no rule.
    send(
        smtp_port,
        customer_mail(
            "I am away.", Auto_Submitted="auto-replied", In_Reply_To=str(ack["Message-ID"])
        ),
    )
    Worker(database, settings).run_until_idle()
    assert len(outbox[0].messages) == 1
    [conv] = conversations(client, world, mail_inbox)
    assert conv["messages_count"] == 3


def test_an_agents_own_reply_is_not_said_to_be_automatic(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    send(smtp_port, customer_mail("Hello"))
    [conv] = conversations(client, world, mail_inbox)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Hi Dana"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    [reply] = [message_from_bytes(m, policy=policy.default) for m in outbox[0].messages]
    assert "Auto-Submitted" not in reply and "X-Auto-Response-Suppress" not in reply


def test_rapports_own_mail_is_automatic_and_takes_any_subject(
    settings: Settings, relay: Outbox
) -> None:
    # An agent's out-of-office answered a team alert to the support address it came from,
    # and a customer's name with a line break in it (typed in the chat widget) made the
    # alert's Subject refused: the job failed and nobody was told.
    send_mail(
        settings, to="bob@acme.test", subject="[Support] Ann\r\nBcc: x@evil.test: new", text="hi"
    )
    [sent] = [message_from_bytes(m, policy=policy.default) for m in relay.messages]
    assert sent["Auto-Submitted"] == "auto-generated"
    assert sent["Subject"] == "[Support] Ann Bcc: x@evil.test: new"
    assert "Bcc" not in sent and relay.recipients == [["bob@acme.test"]]
