"""Merges at the same moment, on PostgreSQL: a record is merged once, never into two, and
two records merged into each other at once leave one of them."""

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError

from rapport.config import Settings
from rapport.customers import importer, service
from rapport.customers import merge as merging
from rapport.customers.identity import handle
from rapport.customers.models import (
    Customer,
    CustomerMerge,
    CustomerTag,
    Event,
    Identity,
    IdentityKind,
)
from rapport.customers.schemas import CustomerCreate
from rapport.db import Database, new_id
from rapport.events import service as events_service
from rapport.ingest import InboundMessage, IngestWriter
from rapport.privacy.service import SYSTEM
from rapport.workspaces.models import Workspace
from tests.conftest import auth, postgresql_only
from tests.customers.test_merge_written_while_merged import BEN, ann_and_ben, merge, where
from tests.events.test_segment import basic, source
from tests.factories import World


@postgresql_only
def test_one_record_merged_into_two_at_once_is_merged_once(
    world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws_id = world.acme.workspace.id
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ids = [
            service.create(
                db, workspace=ws, data=CustomerCreate(name=n, email=f"{n}@example.com")
            ).id
            for n in ("ann", "bea", "cat")
        ]
    a, b, c = ids
    real = merging.conflicts

    def after_reading(survivor: Customer, merged: Customer) -> list[dict[str, Any]]:
        time.sleep(0.5)  # long enough for the other to have read the pair as unmerged too
        return real(survivor, merged)

    monkeypatch.setattr(merging, "conflicts", after_reading)
    outcome: dict[str, object] = {}

    def run(survivor: str) -> None:
        try:
            with database.session() as db:
                merging.merge(
                    db, workspace_id=ws_id, survivor_id=survivor, merged_id=a, actor=SYSTEM
                )
            outcome[survivor] = "merged"
        except Exception as exc:  # noqa: BLE001 - the loser's refusal, whatever it is
            outcome[survivor] = repr(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with database.session(write=False) as db:
        in_force = db.scalars(
            select(CustomerMerge).where(
                CustomerMerge.merged_id == a, CustomerMerge.undone_at.is_(None)
            )
        ).all()
        into = db.scalar(select(Customer.merged_into_id).where(Customer.id == a))
    assert len(in_force) == 1, (outcome, [(m.survivor_id, into) for m in in_force])


@postgresql_only
def test_two_records_merged_into_each_other_at_once_leave_one_live(
    world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws_id = world.acme.workspace.id
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        a, b = (
            service.create(db, workspace=ws, data=CustomerCreate(name=n)).id for n in ("ann", "bea")
        )
    real = merging.conflicts

    def after_reading(survivor: Customer, merged: Customer) -> list[dict[str, Any]]:
        time.sleep(0.5)
        return real(survivor, merged)

    monkeypatch.setattr(merging, "conflicts", after_reading)
    outcome: dict[str, object] = {}

    def run(survivor: str, merged: str) -> None:
        try:
            with database.session() as db:
                merging.merge(
                    db, workspace_id=ws_id, survivor_id=survivor, merged_id=merged, actor=SYSTEM
                )
            outcome[survivor] = "merged"
        except Exception as exc:  # noqa: BLE001 - the loser's refusal, whatever it is
            outcome[survivor] = repr(exc)[:200]

    threads = [threading.Thread(target=run, args=p) for p in ((a, b), (b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with database.session(write=False) as db:
        live = db.scalars(
            select(Customer.id).where(Customer.id.in_([a, b]), Customer.merged_into_id.is_(None))
        ).all()
    assert len(live) == 1, outcome


@postgresql_only
def test_two_merges_into_one_record_undone_at_once_each_take_back_what_they_added(
    world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each undo read the survivor's attributes, then wrote them less its own: the one
    # written last put back what the other had taken away.
    ws_id = world.acme.workspace.id
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        # Bea's address goes to Ann, and the later merge records it as Ann's before: the
        # first undo rewrites the second merge's record.
        ann, bea, cat = (
            service.create(db, workspace=ws, data=CustomerCreate(**fields)).id
            for fields in (
                {"name": "ann"},
                {"name": "bea", "email": "bea@example.com", "attributes": {"plan": "gold"}},
                {"name": "cat", "attributes": {"city": "Oslo"}},
            )
        )
        merges = [
            merging.merge(db, workspace_id=ws_id, survivor_id=ann, merged_id=m, actor=SYSTEM).id
            for m in (bea, cat)
        ]
    real = merging._later

    def after_reading(db: Any, row: CustomerMerge) -> list[CustomerMerge]:
        time.sleep(0.5)  # long enough for the other undo to have read the survivor too
        return real(db, row)

    monkeypatch.setattr(merging, "_later", after_reading)
    outcome: dict[str, object] = {}

    def run(merge_id: str) -> None:
        try:
            with database.session() as db:
                merging.unmerge(db, workspace_id=ws_id, merge_id=merge_id, actor=SYSTEM)
            outcome[merge_id] = "undone"
        except Exception as exc:  # noqa: BLE001 - reported below, whatever it is
            outcome[merge_id] = repr(exc)[:300]

    threads = [threading.Thread(target=run, args=(m,)) for m in merges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(outcome.values()) == {"undone"}, outcome
    with database.session(write=False) as db:
        survivor = db.get(Customer, ann)
        assert survivor is not None
        assert (survivor.attributes, survivor.email) == ({}, None), outcome
        restored = select(Customer.merged_into_id).where(Customer.id.in_([bea, cat]))
        assert db.scalars(restored).all() == [None, None]


@postgresql_only
def test_his_message_arriving_while_the_merge_is_undone_goes_to_his_record(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ingest read his number as the survivor's, waited for the undo to let her record go,
    # then stored his message in her thread, after the undo had sorted what was there.
    ann, ben = ann_and_ben(client, world, ben_last=False)
    merge_id = merge(client, world, ann, ben)
    real = merging._later

    def slowly(db: Any, row: CustomerMerge) -> list[CustomerMerge]:
        time.sleep(1.0)  # holding both records: his message comes in meanwhile
        return real(db, row)

    monkeypatch.setattr(merging, "_later", slowly)
    undone: list[object] = []

    def undo() -> None:
        with database.session() as db:
            merging.unmerge(
                db, workspace_id=world.acme.workspace.id, merge_id=merge_id, actor=SYSTEM
            )
        undone.append(True)

    thread = threading.Thread(target=undo)
    thread.start()
    time.sleep(0.3)
    assert world.acme.inbox is not None
    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": False}))
    try:
        writer.submit_nowait(
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id="b2",
                text="Ben during the undo",
                handles=[handle(IdentityKind.phone, BEN)],
            )
        ).result(30)
    finally:
        writer.stop()
    thread.join(30)
    assert undone == [True]
    assert where(database, "Ben during the undo")[0] == ben


@postgresql_only
def test_his_message_arriving_while_he_is_merged_goes_to_the_survivor(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Read as his before the merge committed, it was stored as the hidden record's.
    ann, ben = ann_and_ben(client, world, ben_last=False)
    real = merging.conflicts

    def slowly(survivor: Customer, merged: Customer) -> list[dict[str, Any]]:
        time.sleep(1.0)  # holding both records: his message comes in meanwhile
        return real(survivor, merged)

    monkeypatch.setattr(merging, "conflicts", slowly)
    thread = threading.Thread(target=merge, args=(client, world, ann, ben))
    thread.start()
    time.sleep(0.3)
    assert world.acme.inbox is not None
    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": False}))
    try:
        writer.submit_nowait(
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id="b2",
                text="Ben during the merge",
                handles=[handle(IdentityKind.phone, BEN)],
            )
        ).result(30)
    finally:
        writer.stop()
    thread.join(30)
    assert where(database, "Ben during the merge")[::2] == (ann, ann)


def _two_merged(database: Database, ws_id: str, ann: str | None = None) -> tuple[str, str, str]:
    """Ann (made if not given), and Bea (with a plan) merged into her: (ann, bea, merge)."""
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ann = ann or service.create(db, workspace=ws, data=CustomerCreate(name="ann")).id
        data = CustomerCreate(name="bea", attributes={"plan": "gold"})
        bea = service.create(db, workspace=ws, data=data).id
        row = merging.merge(db, workspace_id=ws_id, survivor_id=ann, merged_id=bea, actor=SYSTEM)
        return ann, bea, row.id


def _undo_slowly(
    database: Database, ws_id: str, merge_id: str, monkeypatch: pytest.MonkeyPatch
) -> threading.Thread:
    """The merge's undo, started in a transaction of its own, holding both records a while."""
    real = merging._later

    def slowly(db: Any, row: CustomerMerge) -> list[CustomerMerge]:
        time.sleep(1.0)  # holding both records: the edit comes in meanwhile
        return real(db, row)

    monkeypatch.setattr(merging, "_later", slowly)

    def undo() -> None:
        with database.session() as db:
            merging.unmerge(db, workspace_id=ws_id, merge_id=merge_id, actor=SYSTEM)

    thread = threading.Thread(target=undo)
    thread.start()
    time.sleep(0.3)
    return thread


def _attributes(database: Database, customer_id: str) -> dict[str, Any]:
    with database.session(write=False) as db:
        customer = db.get(Customer, customer_id)
        assert customer is not None
        return dict(customer.attributes)


def customer_by(database: Database, user_id: str) -> str:
    """The customer the events API made for this user id."""
    with database.session(write=False) as db:
        return db.scalars(select(Identity.customer_id).where(Identity.value == user_id)).one()


@postgresql_only
def test_an_edit_of_the_survivor_while_the_merge_is_undone_keeps_what_the_undo_took_back(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The edit read her attributes (Bea's plan among them) before the undo committed, then
    # wrote them back with its own: the plan stayed on Ann for good.
    ws_id = world.acme.workspace.id
    ann, bea, merge_id = _two_merged(database, ws_id)
    thread = _undo_slowly(database, ws_id, merge_id, monkeypatch)
    r = client.patch(
        f"/api/v1/customers/{ann}", json={"attributes": {"city": "Oslo"}}, headers=auth(world.bob)
    )
    thread.join(30)
    assert r.status_code == 200, r.text
    assert _attributes(database, ann) == {"city": "Oslo"}
    assert _attributes(database, bea) == {"plan": "gold"}


@postgresql_only
@pytest.mark.parametrize(
    ("path", "body"), [("", {"attributes": {"city": "Oslo"}}), ("/tags", {"add": ["vip"]})]
)
def test_an_edit_of_a_record_merged_meanwhile_is_refused_naming_the_survivor(
    client: TestClient,
    world: World,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: dict[str, Any],
) -> None:
    # Read as unmerged before the merge committed, the edit was written on the hidden
    # record: lost to the person, back only if the merge was undone.
    ws_id = world.acme.workspace.id
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ann, bea = (
            service.create(db, workspace=ws, data=CustomerCreate(name=n)).id for n in ("ann", "bea")
        )
    real = merging.conflicts

    def slowly(survivor: Customer, merged: Customer) -> list[dict[str, Any]]:
        time.sleep(1.0)  # holding both records: the edit comes in meanwhile
        return real(survivor, merged)

    monkeypatch.setattr(merging, "conflicts", slowly)
    thread = threading.Thread(target=merge, args=(client, world, ann, bea))
    thread.start()
    time.sleep(0.3)
    r = client.patch(f"/api/v1/customers/{bea}{path}", json=body, headers=auth(world.bob))
    thread.join(30)
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("/customer-merged") and r.json()["merged_into_id"] == ann
    assert _attributes(database, bea) == {}
    with database.session(write=False) as db:
        assert db.scalars(select(CustomerTag.tag)).all() == []


@postgresql_only
def test_an_identify_while_the_merge_is_undone_keeps_what_the_undo_took_back(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an agent's edit: the identify wrote back the attributes it read before the undo.
    ws_id = world.acme.workspace.id
    key = source(client, world)
    r = client.post(
        "/api/v1/events/identify", json={"userId": "user-ann", "traits": {}}, headers=basic(key)
    )
    assert r.status_code == 200, r.text
    ann, _, merge_id = _two_merged(database, ws_id, customer_by(database, "user-ann"))
    thread = _undo_slowly(database, ws_id, merge_id, monkeypatch)
    r = client.post(
        "/api/v1/events/identify",
        json={"userId": "user-ann", "traits": {"city": "Oslo"}},
        headers=basic(key),
    )
    thread.join(30)
    assert r.status_code == 200, r.text
    assert _attributes(database, ann) == {"city": "Oslo"}


@postgresql_only
def test_an_identify_of_a_record_merged_meanwhile_goes_to_the_survivor(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by its user id before the merge committed, the hidden record took the traits.
    ws_id = world.acme.workspace.id
    key = source(client, world)
    r = client.post(
        "/api/v1/events/identify", json={"userId": "user-bea", "traits": {}}, headers=basic(key)
    )
    assert r.status_code == 200, r.text
    bea = customer_by(database, "user-bea")
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ann = service.create(db, workspace=ws, data=CustomerCreate(name="ann")).id
    real = merging.conflicts

    def slowly(survivor: Customer, merged: Customer) -> list[dict[str, Any]]:
        time.sleep(1.0)  # holding both records: the identify comes in meanwhile
        return real(survivor, merged)

    monkeypatch.setattr(merging, "conflicts", slowly)
    thread = threading.Thread(target=merge, args=(client, world, ann, bea))
    thread.start()
    time.sleep(0.3)
    r = client.post(
        "/api/v1/events/identify",
        json={"userId": "user-bea", "traits": {"city": "Oslo"}},
        headers=basic(key),
    )
    thread.join(30)
    assert r.status_code == 200, r.text
    assert _attributes(database, ann) == {"city": "Oslo"}
    assert _attributes(database, bea) == {}


@postgresql_only
def test_an_identify_of_the_restored_record_while_the_merge_is_undone_goes_to_it(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Her user id was read as the survivor's (the merge had moved it), and the traits went
    # to him once the undo, giving it back to her, had committed.
    ws_id = world.acme.workspace.id
    key = source(client, world)
    r = client.post(
        "/api/v1/events/identify", json={"userId": "user-bea", "traits": {}}, headers=basic(key)
    )
    assert r.status_code == 200, r.text
    bea = customer_by(database, "user-bea")
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ann = service.create(db, workspace=ws, data=CustomerCreate(name="ann")).id
        merge_id = merging.merge(
            db, workspace_id=ws_id, survivor_id=ann, merged_id=bea, actor=SYSTEM
        ).id
    assert customer_by(database, "user-bea") == ann
    thread = _undo_slowly(database, ws_id, merge_id, monkeypatch)
    r = client.post(
        "/api/v1/events/identify",
        json={"userId": "user-bea", "traits": {"city": "Oslo"}},
        headers=basic(key),
    )
    thread.join(30)
    assert r.status_code == 200, r.text
    assert (_attributes(database, bea), _attributes(database, ann)) == ({"city": "Oslo"}, {})


@postgresql_only
def test_an_import_updating_the_survivor_while_the_merge_is_undone_keeps_what_it_took_back(
    world: World, database: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The import read her attributes (Bea's plan among them) before the undo committed,
    # then wrote them back with the file's.
    ws_id = world.acme.workspace.id
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ann = service.create(
            db, workspace=ws, data=CustomerCreate(name="ann", email="ann@example.com")
        ).id
    ann, _, merge_id = _two_merged(database, ws_id, ann)
    path = tmp_path / "customers.jsonl"
    path.write_text(json.dumps({"email": "ann@example.com", "city": "Oslo"}) + "\n")
    thread = _undo_slowly(database, ws_id, merge_id, monkeypatch)
    report = importer.import_customers(database, workspace_id=ws_id, path=path, mapping={})
    thread.join(30)
    assert (report.updated, report.errors) == (1, [])
    assert _attributes(database, ann) == {"city": "Oslo"}


def _events_of(database: Database, customer_id: str) -> list[str]:
    with database.session(write=False) as db:
        found = select(Event.type).where(Event.customer_id == customer_id).order_by(Event.type)
        return list(db.scalars(found))


@postgresql_only
@pytest.mark.parametrize("kind", ["track", "page"])
def test_an_event_of_a_record_merged_meanwhile_goes_to_the_survivor(
    client: TestClient,
    world: World,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    # Found by its user id before the merge committed, the event was written on the hidden
    # record after the merge had read (and moved) its events: gone from her timeline.
    ws_id = world.acme.workspace.id
    key = source(client, world)
    r = client.post(
        "/api/v1/events/identify", json={"userId": "user-bea", "traits": {}}, headers=basic(key)
    )
    assert r.status_code == 200, r.text
    bea = customer_by(database, "user-bea")
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ann = service.create(db, workspace=ws, data=CustomerCreate(name="ann")).id
    real = merging.conflicts

    def slowly(survivor: Customer, merged: Customer) -> list[dict[str, Any]]:
        time.sleep(1.0)  # holding both records: the event comes in meanwhile
        return real(survivor, merged)

    monkeypatch.setattr(merging, "conflicts", slowly)
    thread = threading.Thread(target=merge, args=(client, world, ann, bea))
    thread.start()
    time.sleep(0.3)
    body = {"userId": "user-bea", "event": "Signed Up", "name": "Pricing"}
    r = client.post(f"/api/v1/events/{kind}", json=body, headers=basic(key))
    thread.join(30)
    assert r.status_code == 200, r.text
    said = "Signed Up" if kind == "track" else "Page Viewed"
    assert _events_of(database, ann) == ["Identify", said]
    assert _events_of(database, bea) == []


@postgresql_only
def test_an_event_of_the_restored_record_while_the_merge_is_undone_goes_to_it(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Her user id was read as the survivor's (the merge had moved it): her event stayed
    # on his timeline once the undo had given the id back to her.
    ws_id = world.acme.workspace.id
    key = source(client, world)
    r = client.post(
        "/api/v1/events/identify", json={"userId": "user-bea", "traits": {}}, headers=basic(key)
    )
    assert r.status_code == 200, r.text
    bea = customer_by(database, "user-bea")
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        ann = service.create(db, workspace=ws, data=CustomerCreate(name="ann")).id
        merge_id = merging.merge(
            db, workspace_id=ws_id, survivor_id=ann, merged_id=bea, actor=SYSTEM
        ).id
    thread = _undo_slowly(database, ws_id, merge_id, monkeypatch)
    r = client.post(
        "/api/v1/events/track",
        json={"userId": "user-bea", "event": "Signed Up"},
        headers=basic(key),
    )
    thread.join(30)
    assert r.status_code == 200, r.text
    assert (_events_of(database, bea), _events_of(database, ann)) == (
        ["Identify", "Signed Up"],
        [],
    )


@postgresql_only
def test_a_merge_and_an_events_batch_reaching_its_two_records_the_other_way_both_go_through(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch held the second record (its first event's), the merge the first and waited
    # for the second, then the batch waited for the first: deadlocked, and PostgreSQL
    # failed one of them, the agent's merge as likely as not. The batch now takes a record
    # sorting before one it holds only while free, else gives way and stores its chunk
    # again once the merge committed; the merge, taking its two in order, never fails.
    key = source(client, world)
    for user in ("user-1", "user-2"):
        r = client.post(
            "/api/v1/events/identify", json={"userId": user, "traits": {}}, headers=basic(key)
        )
        assert r.status_code == 200, r.text
    user_of = {customer_by(database, user): user for user in ("user-1", "user-2")}
    low, high = sorted(user_of)
    real = events_service._commerce
    slowed: list[bool] = []

    def slowly(*args: Any) -> None:
        if not slowed:
            slowed.append(True)
            time.sleep(1.0)  # holding the second record: the merge takes the first meanwhile
        real(*args)

    monkeypatch.setattr(events_service, "_commerce", slowly)
    answers: dict[str, Any] = {}

    def send() -> None:
        batch = [
            {"type": "track", "userId": user_of[c], "event": "Seen", "messageId": f"seen-{c}"}
            for c in (high, low)
        ]
        answers["batch"] = client.post(
            "/api/v1/events/batch", json={"batch": batch}, headers=basic(key)
        )

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(0.3)
    r = client.post(
        f"/api/v1/customers/{low}/merge", json={"merged_id": high}, headers=auth(world.bob)
    )
    thread.join(30)
    assert r.status_code == 201, r.text
    assert answers["batch"].status_code == 200, answers["batch"].text
    assert answers["batch"].json()["stored"] == 2
    assert _events_of(database, low) == ["Identify", "Identify", "Seen", "Seen"]
    assert _events_of(database, high) == []


@postgresql_only
def test_an_import_reaching_a_record_out_of_order_gives_way_and_goes_on(
    world: World, database: Database, tmp_path: Path
) -> None:
    # The import read her address on the later record and waited for it while another
    # transaction moved the address to the earlier one; it then held the later one and
    # waited for the earlier, which a third (a merge or undo, taking its two in order)
    # held while waiting for the later: deadlocked, and PostgreSQL failed the import
    # midway (or the merge). The import now takes the earlier one only while free, else
    # gives way and runs its batch again once it is.
    from rapport.db import hold

    ws_id = world.acme.workspace.id
    with database.session() as db:
        ws = db.get(Workspace, ws_id)
        made = [
            service.create(db, workspace=ws, data=CustomerCreate(name=n, email=f"{n}@example.com"))
            for n in ("ann", "bea")
        ]
        ids = {c.email: c.id for c in made}
    low, high = sorted(ids.values())
    address = next(e for e, c in ids.items() if c == high)
    path = tmp_path / "customers.jsonl"
    path.write_text(json.dumps({"email": address, "city": "Oslo"}) + "\n")
    outcome: dict[str, Any] = {}

    def run(name: str, fn: Any) -> threading.Thread:
        def target() -> None:
            try:
                outcome[name] = fn()
            except Exception as exc:  # read below
                outcome[name] = exc

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    def second() -> str:
        # A merge or undo: the two in order, the later one once the import holds it.
        with database.session() as db:
            hold(db, Customer, low)
            time.sleep(0.8)
            hold(db, Customer, high)
        return "done"

    with database.session() as first:
        # Holds the later record and moves her address to the earlier one (as a merge
        # does; the earlier is left to the second, so that it surely holds it first).
        hold(first, Customer, high)
        first.execute(update(Identity).where(Identity.value == address).values(customer_id=low))
        importing = run(
            "import",
            lambda: importer.import_customers(database, workspace_id=ws_id, path=path, mapping={}),
        )
        time.sleep(0.5)  # the import read the address on the later record, waits for it
        undoing = run("second", second)
        time.sleep(0.3)  # the second holds the earlier record
    importing.join(30)
    undoing.join(30)
    assert outcome["second"] == "done"
    report = outcome["import"]
    assert not isinstance(report, Exception), report
    assert (report.updated, report.created, report.errors) == (1, 0, [])
    assert _attributes(database, low) == {"city": "Oslo"}


_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


def waits_with_the_later_free(
    database: Database, held: Any, work: Callable[[], None], *, later: str
) -> bool:
    """Whether ``work``, run while another connection holds the record ``held`` selects,
    waits for it without holding the customer ``later`` meanwhile (ids ascending: the order
    a merge takes)."""
    with database.engine.connect() as merging_one:
        merging_one.execute(held)
        thread = threading.Thread(target=work)
        thread.start()
        waiting = False
        for _ in range(200):  # until it waits for the held record
            with database.engine.connect() as looking:  # a snapshot of its own each time
                waiting = bool(looking.scalar(_WAITING))
            if waiting:
                break
            time.sleep(0.05)
        with database.engine.connect() as other:
            try:
                other.execute(
                    select(Customer.id).where(Customer.id == later).with_for_update(nowait=True)
                )
                later_free = True
            except OperationalError:
                later_free = False
            other.rollback()
        merging_one.rollback()
    thread.join(30)
    return waiting and later_free


@postgresql_only
def test_settling_handles_holds_its_customers_in_id_order(world: World, database: Database) -> None:
    # Its updates locked the rows in the order they scanned them (here the table's, the
    # later record written first), each kind in a statement of its own: holding the later
    # record while it waited for the earlier, which a merge or ingest's last-seen update
    # (both ids ascending) held while waiting for the later, the two deadlocked.
    ws_id = world.acme.workspace.id
    low, high = sorted([new_id(), new_id()])
    with database.session() as db:
        for cid in (high, low):
            db.add(Customer(id=cid, workspace_id=ws_id, name=cid))
            db.flush()
            db.add(
                Identity(
                    workspace_id=ws_id,
                    customer_id=cid,
                    kind=IdentityKind.email,
                    value=f"{cid}@example.com",
                    verified=True,
                )
            )
    outcome: dict[str, Any] = {}

    def settle() -> None:
        with database.session() as db:
            service.settle_handles(db, [high, low])
        outcome["settled"] = True

    held = select(Customer.id).where(Customer.id == low).with_for_update()
    assert waits_with_the_later_free(database, held, settle, later=high)
    assert outcome == {"settled": True}
    with database.session(write=False) as db:
        assert db.scalar(select(Customer.email).where(Customer.id == high)) == f"{high}@example.com"


@postgresql_only
def test_a_batch_claiming_a_handle_holds_its_customers_in_id_order(
    world: World, database: Database, settings: Settings
) -> None:
    # The handles were settled (the customer a claim left held, sorting last) before the
    # last-seen update took the batch's other senders, one sorting first among them: the
    # batch held the later record while it waited for the earlier, which a merge (ids
    # ascending) held while waiting for the later.
    from rapport.ingest import receive_batch

    ws_id = world.acme.workspace.id
    assert world.acme.inbox is not None
    kim, sam, tess = sorted(new_id() for _ in range(3))
    with database.session() as db:
        for cid, kind, value, verified in (
            (kim, IdentityKind.phone, "+14155550101", True),
            (sam, IdentityKind.phone, "+14155550102", True),
            (tess, IdentityKind.email, "sam@example.com", False),  # she only typed it
        ):
            db.add(Customer(id=cid, workspace_id=ws_id, name=cid))
            db.flush()
            db.add(
                Identity(
                    workspace_id=ws_id, customer_id=cid, kind=kind, value=value, verified=verified
                )
            )
    batch = [
        InboundMessage(
            inbox_id=world.acme.inbox.id,
            external_id="k1",
            text="Kim again",
            handles=[handle(IdentityKind.phone, "+14155550101")],
        ),
        InboundMessage(
            inbox_id=world.acme.inbox.id,
            external_id="s1",
            text="Sam, from his address",
            handles=[
                handle(IdentityKind.phone, "+14155550102"),
                handle(IdentityKind.email, "sam@example.com"),
            ],
        ),
    ]
    outcome: dict[str, Any] = {}

    def receive() -> None:
        with database.session() as db:
            outcome["stored"] = receive_batch(db, batch, settings=settings)

    # Kim's record held as a merge holds it.
    held = select(Customer.id).where(Customer.id == kim).with_for_update(key_share=True)
    assert waits_with_the_later_free(database, held, receive, later=tess)
    assert not [s for s in outcome["stored"] if isinstance(s, BaseException)]
    with database.session(write=False) as db:
        holder = db.scalar(select(Identity.customer_id).where(Identity.value == "sam@example.com"))
    assert holder == sam
