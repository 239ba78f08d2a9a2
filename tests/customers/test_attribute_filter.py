"""Customers found by a custom attribute: "plan is Pro", typed by the key's definition,
a list holding the value, keys no definition names, and only the caller's workspace."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.customers import service
from rapport.db import Database
from rapport.problems import Invalid
from tests.conftest import auth
from tests.factories import World


def _customer(client: TestClient, token: str, email: str, attributes: dict[str, Any]) -> str:
    r = client.post(
        "/api/v1/customers", json={"email": email, "attributes": attributes}, headers=auth(token)
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]  # type: ignore[no-any-return]


@pytest.fixture
def people(client: TestClient, world: World) -> dict[str, str]:
    # Stored before any definition (an import's columns), then plan, seats and vip defined.
    ann = _customer(
        client,
        world.bob,
        "ann@example.com",
        {"plan": ["Pro", "Legacy"], "seats": 10, "vip": True, "source": "fair", "score": 42},
    )
    ben = _customer(
        client,
        world.bob,
        "ben@example.com",
        {"plan": "Free", "seats": 3, "vip": False, "score": "42", "flag": 1},
    )
    cat = _customer(
        client,
        world.bob,
        "cat@example.com",
        {"flag": True, "source": "Fair", "meta": {"tier": "Pro"}, "big": 1e20, "n": 1000},
    )
    for key, kind, options in (
        ("plan", "list", ["Free", "Pro", "Enterprise"]),
        ("seats", "number", []),
        ("vip", "boolean", []),
    ):
        r = client.post(
            "/api/v1/attribute-definitions",
            json={"key": key, "type": kind, "options": options},
            headers=auth(world.alice),
        )
        assert r.status_code == 201, r.text
    # Another workspace's Pro customer is never found from this one.
    _customer(client, world.mallory, "gus@example.com", {"plan": ["Pro"]})
    return {"ann": ann, "ben": ben, "cat": cat}


def test_customers_are_found_by_an_attribute_read_in_its_type(
    database: Database, world: World, people: dict[str, str]
) -> None:
    names = {v: k for k, v in people.items()}

    def found(*pairs: tuple[str, str]) -> set[str]:
        with database.session(write=False) as db:
            rows = service.search(
                db,
                workspace_id=world.acme.workspace.id,
                q=None,
                cursor=None,
                limit=50,
                attributes=list(pairs),
            ).customers
        return {names.get(c.id, c.id) for c in rows}

    assert found(("plan", "Pro")) == {"ann"}  # a list holding it
    assert found(("plan", "Free")) == {"ben"}  # a lone value stored before the definition
    assert found(("seats", "10")) == {"ann"} == found(("seats", "10.0"))  # the number
    assert found(("vip", "yes")) == {"ann"} and found(("vip", "false")) == {"ben"}
    assert found(("plan", "Pro"), ("vip", "true")) == {"ann"}  # each holds
    assert found(("plan", "Pro"), ("vip", "false")) == set()
    # Keys no definition names: as written (exactly), or the number or true/false it spells.
    assert found(("source", "fair")) == {"ann"} and found(("source", "Fair")) == {"cat"}
    assert found(("score", "42")) == {"ann", "ben"}  # the number 42 and the text "42"
    assert found(("flag", "true")) == {"cat"}  # JSON true, not the number 1
    assert found(("flag", "1")) == {"ben"}
    assert found(("nothing", "x")) == set()
    assert found(("meta", "Pro")) == set()  # an object is never a match (SQLite walked it)
    assert found(("big", "1e20")) == {"cat"}  # beyond 64 bits: a 500 on both databases
    assert found(("seats", "10000000000000000000")) == set()
    assert found(("n", "1000")) == {"cat"} and found(("n", "1_000")) == set()
    # A value outside the key's type is refused as a change would be.
    for pair, said in (
        (("seats", "many"), "seats is a number"),
        (("vip", "perhaps"), "vip is true or false"),
        (("note", "x" * 501), "at most 500 characters"),
        (('pl"an', "x"), "not an attribute name"),
    ):
        with pytest.raises(Invalid, match=said):
            found(pair)


def test_the_api_finds_customers_by_attributes_each_holding(
    client: TestClient, world: World, people: dict[str, str]
) -> None:
    def found(*given: str) -> Any:
        r = client.get(
            "/api/v1/customers", params={"attribute": list(given)}, headers=auth(world.victor)
        )
        return r.status_code, (
            {c["id"] for c in r.json()["items"]} if r.status_code == 200 else r.json()["detail"]
        )

    assert found("plan:Pro") == (200, {people["ann"]})
    assert found("plan:Pro", "seats:10") == (200, {people["ann"]})
    assert found("plan:Pro", "seats:3") == (200, set())
    assert found("source:fair") == (200, {people["ann"]})  # the other workspace's never
    assert found("seats:many") == (422, "seats is a number, not 'many'")
    assert found("plan") == (422, "attribute is key:value, not 'plan'")


def test_a_value_taken_out_of_a_list_still_finds_the_customers_who_hold_it(
    client: TestClient, world: World, people: dict[str, str]
) -> None:
    # Ann holds ["Pro", "Legacy"], Legacy never allowed: refused as "plan takes Free, Pro,
    # Enterprise", so the customers an admin must clean up could not be listed.
    def found(value: str) -> Any:
        r = client.get(
            "/api/v1/customers", params={"attribute": f"plan:{value}"}, headers=auth(world.bob)
        )
        return r.status_code, {c["id"] for c in r.json()["items"]}

    assert found("Legacy") == (200, {people["ann"]})
    plan = next(
        d
        for d in client.get("/api/v1/attribute-definitions", headers=auth(world.bob)).json()
        if d["key"] == "plan"
    )
    r = client.patch(
        f"/api/v1/attribute-definitions/{plan['id']}",
        json={"options": ["Free", "Enterprise"]},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    assert found("Pro") == (200, {people["ann"]})
    assert found("Gold") == (200, set())
