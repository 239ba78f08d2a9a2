"""The ingest path at its edges: merges undone, a sender proving two customers' handles, a
known customer's new handle, a write conflict on the fast path, one address in two forms."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.conversations.models import Conversation
from rapport.customers.models import Identity
from rapport.db import Database
from tests.conftest import auth
from tests.factories import World


def post(client: TestClient, token: str, inbox_id: str, **body: object) -> Any:
    return client.post(f"/api/v1/inboxes/{inbox_id}/messages", json=body, headers=auth(token))


def new_api_inbox(client: TestClient, token: str, name: str) -> str:
    r = client.post("/api/v1/inboxes", json={"name": name, "channel": "api"}, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_after_an_undone_customer_merge_a_message_never_lands_in_the_other_customers_conversation(
    client: TestClient, world: World, database: Database
) -> None:
    shop = new_api_inbox(client, world.alice, "Shop")
    app = new_api_inbox(client, world.alice, "App")
    # Ann writes in the shop inbox; Bea (another person) in the app inbox.
    ann = post(
        client,
        world.bob,
        shop,
        external_id="a1",
        text="ann here",
        **{"from": {"email": "ann@example.com"}},
    ).json()
    bea = post(
        client,
        world.bob,
        app,
        external_id="b1",
        text="bea here",
        **{"from": {"email": "bea@example.com"}},
    ).json()
    assert ann["customer_id"] != bea["customer_id"]
    # An agent takes them for one person: merges Bea into Ann, then Bea's conversation
    # into Ann's ...
    m = client.post(
        f"/api/v1/customers/{ann['customer_id']}/merge",
        json={"merged_id": bea["customer_id"]},
        headers=auth(world.bob),
    )
    assert m.status_code == 201, m.text
    c = client.post(
        f"/api/v1/conversations/{ann['conversation_id']}/merge",
        json={"merged_id": bea["conversation_id"]},
        headers=auth(world.bob),
    )
    assert c.status_code == 200, c.text
    # ... then sees the mistake and undoes the customer merge: two people again.
    u = client.post(f"/api/v1/customer-merges/{m.json()['id']}/undo", headers=auth(world.bob))
    assert u.status_code == 200, u.text
    with database.session(write=False) as db:
        assert db.get(Conversation, bea["conversation_id"]).customer_id == bea["customer_id"]
        assert db.get(Conversation, ann["conversation_id"]).customer_id == ann["customer_id"]

    # Bea writes again through the app inbox.
    again = post(
        client,
        world.bob,
        app,
        external_id="b2",
        text="bea's private question",
        **{"from": {"email": "bea@example.com"}},
    ).json()
    assert again["customer_id"] == bea["customer_id"]
    with database.session(write=False) as db:
        conv = db.get(Conversation, again["conversation_id"])
        # Her message must be in one of HER conversations, not Ann's (whose replies go to Ann).
        assert conv.customer_id == bea["customer_id"], (
            f"Bea's message stored in conversation {conv.id} of customer {conv.customer_id} "
            f"(Ann is {ann['customer_id']})"
        )


def test_a_known_customer_who_writes_with_a_new_phone_shows_that_phone(
    client: TestClient, world: World, database: Database
) -> None:
    inbox = world.acme.inbox.id
    a = post(
        client,
        world.bob,
        inbox,
        external_id="k1",
        text="x",
        **{"from": {"email": "lee@example.com"}},
    ).json()
    b = post(
        client,
        world.bob,
        inbox,
        external_id="k2",
        text="y",
        **{"from": {"email": "lee@example.com", "phone": "+442071838750"}},
    ).json()
    assert a["customer_id"] == b["customer_id"]
    customer = client.get(f"/api/v1/customers/{a['customer_id']}", headers=auth(world.bob)).json()
    assert sorted(i["value"] for i in customer["identities"]) == [
        "+442071838750",
        "lee@example.com",
    ]
    # The display copy of the primary phone (Customer.phone) follows the identities, as
    # customers.service.resolve()/_attach() and settle_handles() keep it.
    assert customer["phone"] == "+442071838750", customer


def test_a_message_with_one_customers_email_and_anothers_phone_is_put_to_review(
    client: TestClient, world: World, database: Database
) -> None:
    from rapport.customers.models import MergeSuggestion

    inbox = world.acme.inbox.id
    a = post(
        client, world.bob, inbox, external_id="c1", text="a", **{"from": {"email": "a@example.com"}}
    ).json()
    b = post(
        client, world.bob, inbox, external_id="c2", text="b", **{"from": {"phone": "+14155550100"}}
    ).json()
    c = post(
        client,
        world.bob,
        inbox,
        external_id="c3",
        text="c",
        **{"from": {"email": "a@example.com", "phone": "+14155550100"}},
    )
    assert c.status_code == 201
    assert c.json()["customer_id"] == a["customer_id"]  # the first verified handle wins
    with database.session(write=False) as db:
        phone_owner = db.scalar(
            select(Identity.customer_id).where(Identity.value == "+14155550100")
        )
        assert phone_owner == b["customer_id"]  # not taken from B
        pairs = {frozenset((s.left_id, s.right_id)) for s in db.scalars(select(MergeSuggestion))}
    # ... and that one sender proved both is kept: the two are put to duplicate review
    # (nothing recorded it, where WhatsApp's number change does).
    assert frozenset((a["customer_id"], b["customer_id"])) in pairs


def test_the_fast_path_answers_a_write_conflict_as_the_route_does(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError

    from rapport import ingest

    def collide(self, msgs):  # type: ignore[no-untyped-def]
        # Another process stored the same identity between read and write, on both tries.
        raise IntegrityError("INSERT INTO identities ...", {}, Exception("duplicate key"))

    monkeypatch.setattr(ingest._Store, "_transaction", collide)
    body = {"external_id": "ic1", "text": "hi", "from": {"email": "ic@example.com"}}
    url = f"/api/v1/inboxes/{world.acme.inbox.id}/messages"
    # The route (a content type the fast path leaves to it) ...
    route = client.post(
        url,
        content=json.dumps(body),
        headers={**auth(world.bob), "content-type": "application/JSON"},
    )
    # ... and the fast path, for the very same request otherwise.
    client_500 = TestClient(client.app, raise_server_exceptions=False)
    fast = client_500.post(
        url,
        content=json.dumps(body),
        headers={**auth(world.bob), "content-type": "application/json"},
    )
    assert route.status_code == 409, route.text
    assert fast.status_code == route.status_code, (fast.status_code, fast.text)


def test_one_address_typed_in_nfc_and_nfd_is_one_customer() -> None:
    import unicodedata

    from rapport.customers.identity import normalize_email

    nfc = unicodedata.normalize("NFC", "José@example.com")
    nfd = unicodedata.normalize("NFD", "José@example.com")  # what a Mac keyboard may send
    assert normalize_email(nfc) == normalize_email(nfd)
