"""Internationalized email domains, as IDNA 2008 (what mail systems use) writes them."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text

from rapport import migrate
from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation, Direction, Message
from rapport.customers.identity import InvalidHandle, normalize_email
from rapport.customers.models import Customer, Identity, MergeSuggestion
from rapport.db import Base, Database
from rapport.workspaces.models import Workspace
from tests.conftest import auth
from tests.factories import World


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("kim@faß.de", "kim@xn--fa-hia.de"),  # IDNA 2003 made it fass.de, another domain
        ("Kim@FASS.de", "kim@fass.de"),
        ("w@Bücher.example", "w@xn--bcher-kva.example"),
        ("w@xn--bcher-kva.example", "w@xn--bcher-kva.example"),
        ("a@ΣΊΣΥΦΟΣ.gr", "a@xn--kxa6akbbkh.gr"),
        ("a@ＢＵＣＨＥＲ.example", "a@bucher.example"),  # full-width letters, mapped
        ("a@mail_x.bücher.de", "a@mail_x.xn--bcher-kva.de"),  # an ASCII label as written
        ("a@i❤.ws", None),  # a symbol: IDNA 2003 took it, IDNA 2008 does not
        ("a@x.\u0301b.de", None),
    ],
)
def test_an_internationalized_domain_is_written_as_idna_2008_says(
    written: str, kept: str | None
) -> None:
    if kept is None:
        with pytest.raises(InvalidHandle):
            normalize_email(written)
    else:
        assert normalize_email(written) == kept


@pytest.mark.parametrize(
    "written",
    [
        "a@x.example,b@y.example",  # a list: a header sends to both
        "a@x.example;b@y.example",
        "team:a@x.example",  # a group
        "victim@x.example<a@y.example>",  # shown as one, sent to another
        '"a,b"@x.example',
        "a(comment)@x.example",
        "a\\b@x.example",
        "a@[192.0.2.1]",
        "a@b@x.example",
        "a\r\nBcc: b@y.example",
        "a\tb@x.example",
    ],
)
def test_an_email_address_is_one_mailbox_and_nothing_a_header_reads_as_more(
    client: TestClient, world: World, written: str
) -> None:
    with pytest.raises(InvalidHandle):
        normalize_email(written)
    r = client.post(
        "/api/v1/customers", json={"name": "Kim", "email": written}, headers=auth(world.bob)
    )
    assert r.status_code == 422, r.text


def test_the_person_at_fass_de_and_the_one_at_fass_with_sharp_s_are_two_customers(
    client: TestClient, world: World
) -> None:
    first = client.post(
        "/api/v1/customers", json={"name": "Kim", "email": "kim@faß.de"}, headers=auth(world.bob)
    )
    assert first.status_code == 201, first.text
    assert first.json()["email"] == "kim@xn--fa-hia.de"
    other = client.post(
        "/api/v1/customers", json={"name": "Kim S", "email": "kim@fass.de"}, headers=auth(world.bob)
    )
    # IDNA 2003 wrote both as kim@fass.de: a 409, the second person refused as the first.
    assert other.status_code == 201, other.text
    assert other.json()["email"] == "kim@fass.de"


def test_a_domain_idna_2008_refuses_is_a_problem_not_an_error(
    client: TestClient, world: World
) -> None:
    r = client.post(
        "/api/v1/customers", json={"name": "Heart", "email": "a@i❤.ws"}, headers=auth(world.bob)
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "i❤.ws" in r.json()["detail"]


@pytest.fixture
def empty_url(database_url: str) -> str:
    """The test database emptied of every table, so only the migrations build it."""
    db = Database(database_url, pool_size=1)
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
            conn.execute(text("DROP TABLE IF EXISTS messages_fts"))
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()
    return database_url


def test_handles_idna_2003_wrote_as_another_domain_are_written_again_from_the_mail_sent(
    empty_url: str,
) -> None:
    migrate.upgrade(empty_url, "0036")
    db = Database(empty_url, pool_size=1)
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        inbox = Inbox(workspace_id=ws.id, name="mail", channel="email", settings={})
        s.add(inbox)
        names = ("kim", "both", "taken", "holder", "typed", "legacy", "plain")
        people = {n: Customer(workspace_id=ws.id, name=n, attributes={}) for n in names}
        s.add_all(people.values())
        s.flush()

        def known(name: str, value: str) -> None:
            s.add(
                Identity(
                    workspace_id=ws.id,
                    customer_id=people[name].id,
                    kind="email",
                    value=value,
                    verified=True,
                )
            )
            people[name].email = people[name].email or value

        def wrote(name: str, sender: str) -> None:
            conv = Conversation(workspace_id=ws.id, customer_id=people[name].id, inbox_id=inbox.id)
            s.add(conv)
            s.flush()
            # Not through the ORM: its flush indexes a mail's addresses, in a table (0040)
            # this revision does not have yet.
            s.execute(
                insert(Message.__table__).values(
                    workspace_id=ws.id,
                    conversation_id=conv.id,
                    inbox_id=inbox.id,
                    direction=Direction.inbound,
                    sender_type="customer",
                    sender_id=people[name].id,
                    text="hi",
                    meta={"email": {"from": sender, "full_text": "Mit freundlichen Grüßen"}},
                )
            )

        known("kim", "kim@fass.de")  # she only ever wrote from faß.de
        wrote("kim", "kim@faß.de")
        wrote("kim", "KIM@Faß.de")
        known("both", "jo@strasse.de")  # two people, one from straße.de, one from strasse.de
        wrote("both", "jo@straße.de")
        wrote("both", "jo@strasse.de")
        known("taken", "al@fass.de")  # wrote from faß.de, whose new form another holds
        wrote("taken", "al@faß.de")
        known("holder", "al@xn--fa-hia.de")
        known("typed", "ty@fass.de")  # typed in, no mail: nothing tells
        known("legacy", "le@bücher.example")  # stored before domains were encoded
        known("plain", "pl@example.com")
        wrote("plain", "pl@example.com")
    migrate.upgrade(empty_url)
    with db.session(write=False) as s:
        handles = dict(
            s.execute(
                select(Customer.name, Identity.value).join(
                    Identity, Identity.customer_id == Customer.id
                )
            ).all()
        )
        shown = dict(s.execute(select(Customer.name, Customer.email)).all())
        ids = {c.name: c.id for c in s.scalars(select(Customer))}
        suggested = [
            ({r.left_id, r.right_id}, r.status) for r in s.scalars(select(MergeSuggestion))
        ]
    assert handles == {
        "kim": "kim@xn--fa-hia.de",
        "both": "jo@strasse.de",
        "taken": "al@fass.de",
        "holder": "al@xn--fa-hia.de",
        "typed": "ty@fass.de",
        "legacy": "le@xn--bcher-kva.example",
        "plain": "pl@example.com",
    }
    assert shown == handles
    assert suggested == [({ids["taken"], ids["holder"]}, "pending")]
    db.dispose()
