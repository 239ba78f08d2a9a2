"""Notes about a customer: written by agents for colleagues, changed by their author or an
admin, following the customer into merges, erasure and export."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rapport.customers.models import CustomerNote
from rapport.db import Database
from rapport.privacy.models import AuditLog
from tests.conftest import auth, published_events
from tests.factories import World


def customer(client: TestClient, world: World, email: str) -> str:
    r = client.post(
        "/api/v1/customers", json={"name": email, "email": email}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def note(client: TestClient, token: str, customer_id: str, text: str) -> Any:
    return client.post(
        f"/api/v1/customers/{customer_id}/notes", json={"text": text}, headers=auth(token)
    )


def listed(client: TestClient, world: World, customer_id: str) -> list[str]:
    r = client.get(f"/api/v1/customers/{customer_id}/notes", headers=auth(world.victor))
    assert r.status_code == 200, r.text
    return [n["text"] for n in r.json()]


def test_agents_write_notes_and_only_the_author_or_an_admin_changes_them(
    client: TestClient, world: World
) -> None:
    kim = customer(client, world, "kim@example.com")
    with published_events() as events:
        first = note(client, world.bob, kim, "  VIP: call before shipping  ")
    assert first.status_code == 201, first.text
    made = first.json()
    assert made["text"] == "VIP: call before shipping"  # trimmed
    assert made["author_name"] and made["author_id"] and made["customer_id"] == kim
    assert made["updated_at"] == made["created_at"]  # not edited
    assert [e["type"] for e in events] == ["customer.updated"]  # open pages draw it again
    later = note(client, world.alice, kim, "Prefers French.\nNo calls after 6 pm.").json()
    assert listed(client, world, kim) == [later["text"], made["text"]]  # newest first

    # A viewer reads them and writes none; nothing blank, nothing endless.
    assert note(client, world.victor, kim, "hello").status_code == 403
    blank = note(client, world.bob, kim, "   ")
    assert blank.status_code == 422 and blank.json()["detail"] == "text: a note must say something"
    assert note(client, world.bob, kim, "x" * 10_001).status_code == 422

    # Its author changes it; another agent may not change an admin's; an admin may any.
    url = f"/api/v1/customers/{kim}/notes"
    r = client.patch(f"{url}/{made['id']}", json={"text": "VIP"}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["text"] == "VIP"
    assert r.json()["updated_at"] > made["updated_at"]
    r = client.patch(f"{url}/{later['id']}", json={"text": "no"}, headers=auth(world.bob))
    assert r.status_code == 403
    assert client.delete(f"{url}/{later['id']}", headers=auth(world.bob)).status_code == 403
    # Two editing at once: a change made since the editor read the note is refused, not
    # written over (the last save won); without the time read, it is as before.
    rows = client.get(url, headers=auth(world.bob)).json()
    [read] = [n["updated_at"] for n in rows if n["id"] == made["id"]]
    r = client.patch(
        f"{url}/{made['id']}", json={"text": "VIP!", "updated_at": read}, headers=auth(world.alice)
    )
    assert r.status_code == 200
    r = client.patch(
        f"{url}/{made['id']}", json={"text": "VIP?", "updated_at": read}, headers=auth(world.bob)
    )
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith("the note was changed since you opened it")
    assert listed(client, world, kim) == [later["text"], "VIP!"]
    assert client.delete(f"{url}/{made['id']}", headers=auth(world.alice)).status_code == 204
    assert listed(client, world, kim) == [later["text"]]

    # A note is found only under its own customer, and only in its workspace.
    other = customer(client, world, "lee@example.com")
    wrong = client.get(f"/api/v1/customers/{other}/notes", headers=auth(world.bob)).json()
    assert wrong == []
    r = client.patch(
        f"/api/v1/customers/{other}/notes/{later['id']}",
        json={"text": "x"},
        headers=auth(world.alice),
    )
    assert r.status_code == 404
    for method in ("GET", "POST"):
        r = client.request(method, url, json={"text": "x"}, headers=auth(world.mallory))
        assert r.status_code == 404
    r = client.delete(f"{url}/{later['id']}", headers=auth(world.mallory))
    assert r.status_code == 404
    assert listed(client, world, kim) == [later["text"]]


def test_notes_follow_a_merge_and_its_undo_and_go_with_an_erased_customer(
    client: TestClient, world: World, database: Database
) -> None:
    kim = customer(client, world, "kim@example.com")
    twin = customer(client, world, "kim.work@example.com")
    note(client, world.bob, kim, "Kim's first order was lost")
    note(client, world.bob, twin, "Works at Initech")
    merged = client.post(
        f"/api/v1/customers/{kim}/merge", json={"merged_id": twin}, headers=auth(world.bob)
    )
    assert merged.status_code == 201, merged.text
    assert sorted(listed(client, world, kim)) == ["Kim's first order was lost", "Works at Initech"]
    export = client.get(f"/api/v1/customers/{kim}/export", headers=auth(world.alice)).json()
    assert sorted(n["text"] for n in export["notes"]) == sorted(listed(client, world, kim))
    undo = client.post(
        f"/api/v1/customer-merges/{merged.json()['id']}/undo", headers=auth(world.bob)
    )
    assert undo.status_code == 200, undo.text
    assert listed(client, world, kim) == ["Kim's first order was lost"]
    assert listed(client, world, twin) == ["Works at Initech"]

    assert client.delete(f"/api/v1/customers/{kim}", headers=auth(world.alice)).status_code == 204
    with database.session() as db:
        left = db.scalars(select(CustomerNote.text)).all()
        assert left == ["Works at Initech"]  # the erased customer's note went with them
        assert db.scalar(select(func.count()).select_from(CustomerNote)) == 1


def test_a_note_written_to_a_merged_record_is_on_the_person_and_audited(
    client: TestClient, world: World, database: Database
) -> None:
    # Posted through a page left open on the merged record, it was stored (201) where no
    # page listed it.
    kim = customer(client, world, "kim@example.com")
    twin = customer(client, world, "kim.work@example.com")
    merged = client.post(
        f"/api/v1/customers/{kim}/merge", json={"merged_id": twin}, headers=auth(world.bob)
    )
    assert merged.status_code == 201, merged.text
    made = note(client, world.bob, twin, "Works at Initech")
    assert made.status_code == 201 and made.json()["customer_id"] == kim
    assert listed(client, world, kim) == listed(client, world, twin) == ["Works at Initech"]
    url = f"/api/v1/customers/{twin}/notes/{made.json()['id']}"  # the merged record's address
    assert client.patch(url, json={"text": "Initech"}, headers=auth(world.bob)).status_code == 200
    assert client.delete(url, headers=auth(world.bob)).status_code == 204
    with database.session() as db:
        rows = db.execute(
            select(AuditLog.action, AuditLog.target_id, AuditLog.data).where(
                AuditLog.action.startswith("customer.note")
            )
        ).all()
    assert sorted(r.action for r in rows) == [
        "customer.note_added",
        "customer.note_changed",
        "customer.note_deleted",
    ]
    assert {r.target_id for r in rows} == {kim}
    assert "Initech" not in str(rows)  # what a note says stays out of the log
