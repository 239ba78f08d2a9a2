"""The profile: typed custom attributes, tags, consent with its history, derived figures."""

import base64
import contextlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.customers import importer, profile
from rapport.customers.models import Consent, ConsentChannel
from rapport.db import Database, utcnow
from rapport.events.models import Order
from rapport.privacy.models import AuditLog
from rapport.realtime.models import StreamEvent
from tests.conftest import auth, published_events
from tests.customers.test_merge import into, undo
from tests.factories import World


def define(client: TestClient, world: World, key: str, type: str, **extra: object) -> dict:  # type: ignore[type-arg]
    r = client.post(
        "/api/v1/attribute-definitions",
        json={"key": key, "type": type, **extra},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_defined_attributes_are_stored_in_their_type_and_bad_values_refused(
    client: TestClient, world: World
) -> None:
    define(client, world, "seats", "number")
    define(client, world, "renews_on", "date", label="Renews on")
    define(client, world, "beta", "boolean")
    define(client, world, "plan", "list", options=["free", "pro", "enterprise"])
    r = client.post(
        "/api/v1/customers",
        json={
            "name": "Typed Tina",
            "attributes": {
                "seats": "12",
                "renews_on": "2027-01-31",
                "beta": "yes",
                "plan": "pro",
                "favourite_colour": "teal",  # nobody defined it: kept as given
            },
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    customer = r.json()
    assert customer["attributes"] == {
        "seats": 12,
        "renews_on": "2027-01-31",
        "beta": True,
        "plan": ["pro"],
        "favourite_colour": "teal",
    }
    for bad, says in (
        ({"seats": "a dozen"}, "seats is a number"),
        ({"renews_on": "31/01/2027"}, "renews_on is a date"),
        ({"beta": "perhaps"}, "beta is true or false"),
        ({"plan": "platinum"}, "plan takes free, pro, enterprise"),
    ):
        r = client.patch(
            f"/api/v1/customers/{customer['id']}",
            json={"attributes": bad},
            headers=auth(world.bob),
        )
        assert r.status_code == 422, bad
        assert r.headers["content-type"] == "application/problem+json"
        assert says in r.json()["detail"]
    unchanged = client.get(f"/api/v1/customers/{customer['id']}", headers=auth(world.bob))
    assert unchanged.json()["attributes"] == customer["attributes"]
    r = client.post(
        "/api/v1/attribute-definitions",
        json={"key": "seats", "type": "text"},
        headers=auth(world.alice),
    )
    assert r.status_code == 409
    r = client.post(
        "/api/v1/attribute-definitions",
        json={"key": "Bad Key", "type": "text"},
        headers=auth(world.alice),
    )
    assert r.status_code == 422
    # Agents use definitions; only admins write them.
    r = client.post(
        "/api/v1/attribute-definitions",
        json={"key": "other", "type": "text"},
        headers=auth(world.bob),
    )
    assert r.status_code == 403


def test_a_number_attribute_refuses_what_is_no_finite_number_and_stores_large_ones(
    client: TestClient, world: World
) -> None:
    # "Infinity", "sNaN" and "1e30" were 500s (OverflowError, InvalidOperation, an integer
    # beyond 64 bits at flush) and "NaN" was stored as null.
    define(client, world, "score", "number")
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}"
    for bad in ("Infinity", "-inf", "sNaN", "NaN", "1e400"):
        for method, path in (("PATCH", url), ("POST", "/api/v1/customers")):
            r = client.request(
                method, path, json={"attributes": {"score": bad}}, headers=auth(world.bob)
            )
            assert r.status_code == 422, (bad, method, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert "score is a number" in r.json()["detail"]
    for literal in ("NaN", "Infinity", "1e400"):  # JSON text Python reads as nan or inf
        r = client.patch(
            url,
            content='{"attributes": {"score": ' + literal + "}}",
            headers={**auth(world.bob), "content-type": "application/json"},
        )
        assert r.status_code == 422, (literal, r.text)
    for given, stored in (
        ("1e30", 1e30),  # beyond 64 bits: a float, as a fraction is
        ("18446744073709551616", 2.0**64),
        ("18446744073709551615", 2**64 - 1),
        (-(2**63), -(2**63)),
        ("-12.0", -12),
    ):
        r = client.patch(url, json={"attributes": {"score": given}}, headers=auth(world.bob))
        assert r.status_code == 200, (given, r.text)
        assert r.json()["attributes"]["score"] == stored
        again = client.get(url, headers=auth(world.bob)).json()["attributes"]["score"]
        assert again == stored and type(again) is type(stored)
    r = client.post(
        "/api/v1/customers", json={"attributes": {"score": "1e30"}}, headers=auth(world.bob)
    )
    assert r.status_code == 201 and r.json()["attributes"] == {"score": 1e30}


def test_a_refused_attribute_value_is_named_by_its_start_only(
    client: TestClient, world: World
) -> None:
    # The 422 repeated the value sent in full: a megabyte sent, a megabyte answered.
    define(client, world, "score", "number")
    customer = world.acme.opened.customer
    r = client.patch(
        f"/api/v1/customers/{customer.id}",
        json={"attributes": {"score": "x" * 1_000_000}},
        headers=auth(world.bob),
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("score is a number, not 'xxx")
    assert len(r.json()["detail"]) < 120


def test_a_changed_attribute_is_an_event_rules_can_react_to(
    client: TestClient, world: World, database: Database
) -> None:
    customer = world.acme.opened.customer
    r = client.patch(
        f"/api/v1/customers/{customer.id}",
        json={"attributes": {"tier": "gold"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 200
    with database.session(write=False) as db:
        events = list(
            db.scalars(select(StreamEvent).where(StreamEvent.type == "customer.attribute_changed"))
        )
    assert [e.payload for e in events] == [{"id": customer.id, "keys": ["tier"]}]


def test_attributes_a_merge_takes_or_its_undo_gives_back_are_changes_rules_hear_of(
    client: TestClient, world: World, database: Database
) -> None:
    # An agent's edit was an event; the same change made by a merge was not.
    def made(email: str, attributes: dict[str, object]) -> str:
        r = client.post(
            "/api/v1/customers",
            json={"email": email, "attributes": attributes},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def told() -> list[dict[str, object]]:
        with database.session(write=False) as db:
            rows = db.scalars(
                select(StreamEvent)
                .where(StreamEvent.type == "customer.attribute_changed")
                .order_by(StreamEvent.id)
            )
            return [e.payload for e in rows]

    kept = made("one@example.com", {"tier": "silver", "city": "Oslo"})
    gone = made("two@example.com", {"tier": "gold", "plan": "Pro"})
    merged = into(client, world, kept, gone, take=["attributes.tier"])
    assert told() == [{"id": kept, "keys": ["plan", "tier"]}]
    undo(client, world, merged)
    assert told()[1:] == [{"id": kept, "keys": ["plan", "tier"]}]
    # A merge that changes none of them says nothing.
    into(client, world, kept, made("three@example.com", {"city": "Oslo"}))
    assert len(told()) == 2


def test_tags_replace_and_filter(client: TestClient, world: World) -> None:
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}/tags"
    r = client.put(url, json={"tags": ["VIP", " churn-risk ", "vip"]}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json() == ["churn-risk", "vip"]
    found = client.get("/api/v1/customers", params={"tag": "vip"}, headers=auth(world.bob))
    assert [c["id"] for c in found.json()["items"]] == [customer.id]
    other = client.get(
        "/api/v1/customers", params={"tag": "vip"}, headers=auth(world.mallory)
    ).json()
    assert other["items"] == []
    assert client.put(url, json={"tags": ["<b>"]}, headers=auth(world.bob)).status_code == 422
    assert client.put(url, json={"tags": []}, headers=auth(world.victor)).status_code == 403


def test_consent_keeps_its_history_and_the_newest_decision_is_in_force(
    client: TestClient, world: World
) -> None:
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}/consents"
    given = client.post(
        url,
        json={"channel": "email", "purpose": "marketing", "granted": True, "source": "web form"},
        headers=auth(world.bob),
    )
    assert given.status_code == 201, given.text
    client.post(
        url,
        json={"channel": "whatsapp", "purpose": "marketing", "granted": True},
        headers=auth(world.bob),
    )
    withdrawn = client.post(
        url,
        json={"channel": "email", "purpose": "marketing", "granted": False, "source": "reply"},
        headers=auth(world.bob),
    )
    assert withdrawn.status_code == 201
    state = client.get(url, headers=auth(world.victor)).json()
    assert [(c["channel"], c["granted"], c["source"]) for c in state["current"]] == [
        ("email", False, "reply"),
        ("whatsapp", True, "agent"),
    ]
    assert len(state["history"]) == 3
    r = client.post(
        url,
        json={"channel": "carrier pigeon", "purpose": "marketing", "granted": True},
        headers=auth(world.bob),
    )
    assert r.status_code == 422


def sms_keyword(
    database: Database, customer: Any, word: str, *, granted: bool, db: Session | None = None
) -> None:
    """The customer texts ``word`` (STOP, START) and the provider acts on it, in ``db``'s
    transaction if given, else in one of its own."""
    with contextlib.nullcontext(db) if db is not None else database.session() as tx:
        profile.record_keyword(
            tx,
            workspace_id=customer.workspace_id,
            customer_id=customer.id,
            channel=ConsentChannel.sms,
            keyword=word,
            granted=granted,
        )


def test_a_consent_or_tags_recorded_tell_open_customer_panels_once_committed(
    client: TestClient, world: World, database: Database
) -> None:
    # Recording a consent published nothing: another agent's open panel showed the old
    # decisions until it was reloaded (tags and a customer's STOP the same).
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}/consents"
    updated = {"type": "customer.updated", "payload": {"id": customer.id}}

    def told(events: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: e[k] for k in ("type", "payload")} for e in events]

    with published_events() as published:
        r = client.post(
            url, json={"channel": "sms", "purpose": "!", "granted": True}, headers=auth(world.bob)
        )
        assert r.status_code == 422  # refused: nothing to tell
        assert published == []
        r = client.post(
            url, json={"channel": "sms", "purpose": "all", "granted": True}, headers=auth(world.bob)
        )
        assert r.status_code == 201, r.text
        assert told(published) == [updated]
        assert published[0]["workspace_id"] == world.acme.workspace.id
        r = client.put(
            f"/api/v1/customers/{customer.id}/tags", json={"tags": ["vip"]}, headers=auth(world.bob)
        )
        assert r.status_code == 200
        assert told(published) == [updated] * 2
        with database.session() as db:
            sms_keyword(database, customer, "STOP", granted=False, db=db)
            assert len(published) == 2  # not before the keyword's transaction commits
        assert told(published) == [updated] * 3


def test_the_profile_adds_up_the_customers_history(
    client: TestClient, world: World, database: Database
) -> None:
    customer = world.acme.opened.customer
    with database.session() as db:
        for order_id, total, currency, status in (
            ("a", 2500, "EUR", "completed"),
            ("b", 1000, "EUR", "completed"),
            ("c", 700, "EUR", "refunded"),
            ("d", 999, "USD", "completed"),
        ):
            db.add(
                Order(
                    workspace_id=world.acme.workspace.id,
                    customer_id=customer.id,
                    order_id=order_id,
                    total_minor=total,
                    currency=currency,
                    status=status,
                )
            )
    client.put(
        f"/api/v1/customers/{customer.id}/tags", json={"tags": ["vip"]}, headers=auth(world.bob)
    )
    r = client.get(f"/api/v1/customers/{customer.id}/profile", headers=auth(world.victor))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tags"] == ["vip"]
    figures = body["figures"]
    assert figures["channels"] == [world.acme.inbox.channel]  # type: ignore[union-attr]
    assert figures["conversations"] == 1
    assert figures["orders"] == 4
    assert figures["total_spend_minor"] == {"EUR": 3500, "USD": 999}
    assert figures["total_spend"] == {"EUR": "35.00", "USD": "9.99"}
    assert figures["average_csat"] is None
    assert body["identities"] and body["attribute_definitions"] == []


def test_a_total_spend_beyond_a_64_bit_integer_is_added_up_exactly(
    client: TestClient, world: World, database: Database
) -> None:
    # Each order fits the column, but SQLite's SUM fails past 2**63: the profile was a 500.
    customer = world.acme.opened.customer
    totals = [2**63 - 1, 2**63 - 1, 2**63 - 1, 5, -7, -(2**40) - 3]
    with database.session() as db:
        for n, total in enumerate(totals):
            db.add(
                Order(
                    workspace_id=world.acme.workspace.id,
                    customer_id=customer.id,
                    order_id=f"o-{n}",
                    total_minor=total,
                    currency="USD",
                )
            )
        db.add(
            Order(
                workspace_id=world.acme.workspace.id,
                customer_id=customer.id,
                order_id="small",
                total_minor=-1,
                currency="EUR",
            )
        )
    r = client.get(f"/api/v1/customers/{customer.id}/profile", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    assert r.json()["figures"]["total_spend_minor"] == {"USD": sum(totals), "EUR": -1}


def test_amounts_past_what_a_double_holds_are_shown_to_the_cent(
    client: TestClient, world: World, database: Database
) -> None:
    # The panel and the timeline divided minor units as floats: an order of 2**53 + 1
    # cents showed as 90071992547409.94, and a browser read the JSON total rounded too.
    customer = world.acme.opened.customer
    with database.session() as db:
        for order_id, total, currency in (
            ("e", 2**53 + 1, "EUR"),
            ("u1", 2**63 - 1, "USD"),
            ("u2", 2**63 - 1, "USD"),
            ("g", -5, "GBP"),
        ):
            db.add(
                Order(
                    workspace_id=world.acme.workspace.id,
                    customer_id=customer.id,
                    order_id=order_id,
                    total_minor=total,
                    currency=currency,
                    status="completed",
                )
            )
    r = client.get(
        f"/api/v1/customers/{customer.id}/timeline",
        params={"kind": "order"},
        headers=auth(world.bob),
    )
    summaries = {e["data"]["order_id"]: e["summary"] for e in r.json()["items"]}
    assert summaries == {
        "e": "Order e: 90071992547409.93 EUR",
        "u1": "Order u1: 92233720368547758.07 USD",
        "u2": "Order u2: 92233720368547758.07 USD",
        "g": "Order g: -0.05 GBP",
    }
    r = client.get(f"/api/v1/customers/{customer.id}/profile", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    figures = r.json()["figures"]
    assert figures["total_spend_minor"] == {"EUR": 2**53 + 1, "USD": 2**64 - 2, "GBP": -5}
    assert f'"EUR":{2**53 + 1}' in r.text  # the JSON integer is written whole
    assert figures["total_spend"] == {
        "EUR": "90071992547409.93",
        "USD": "184467440737095516.14",
        "GBP": "-0.05",
    }


def test_tags_put_at_once_leave_one_of_the_sets_and_never_fail(
    client: TestClient, world: World
) -> None:
    # PUT replaces the set. Requests at the same moment (two agents, a retried call) each
    # get their answer, and the customer ends with one whole set, not a mix of them.
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}/tags"
    sets = [["vip", "shared"], ["churn-risk", "shared"], ["vip", "b2b"], ["b2b", "shared"]] * 4
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda tags: client.put(url, json={"tags": tags}, headers=auth(world.bob)), sets
            )
        )
    assert [r.status_code for r in answers] == [200] * len(sets), [r.text for r in answers]
    final = client.get(f"/api/v1/customers/{customer.id}/profile", headers=auth(world.bob))
    assert sorted(final.json()["tags"]) in [sorted(s) for s in sets]


def test_a_text_attribute_too_long_to_keep_is_refused_by_the_api_an_import_and_events(
    client: TestClient, world: World, database: Database, tmp_path: Path
) -> None:
    # A text attribute was cut to 2,000 characters without a word: the API answered 200,
    # the import counted the row as imported and the events API took the batch, each
    # having dropped the rest of the value.
    define(client, world, "notes", "text")
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}"
    longest, too_long = "n" * 2000, "n" * 2001
    r = client.patch(url, json={"attributes": {"notes": longest}}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["attributes"]["notes"] == longest
    for method, path in (("PATCH", url), ("POST", "/api/v1/customers")):
        r = client.request(
            method, path, json={"attributes": {"notes": too_long}}, headers=auth(world.bob)
        )
        assert r.status_code == 422, (method, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "notes is text of at most 2000 characters, not 2001"
    assert client.get(url, headers=auth(world.bob)).json()["attributes"]["notes"] == longest

    csv_path = tmp_path / "customers.csv"
    csv_path.write_text(
        f"name,email,notes\nAda,ada@example.com,{longest}\nBea,bea@example.com,{too_long}\n",
        encoding="utf-8",
    )
    report = importer.import_customers(
        database, workspace_id=world.acme.workspace.id, path=csv_path, mapping={}
    )
    assert report.created == 1
    assert [(e.line, e.reason) for e in report.errors] == [
        (3, "notes is text of at most 2000 characters, not 2001")
    ]

    r = client.post("/api/v1/event-sources", json={"name": "site"}, headers=auth(world.alice))
    key = base64.b64encode(f"{r.json()['write_key']}:".encode()).decode()
    identify = {"type": "identify", "userId": "long-1", "traits": {"notes": too_long}}
    r = client.post(
        "/api/v1/events/batch",
        json={"batch": [identify]},
        headers={"Authorization": f"Basic {key}"},
    )
    assert (r.status_code, r.json()["detail"]) == (
        422,
        "batch[0]: notes is text of at most 2000 characters, not 2001",
    )


def test_a_withdrawal_of_all_governs_every_purpose_and_a_grant_of_all_only_the_undecided(
    database: Database, world: World
) -> None:
    # may_contact read only the purpose asked: after an SMS STOP (purpose `all` withdrawn)
    # a marketing grant recorded since, or one the keyword did not cover, still said yes.
    customer = world.acme.opened.customer
    start = utcnow() - timedelta(days=1)
    with database.session() as db:

        def decide(minutes: int, channel: ConsentChannel, purpose: str, granted: bool) -> None:
            db.add(
                Consent(
                    workspace_id=customer.workspace_id,
                    customer_id=customer.id,
                    channel=channel,
                    purpose=purpose,
                    granted=granted,
                    source="test",
                    recorded_at=start + timedelta(minutes=minutes),
                )
            )
            db.flush()

        def may(purpose: str, channel: ConsentChannel = ConsentChannel.sms) -> bool:
            return profile.may_contact(
                db, customer_id=customer.id, channel=channel, purpose=purpose
            )

        assert not may("marketing")  # never asked: no
        decide(1, ConsentChannel.sms, "marketing", True)
        decide(1, ConsentChannel.email, "marketing", True)
        assert may("marketing")
        decide(2, ConsentChannel.sms, "all", False)  # STOP
        decide(3, ConsentChannel.sms, "marketing", True)  # granted again, after the STOP
        assert not may("marketing") and not may("all")
        refusal = profile.withdrawn(db, customer_id=customer.id, channel=ConsentChannel.sms)
        assert refusal is not None and refusal.purpose == "all"
        assert may("marketing", ConsentChannel.email)  # another channel: untouched
        assert profile.withdrawn(db, customer_id=customer.id, channel=ConsentChannel.email) is None
        decide(4, ConsentChannel.sms, "all", True)  # START
        assert may("marketing") and may("all") and may("newsletter")
        # A yes to everything does not undo a no to one purpose, older or newer.
        decide(5, ConsentChannel.sms, "surveys", False)
        decide(6, ConsentChannel.sms, "all", True)
        assert not may("surveys") and may("newsletter")
        decide(7, ConsentChannel.sms, profile.SERVICE, False)
        refusal = profile.withdrawn(db, customer_id=customer.id, channel=ConsentChannel.sms)
        assert refusal is not None and refusal.purpose == profile.SERVICE


def test_amounts_are_shown_in_their_currencys_decimals_and_totalled_per_currency(
    client: TestClient, world: World, database: Database
) -> None:
    # Every currency was taken to have two decimals: an order of 1500 yen showed as
    # "15.00 JPY" and one of 1.234 dinars as "12.34 KWD".
    customer = world.acme.opened.customer
    with database.session() as db:
        for order_id, total, currency in (
            ("y1", 1500, "JPY"),
            ("y2", 250, "JPY"),
            ("k", 1234, "KWD"),
            ("o", -5, "OMR"),
            ("e", 1999, "EUR"),
            ("c", 1, "CLF"),
        ):
            db.add(
                Order(
                    workspace_id=world.acme.workspace.id,
                    customer_id=customer.id,
                    order_id=order_id,
                    total_minor=total,
                    currency=currency,
                    status="completed",
                )
            )
    r = client.get(
        f"/api/v1/customers/{customer.id}/timeline",
        params={"kind": "order"},
        headers=auth(world.bob),
    )
    summaries = {e["data"]["order_id"]: e["summary"] for e in r.json()["items"]}
    assert summaries == {
        "y1": "Order y1: 1500 JPY",
        "y2": "Order y2: 250 JPY",
        "k": "Order k: 1.234 KWD",
        "o": "Order o: -0.005 OMR",
        "e": "Order e: 19.99 EUR",
        "c": "Order c: 0.0001 CLF",
    }
    r = client.get(f"/api/v1/customers/{customer.id}/profile", headers=auth(world.bob))
    figures = r.json()["figures"]
    assert figures["total_spend_minor"] == {
        "JPY": 1750,
        "KWD": 1234,
        "OMR": -5,
        "EUR": 1999,
        "CLF": 1,
    }
    assert figures["total_spend"] == {
        "JPY": "1750",
        "KWD": "1.234",
        "OMR": "-0.005",
        "EUR": "19.99",
        "CLF": "0.0001",
    }


def test_after_an_sms_stop_an_agent_cannot_grant_every_purpose_back_by_hand(
    client: TestClient, world: World, database: Database
) -> None:
    # An agent could record "all" granted after the customer's STOP: Rapport then sent SMS
    # the provider refuses (it blocks the number until the customer texts START).
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}/consents"
    sms_keyword(database, customer, "STOP", granted=False)
    grant_all = {"channel": "sms", "purpose": "all", "granted": True}
    r = client.post(url, json=grant_all, headers=auth(world.bob))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "SMS keyword STOP" in r.json()["detail"] and "START" in r.json()["detail"]
    with database.session() as db:
        decision = profile.in_force(
            db, customer_id=customer.id, channel=ConsentChannel.sms, purpose="all"
        )
        assert decision is not None and not decision.granted  # nothing was recorded
    # A single purpose, another channel, and a withdrawal by hand are still recorded; and
    # after an agent's own withdrawal of everything, an agent may grant it back.
    for body in (
        {"channel": "sms", "purpose": "surveys", "granted": True},
        {"channel": "email", "purpose": "all", "granted": False},
        {"channel": "email", "purpose": "all", "granted": True},
    ):
        assert client.post(url, json=body, headers=auth(world.bob)).status_code == 201, body
    sms_keyword(database, customer, "START", granted=True)
    # Once the customer's START lifted it, a grant of "all" by hand is recorded again.
    assert client.post(url, json=grant_all, headers=auth(world.bob)).status_code == 201


def test_an_admin_changes_a_definitions_label_and_list_values_and_it_is_audited(
    client: TestClient, world: World, database: Database
) -> None:
    plan = define(client, world, "plan", "list", label="Plna", options=["free", "pro"])
    url = f"/api/v1/attribute-definitions/{plan['id']}"
    r = client.patch(
        url,
        # Added, reordered, trimmed, each once: kept as define keeps a list's values.
        json={"label": " Plan ", "options": ["enterprise", " pro", "free", "pro", ""]},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["key"], changed["type"], changed["label"]) == ("plan", "list", "Plan")
    assert changed["options"] == ["enterprise", "pro", "free"]
    listed = client.get("/api/v1/attribute-definitions", headers=auth(world.bob)).json()
    assert listed == [changed]
    # A field left out stays; an empty label is made from the key, as on define.
    r = client.patch(url, json={"label": ""}, headers=auth(world.alice))
    assert r.status_code == 200 and r.json()["options"] == ["enterprise", "pro", "free"]
    assert r.json()["label"] == "Plan"
    # Nothing changed (the same values, an empty body): nothing recorded, below.
    same = {"options": ["enterprise", "pro", "free"]}
    assert client.patch(url, json=same, headers=auth(world.alice)).json() == r.json()
    assert client.patch(url, headers=auth(world.alice)).json() == r.json()

    # The new value is one agents can set.
    customer = world.acme.opened.customer
    r = client.patch(
        f"/api/v1/customers/{customer.id}",
        json={"attributes": {"plan": "enterprise"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 200 and r.json()["attributes"]["plan"] == ["enterprise"]
    with database.session() as db:
        rows = db.execute(
            select(AuditLog.target_id, AuditLog.data).where(AuditLog.action == "attribute.change")
        ).all()
    assert rows == [
        (
            plan["id"],
            {
                "key": "plan",
                "label": {"from": "Plna", "to": "Plan"},
                "options": {"from": ["free", "pro"], "to": ["enterprise", "pro", "free"]},
            },
        )
    ]


def test_a_definitions_key_and_type_cannot_change(client: TestClient, world: World) -> None:
    seats = define(client, world, "seats", "number", label="Seats")
    url = f"/api/v1/attribute-definitions/{seats['id']}"
    for body in (
        {"key": "licences"},
        {"type": "text", "label": "Licences"},
        {"key": "seats", "type": "number"},  # even as they are: neither is the PATCH's
    ):
        r = client.patch(url, json=body, headers=auth(world.alice))
        assert r.status_code == 422, body
        assert r.headers["content-type"] == "application/problem+json"
        assert "cannot change once defined" in r.text, r.text
    # A field a definition does not have is refused, not ignored.
    r = client.patch(url, json={"lable": "Licences"}, headers=auth(world.alice))
    assert r.status_code == 422 and "lable" in r.text
    # Only a list has allowed values.
    r = client.patch(url, json={"options": ["1", "2"]}, headers=auth(world.alice))
    assert r.status_code == 422
    assert "seats is a number attribute: only a list has allowed values" in r.json()["detail"]
    left = client.get("/api/v1/attribute-definitions", headers=auth(world.alice)).json()
    assert left == [seats]


def test_only_admins_change_a_definition(client: TestClient, world: World) -> None:
    plan = define(client, world, "plan", "list", options=["free", "pro"])
    url = f"/api/v1/attribute-definitions/{plan['id']}"
    for token in (world.bob, world.victor):  # an agent, a viewer
        r = client.patch(url, json={"label": "Tier"}, headers=auth(token))
        assert r.status_code == 403, r.text
    left = client.get("/api/v1/attribute-definitions", headers=auth(world.bob)).json()
    assert left == [plan]


def test_another_workspaces_definition_is_not_found(client: TestClient, world: World) -> None:
    plan = define(client, world, "plan", "list", options=["free", "pro"])
    for url in (
        f"/api/v1/attribute-definitions/{plan['id']}",  # Acme's, to Globex's owner
        "/api/v1/attribute-definitions/nosuchdefinition",
    ):
        r = client.patch(url, json={"label": "Mine"}, headers=auth(world.mallory))
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
    left = client.get("/api/v1/attribute-definitions", headers=auth(world.alice)).json()
    assert left == [plan]


def test_a_value_taken_out_of_a_list_stays_on_the_customers_who_hold_it(
    client: TestClient, world: World
) -> None:
    plan = define(client, world, "plan", "list", options=["free", "pro", "legacy"])
    customer = world.acme.opened.customer
    url = f"/api/v1/customers/{customer.id}"
    r = client.patch(url, json={"attributes": {"plan": ["pro", "legacy"]}}, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    r = client.patch(
        f"/api/v1/attribute-definitions/{plan['id']}",
        json={"options": ["free", "pro"]},
        headers=auth(world.alice),
    )
    assert r.status_code == 200 and r.json()["options"] == ["free", "pro"]
    assert client.get(url, headers=auth(world.bob)).json()["attributes"]["plan"] == [
        "pro",
        "legacy",
    ]
    # Set again from now on, it is refused, as any value outside the list.
    r = client.patch(url, json={"attributes": {"plan": ["legacy"]}}, headers=auth(world.bob))
    assert r.status_code == 422 and "plan takes free, pro" in r.json()["detail"]
    assert client.get(url, headers=auth(world.bob)).json()["attributes"]["plan"] == [
        "pro",
        "legacy",
    ]
