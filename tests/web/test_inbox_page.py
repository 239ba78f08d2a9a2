"""The inbox page: filters and sorts from the query string, bulk controls for agents only,
and everything a user typed shown as text."""

import re

import pytest
from fastapi.testclient import TestClient

from rapport.conversations import service
from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import World
from tests.web.test_pages import sign_in


def test_the_inbox_filters_by_priority_and_keeps_the_choice(
    client: TestClient, world: World
) -> None:
    hot = inbound(client, world, "p1", "p1@example.com")
    calm = inbound(client, world, "p2", "p2@example.com")
    client.post(
        f"/api/v1/conversations/{hot}/priority", json={"priority": "high"}, headers=auth(world.bob)
    )
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all", "priority": "high"}).text
    assert hot in page and calm not in page
    assert '<option value="high" selected>' in page
    assert 'class="priority pr-high"' in page


def test_the_inbox_sorts_by_oldest_waiting(client: TestClient, world: World) -> None:
    first = inbound(client, world, "o1", "o1@example.com")
    second = inbound(client, world, "o2", "o2@example.com")
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all", "sort": "waiting"}).text
    assert page.index(first) < page.index(second)
    assert "waiting since" in page
    newest = client.get("/app/inbox", params={"view": "all"}).text
    assert newest.index(second) < newest.index(first)


def test_malformed_filters_are_ignored_not_errors(client: TestClient, world: World) -> None:
    sign_in(client, "bob@acme.test")
    r = client.get(
        "/app/inbox",
        params={
            "view": "all",
            "active_from": "yesterday",
            "sort": "chaos",
            "sla_state": "x",
            "priority": "?",
        },
    )
    assert r.status_code == 200
    assert world.acme.opened.conversation.id in r.text


def test_a_hostile_label_filter_is_shown_as_text(client: TestClient, world: World) -> None:
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all", "label": '"><script>x()</script>'}).text
    assert "<script>x()" not in page
    assert "&#34;&gt;&lt;script&gt;x()&lt;/script&gt;" in page


def test_bulk_controls_are_for_agents_not_viewers(client: TestClient, world: World) -> None:
    sign_in(client, "bob@acme.test")
    assert 'id="bulk"' in client.get("/app/inbox?view=all").text
    client.post("/api/v1/auth/logout")
    sign_in(client, "victor@acme.test")
    page = client.get("/app/inbox?view=all").text
    assert 'id="bulk"' not in page and 'class="pick"' not in page


def test_an_unread_count_at_its_limit_shows_as_more(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "UNREAD_LIMIT", 3)
    for n in range(3):
        inbound(client, world, f"m{n}", f"m{n}@example.com")
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all"}).text
    assert '>Unassigned <span class="badge-count">2+</span>' in page
    assert ">Mine </a>" in page  # nothing unread of bob's: no badge


def test_each_conversation_shows_its_last_message(client: TestClient, world: World) -> None:
    asked = inbound(client, world, "pv1", "pv1@example.com")
    client.post(
        f"/api/v1/conversations/{asked}/messages",
        json={"text": "Your   parcel\nleft <b>today</b>."},
        headers=auth(world.bob),
    ).raise_for_status()
    client.post(
        f"/api/v1/conversations/{asked}/notes",
        json={"text": "internal: do not show"},
        headers=auth(world.bob),
    ).raise_for_status()
    waiting = inbound(client, world, "pv2", "pv2@example.com")
    titled = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "pv3",
            "text": "see subject",
            "subject": "Invoice <#1077>",
            "from": {"email": "pv3@example.com"},
        },
        headers=auth(world.bob),
    ).json()["conversation_id"]
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all"}).text
    assert '<span class="subject">Invoice &lt;#1077&gt;</span> · see subject' in page
    opened = client.get(f"/app/conversations/{titled}").text
    assert '<p class="subject">Invoice &lt;#1077&gt;</p>' in opened
    # Our reply (whitespace folded, markup as text), not the note after it.
    assert '<span class="by">We wrote:</span> Your parcel left &lt;b&gt;today&lt;/b&gt;.' in page
    assert "do not show" not in page
    assert '<span class="preview">hello pv2</span>' in page and waiting in page


