"""Files as people's tools write them: BOMs, semicolons, headers in any case."""

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.config import Settings
from rapport.conversations.models import Message
from rapport.customers import importer
from rapport.customers.identity import handle
from rapport.customers.models import (
    Customer,
    Identity,
    IdentityKind,
    MergeSuggestion,
    SuggestionStatus,
)
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from tests.conftest import auth
from tests.events.test_segment import basic, source
from tests.factories import World


def _upload(client: TestClient, world: World, body: bytes, **params: object) -> dict[str, object]:
    r = client.post(
        "/api/v1/customer-files/import", params=params, content=body, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _named(database: Database, world: World, name: str) -> Customer:
    with database.session(write=False) as db:
        found = db.scalar(
            select(Customer).where(
                Customer.workspace_id == world.acme.workspace.id, Customer.name == name
            )
        )
        assert found is not None, name
        db.expunge(found)
        return found


def test_a_jsonl_file_with_a_bom_imports_its_first_row(
    client: TestClient, world: World, database: Database
) -> None:
    body = '\ufeff{"name": "Bom First", "email": "first@bom.example"}\n'
    body += '{"name": "Bom Second", "email": "second@bom.example"}\n'
    report = _upload(client, world, body.encode(), format="jsonl")
    assert report["errors"] == [] and report["created"] == 2
    assert _named(database, world, "Bom First").email == "first@bom.example"


def test_a_csv_file_separated_by_semicolons_is_read_by_its_columns(
    client: TestClient, world: World, database: Database
) -> None:
    # As a spreadsheet in France or Germany saves "CSV": semicolons, a BOM, CRLF, and a
    # quoted field holding a semicolon and a line break.
    body = (
        "\ufeffname;email;phone;note\r\n"
        'Léa Martin;lea@example.fr;06 12 34 56 78;"VIP; call first\r\nafter 10"\r\n'
        "Jonas Weber;jonas@example.de;;\r\n"
    )
    report = _upload(client, world, body.encode())
    assert report["errors"] == [] and report["created"] == 2, report
    lea = _named(database, world, "Léa Martin")
    assert lea.email == "lea@example.fr"
    assert lea.attributes == {"note": "VIP; call first\r\nafter 10"}
    tabbed = "name\temail\nTab Person\ttab@example.com\n"
    assert _upload(client, world, tabbed.encode())["created"] == 1


def test_a_header_written_in_capitals_or_with_spaces_names_the_handles(
    client: TestClient, world: World, database: Database
) -> None:
    body = "Name, Email ,PHONE,Plan\nCapital Case,caps@example.com,+14155550111,pro\n"
    report = _upload(client, world, body.encode())
    assert report["errors"] == [] and report["created"] == 1, report
    person = _named(database, world, "Capital Case")
    assert (person.email, person.phone) == ("caps@example.com", "+14155550111")
    assert person.attributes == {"Plan": "pro"}


def test_rows_of_one_person_in_one_file_or_matching_a_phone_written_otherwise_update(
    client: TestClient, world: World, database: Database
) -> None:
    first = "name,email,phone\nRow Twice,twice@example.com,+1 415 555 0122\n"
    assert _upload(client, world, first.encode())["created"] == 1
    body = (
        "name,email,phone,plan\n"
        "Row Twice,,(415) 555-0122,gold\n"  # the number as written in the US, no email
        "New One,new@example.com,,free\n"
        "New One,NEW@example.com,,silver\n"  # the same person again in the same file
        "Broken,not-an-address,,free\n"
    )
    report = _upload(client, world, body.encode())
    assert report["created"] == 1 and report["updated"] == 2, report
    assert report["errors"] == [{"line": 5, "reason": "not an email address: 'not-an-address'"}]
    assert _named(database, world, "Row Twice").attributes == {"plan": "gold"}
    assert _named(database, world, "New One").attributes == {"plan": "silver"}
    with database.session(write=False) as db:
        values = db.scalars(
            select(Identity.value).where(Identity.workspace_id == world.acme.workspace.id)
        ).all()
    assert values.count("+14155550122") == 1 and values.count("new@example.com") == 1


def test_read_rows_splits_a_header_by_the_delimiter_that_makes_most_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "people.csv"
    path.write_text('"a;b",email\nx,y@example.com\n', encoding="utf-8")
    assert [row for _, row in importer.read_rows(path)] == [{"a;b": "x", "email": "y@example.com"}]


def test_an_imported_customer_is_found_by_the_sites_events_for_their_external_id(
    client: TestClient, world: World, database: Database
) -> None:
    # The site's user id in the admin's file was kept as merely typed: the site's first
    # event for that user made a second customer, who took the id from the imported one.
    body = "name,email,external_id,plan\nIda Import,ida@example.com,site-42,gold\n"
    assert _upload(client, world, body.encode())["created"] == 1
    key = source(client, world)
    r = client.post(
        "/api/v1/events/track",
        json={"userId": "site-42", "event": "Logged In"},
        headers=basic(key),
    )
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        owners = db.scalars(
            select(Identity.customer_id).where(
                Identity.workspace_id == world.acme.workspace.id,
                Identity.value.in_(["site-42", "ida@example.com"]),
            )
        ).all()
    assert set(owners) == {_named(database, world, "Ida Import").id}
    items = client.get(
        f"/api/v1/customers/{owners[0]}/timeline", params={"kind": "event"}, headers=auth(world.bob)
    ).json()["items"]
    assert [e["type"] for e in items] == ["Logged In"]


def test_an_external_id_imported_before_as_merely_typed_is_proven_by_the_next_import(
    client: TestClient, world: World, database: Database
) -> None:
    body = "name,external_id\nOld Import,site-77\n"
    assert _upload(client, world, body.encode())["created"] == 1
    with database.session() as db:
        db.execute(update(Identity).where(Identity.value == "site-77").values(verified=False))
    assert _upload(client, world, body.encode())["updated"] == 1
    with database.session(write=False) as db:
        assert db.scalar(select(Identity.verified).where(Identity.value == "site-77")) is True


def test_a_row_matching_only_an_address_a_visitor_typed_never_writes_onto_that_visitor(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A web chat visitor typed Ana's address (anyone can type any): the file's name and
    # plan went onto them, and the CRM's Ana was never made.
    assert world.acme.inbox is not None
    with database.session() as db:
        visitor = receive(
            db,
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id="w1",
                handles=[
                    handle(IdentityKind.webchat, "visitor-1"),
                    handle(IdentityKind.email, "ana@example.com", verified=False),
                ],
                sender_name="Someone",
                text="hello",
            ),
            settings=settings,
        ).customer.id
    body = "name,email,plan\nAna Import,ana@example.com,gold\n"
    report = _upload(client, world, body.encode())
    assert (report["created"], report["updated"], report["to_review"]) == (1, 0, 1), report
    ana = _named(database, world, "Ana Import")
    with database.session(write=False) as db:
        typist = db.get(Customer, visitor)
        assert typist is not None
        assert (typist.name, typist.attributes, typist.email) == ("Someone", {}, None)
        held = db.scalars(select(Identity).where(Identity.value == "ana@example.com")).one()
        assert (held.customer_id, held.verified) == (ana.id, True)
        review = db.scalars(select(MergeSuggestion)).all()
    assert [(sorted((r.left_id, r.right_id)), r.status) for r in review] == [
        (sorted((ana.id, visitor)), SuggestionStatus.pending)
    ]
    assert (ana.email, ana.attributes) == ("ana@example.com", {"plan": "gold"})
    # Run again: the same customer updated, nobody new.
    again = _upload(client, world, body.encode())
    assert (again["created"], again["updated"], again["to_review"]) == (0, 1, 0), again
    # And Ana's own first mail finds her record.
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",
        json={"external_id": "m1", "text": "Ana writes", "from": {"email": "ana@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    with database.session(write=False) as db:
        m = db.scalars(select(Message).where(Message.text == "Ana writes")).one()
        assert m.sender_id == ana.id


def test_an_uploaded_file_is_copied_and_removed_off_the_event_loop(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upload was written to its temporary file (and the directory made and removed) on
    # the event loop: a file of many megabytes held every other request and socket.
    on_loop: list[tuple[str, bool]] = []

    def watched(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop.append((name, True))
            except RuntimeError:  # no loop runs in this thread: a worker thread
                on_loop.append((name, False))
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(tempfile, "mkdtemp", watched("mkdtemp", tempfile.mkdtemp))
    monkeypatch.setattr(Path, "write_bytes", watched("write_bytes", Path.write_bytes))
    monkeypatch.setattr(shutil, "rmtree", watched("rmtree", shutil.rmtree))
    report = _upload(client, world, b"name,email\nOff Loop,off.loop@example.com\n")
    assert report["created"] == 1
    assert on_loop == [("mkdtemp", False), ("write_bytes", False), ("rmtree", False)]
