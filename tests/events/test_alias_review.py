"""An alias from a website joins a device's history to a user, never two known people."""

from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.customers.models import Customer, MergeSuggestion
from rapport.db import Database
from tests.conftest import auth
from tests.events.test_segment import basic, source
from tests.factories import World


def test_an_alias_naming_two_known_users_puts_them_to_review_and_merges_neither(
    client: TestClient, world: World, database: Database
) -> None:
    key = source(client, world)  # a write key is public: it is in the site's pages
    for user, name in (("victim-1", "Vera"), ("someone-2", "Sam")):
        r = client.post(
            "/api/v1/events/identify",
            json={"userId": user, "traits": {"name": name}},
            headers=basic(key),
        )
        assert r.status_code == 200, r.text
    r = client.post(
        "/api/v1/events/alias",
        json={"previousId": "victim-1", "userId": "someone-2"},
        headers=basic(key),
    )
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        people = {c.name: c for c in db.scalars(select(Customer).where(Customer.name != ""))}
        assert people["Vera"].merged_into_id is None and people["Sam"].merged_into_id is None
        [suggested] = db.scalars(select(MergeSuggestion)).all()
        assert {suggested.left_id, suggested.right_id} == {people["Vera"].id, people["Sam"].id}
        assert suggested.status == "pending" and "alias" in suggested.reason
    # Vera's history is still hers alone.
    vera = people["Vera"].id
    items = client.get(
        f"/api/v1/customers/{vera}/timeline", params={"kind": "event"}, headers=auth(world.bob)
    ).json()["items"]
    assert [e["type"] for e in items] == ["Identify"]


def test_an_alias_of_an_anonymous_visitor_still_joins_them_to_the_user(
    client: TestClient, world: World, database: Database
) -> None:
    key = source(client, world)
    batch = [
        {"type": "page", "anonymousId": "dev-5", "name": "Pricing"},
        {"type": "identify", "userId": "user-5", "traits": {"name": "Una"}},
        {"type": "alias", "previousId": "dev-5", "userId": "user-5"},
    ]
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        assert db.scalar(select(MergeSuggestion.id)) is None
        merged = db.scalars(select(Customer).where(Customer.merged_into_id.is_not(None))).all()
        assert len(merged) == 1
