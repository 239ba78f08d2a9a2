"""Event times as a sender's clock writes them: late, early, out of order."""

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.events.test_segment import basic, source
from tests.factories import World


def test_an_event_dated_in_the_future_is_taken_as_received_not_kept_on_top(
    client: TestClient, world: World
) -> None:
    key = source(client, world)
    sent = {"userId": "u-ahead", "traits": {"name": "Ahead"}, "timestamp": "2999-01-01T00:00:00Z"}
    assert client.post("/api/v1/events/identify", json=sent, headers=basic(key)).status_code == 200
    [ahead] = client.get(
        "/api/v1/customers", params={"q": "Ahead"}, headers=auth(world.bob)
    ).json()["items"]
    assert ahead["last_seen_at"] < "2100"
    # Someone who writes afterwards comes above them in the list, as the one seen last.
    later = {"userId": "u-later", "traits": {"name": "Later"}}
    client.post("/api/v1/events/identify", json=later, headers=basic(key))
    listed = client.get("/api/v1/customers", headers=auth(world.bob)).json()["items"]
    names = [c["name"] for c in listed]
    assert names.index("Later") < names.index("Ahead")
    # And their history: the event of 2999 is at the time it was received.
    client.post(
        "/api/v1/events/track",
        json={"userId": "u-ahead", "event": "Clicked", "timestamp": "2999-01-02T00:00:00Z"},
        headers=basic(key),
    )
    client.post(
        "/api/v1/events/track", json={"userId": "u-ahead", "event": "Bought"}, headers=basic(key)
    )
    items = client.get(
        f"/api/v1/customers/{ahead['id']}/timeline",
        params={"kind": "event"},
        headers=auth(world.bob),
    ).json()["items"]
    assert [e["type"] for e in items] == ["Bought", "Clicked", "Identify"]
    assert all(e["at"] < "2100" for e in items)


def test_an_event_of_the_past_sent_late_takes_its_place_in_the_history(
    client: TestClient, world: World
) -> None:
    key = source(client, world)
    for name, at in (("Second", "2026-11-02T10:00:00Z"), ("First", "2026-11-01T10:00:00Z")):
        r = client.post(
            "/api/v1/events/track",
            json={"userId": "u-late", "event": name, "timestamp": at},
            headers=basic(key),
        )
        assert r.status_code == 200, r.text
    [late] = client.get(
        "/api/v1/customers", params={"q": "u-late"}, headers=auth(world.bob)
    ).json()["items"]
    assert late["last_seen_at"].startswith("2026-11-02T10:00")
    items = client.get(
        f"/api/v1/customers/{late['id']}/timeline",
        params={"kind": "event"},
        headers=auth(world.bob),
    ).json()["items"]
    assert [e["type"] for e in items] == ["Second", "First"]


def test_events_of_one_instant_are_in_the_history_as_received_newest_first_on_every_page(
    client: TestClient, world: World
) -> None:
    # A tracking library's batch often stamps several events with one clock reading.
    key = source(client, world)
    names = [f"Step {i:02d}" for i in range(30)]
    batch = [
        {"type": "track", "userId": "u-instant", "event": n, "timestamp": "2026-11-03T10:00:00Z"}
        for n in names
    ]
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert r.status_code == 200, r.text
    [person] = client.get(
        "/api/v1/customers", params={"q": "u-instant"}, headers=auth(world.bob)
    ).json()["items"]
    seen: list[str] = []
    cursor = None
    while True:
        page = client.get(
            f"/api/v1/customers/{person['id']}/timeline",
            params={"kind": "event", "limit": 7, **({"cursor": cursor} if cursor else {})},
            headers=auth(world.bob),
        ).json()
        seen += [e["type"] for e in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == names[::-1]