def test_the_last_day_of_the_calendar_is_a_filter_not_an_error(
    client: TestClient, world: World
) -> None:
    # "To 9999-12-31" means before the midnight after it, which has no datetime: a 500.
    sign_in(client, "bob@acme.test")
    r = client.get(
        "/app/inbox",
        params={"view": "all", "active_from": "0001-01-01", "active_until": "9999-12-31"},
    )
    assert r.status_code == 200
    assert world.acme.opened.conversation.id in r.text


def test_a_paused_sla_clock_shows_as_paused_with_the_time_it_has_left(
    client: TestClient, world: World
) -> None:
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Day", "resolution_minutes": 600},
        headers=auth(world.alice),
    ).raise_for_status()
    held = inbound(client, world, "sp1", "sp1@example.com")
    running = inbound(client, world, "sp2", "sp2@example.com")
    client.post(
        f"/api/v1/conversations/{held}/status", json={"status": "pending"}, headers=auth(world.bob)
    ).raise_for_status()
    sign_in(client, "bob@acme.test")

    def item(conv: str, status: str) -> str:
        page = client.get("/app/inbox", params={"view": "all", "status": status}).text
        return page[page.index(f'data-id="{conv}"') :].split("</li>", 1)[0]

    held_item = item(held, "pending")
    # The clock ran from the message to the pause: under a second, or (a loaded run) more.
    assert re.search(
        r'<span class="sla sla-paused" title="SLA resolution clock paused, '
        r'(10 h 0 min|9 h 59 min) left">SLA paused</span>',
        held_item,
    ), held_item
    running_item = item(running, "open")
    assert ">SLA ok</span>" in running_item and "paused" not in running_item


def test_the_inbox_opens_on_open_conversations_and_lists_others_when_asked(
    client: TestClient, world: World
) -> None:
    # "All" listed resolved conversations among those to act on; the API's own default
    # (every status) is another matter: its clients rely on it.
    waiting = inbound(client, world, "os1", "os1@example.com")
    done = inbound(client, world, "os2", "os2@example.com")
    client.post(
        f"/api/v1/conversations/{done}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()
    sign_in(client, "bob@acme.test")
    for params in ({"view": "all"}, {"view": "unassigned"}, {"view": "all", "status": "chaos"}):
        page = client.get("/app/inbox", params=params).text
        assert waiting in page and done not in page, params
        assert '<option value="open" selected>' in page
        # The default is no filter turned on: a phone keeps the filters folded.
        assert 'data-on="0"><summary>Filters</summary>' in page
    resolved = client.get("/app/inbox", params={"view": "all", "status": "resolved"}).text
    assert done in resolved and waiting not in resolved
    assert '<option value="resolved" selected>' in resolved
    assert 'data-on="1"><summary>Filters (1 on)</summary>' in resolved
    every = client.get("/app/inbox", params={"view": "all", "status": "all"}).text
    assert done in every and waiting in every
    assert '<option value="all" selected>Any status</option>' in every
    api = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"]
    assert {waiting, done} <= {c["id"] for c in api}


def test_the_more_link_keeps_the_status_chosen(client: TestClient, world: World) -> None:
    for n in range(51):
        conv = inbound(client, world, f"mr{n}", f"mr{n}@example.com")
        client.post(
            f"/api/v1/conversations/{conv}/status",
            json={"status": "resolved"},
            headers=auth(world.bob),
        ).raise_for_status()
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all", "status": "resolved"}).text
    assert 'class="more" href="?status=resolved&amp;view=all&amp;cursor=' in page
    # Nothing to act on: said so, not "no conversations" while 51 are resolved.
    assert "No open conversations here." in client.get("/app/inbox?view=mine").text
