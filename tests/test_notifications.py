"""Mentions in notes and assignments notify the agent concerned, and only them."""

import re
import time
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.auth.models import Role, User
from rapport.db import Database, new_id
from rapport.notifications.models import Notification
from rapport.workspaces import service as workspaces
from tests.conftest import auth, sqlite_only, sqlite_plans
from tests.factories import PASSWORD, World


def test_a_note_mentioning_a_colleague_notifies_them(client: TestClient, world: World) -> None:
    conv = world.acme.opened.conversation.id
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        client.post(
            f"/api/v1/conversations/{conv}/notes",
            json={"text": "@bob can you take this? cc @nobody"},
            headers=auth(world.alice),
        )
        while (event := ws.receive_json())["type"] != "notification.created":
            pass
    assert event["payload"]["user_id"] == world.acme.users["bob"].id
    mine = client.get(
        "/api/v1/notifications", params={"unread": True}, headers=auth(world.bob)
    ).json()["items"]
    assert [(n["kind"], n["conversation_id"]) for n in mine] == [("mention", conv)]
    assert client.get("/api/v1/notifications", headers=auth(world.alice)).json()["items"] == []
    assert client.post("/api/v1/notifications/read", json={}, headers=auth(world.bob)).json() == {
        "marked": 1
    }
    assert client.get(
        "/api/v1/notifications", params={"unread": True}, headers=auth(world.bob)
    ).json() == {"items": [], "next_cursor": None}


def test_a_viewer_cannot_be_mentioned_into_work(client: TestClient, world: World) -> None:
    conv = world.acme.opened.conversation.id
    r = client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "@victor look"},
        headers=auth(world.alice),
    )
    assert client.get("/api/v1/notifications", headers=auth(world.victor)).json()["items"] == []
    assert r.json()["unknown_mentions"] == ["victor"]  # and the author is told


def test_a_mention_of_nobody_is_said_to_the_author(client: TestClient, world: World) -> None:
    # A typo (@bobb) notified nobody and said nothing: the author thought Bob knew.
    conv = world.acme.opened.conversation.id
    r = client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "@bobb @Bob please, and @bobb again; mail me@acme.test"},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["mentioned"] == [world.acme.users["bob"].id]
    assert got["unknown_mentions"] == ["bobb"] and got["ambiguous_mentions"] == []


def test_assigning_a_conversation_notifies_the_assignee(client: TestClient, world: World) -> None:
    conv = world.acme.opened.conversation.id
    client.post(
        f"/api/v1/conversations/{conv}/assign",
        json={"assignee_id": world.acme.users["bob"].id},
        headers=auth(world.alice),
    )
    listed = client.get("/api/v1/notifications", headers=auth(world.bob)).json()["items"]
    kinds = [n["kind"] for n in listed]
    assert kinds == ["assigned"]


def test_a_colleagues_notification_never_reaches_another_agents_socket(
    client: TestClient, world: World
) -> None:
    # Notifications went to every socket of the workspace, filtered only by the page's
    # script: any member's socket carried everyone's (the text of a note that mentions them).
    conv = world.acme.opened.conversation.id
    with client.websocket_connect("/api/v1/stream", headers=auth(world.alice)) as ws:
        assert ws.receive_json()["type"] == "hello"
        for author, text in ((world.alice, "@bob psst"), (world.bob, "@alice over to you")):
            client.post(
                f"/api/v1/conversations/{conv}/notes", json={"text": text}, headers=auth(author)
            )
        while (event := ws.receive_json())["type"] != "notification.created":
            pass
    assert event["payload"]["user_id"] == world.acme.users["alice"].id
    assert event["payload"]["text"] == "@alice over to you"


def test_marking_more_notifications_read_than_a_query_holds_is_refused(
    client: TestClient, world: World
) -> None:
    # Every id went into one query: past the 65,535 parameters PostgreSQL allows, a 500.
    ids = [f"{i:x}" for i in range(70_000)]
    r = client.post("/api/v1/notifications/read", json={"ids": ids}, headers=auth(world.bob))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = client.post(
        "/api/v1/notifications/read", json={"ids": ids[:1_000]}, headers=auth(world.bob)
    )
    assert r.json() == {"marked": 0}


def test_a_mention_that_fits_several_colleagues_notifies_none_and_tells_the_author(
    client: TestClient, world: World, database: Database
) -> None:
    # "@bob" went to whichever Bob the query returned first: the wrong one was notified
    # and the right one never knew. A handle that fits several members notifies none of
    # them; the author is told who it could be, and the full name or email picks one.
    with database.session() as db:
        for email, name in (("bstone@acme.test", "Bob Stone"), ("rob@acme.test", "Bob Stone")):
            workspaces.add_member(
                db,
                workspace_id=world.acme.workspace.id,
                email=email,
                role=Role.agent,
                password=PASSWORD,
                name=name,
                actor_role=Role.owner,
            )
        rob = db.scalar(select(User.id).where(User.email == "rob@acme.test"))
        stones = sorted(
            db.scalars(select(User.id).where(User.email.in_(["bstone@acme.test", "rob@acme.test"])))
        )
    bob = world.acme.users["bob"].id
    conv = world.acme.opened.conversation.id

    def note(text: str) -> dict[str, Any]:
        r = client.post(
            f"/api/v1/conversations/{conv}/notes", json={"text": text}, headers=auth(world.alice)
        )
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def notified() -> set[str]:
        with database.session(write=False) as db:
            return set(db.scalars(select(Notification.user_id)))

    body = note("@Bob and @bob.stone, please look")
    assert notified() == set() and body["mentioned"] == []
    assert [
        (a["handle"], sorted(m["id"] for m in a["members"])) for a in body["ambiguous_mentions"]
    ] == [
        ("bob", sorted([bob, *stones])),
        ("bob.stone", stones),
    ]
    body = note("@bob@acme.test and @rob@acme.test, please look.")
    assert body["ambiguous_mentions"] == []
    assert body["mentioned"] == [bob, rob]
    assert notified() == {bob, rob}
    body = note("@rob thanks")  # an email's local part that is nobody else's
    assert body["mentioned"] == [rob] and body["ambiguous_mentions"] == []


def _mention(client: TestClient, world: World, conv: str, text: str = "@bob look") -> None:
    r = client.post(
        f"/api/v1/conversations/{conv}/notes", json={"text": text}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text


def _unread(client: TestClient, token: str) -> int:
    r = client.get("/api/v1/notifications/unread-count", headers=auth(token))
    assert r.status_code == 200
    return int(r.json()["unread"])


def test_reading_a_conversations_notifications_leaves_the_others_and_tells_the_readers_pages(
    client: TestClient, world: World
) -> None:
    first = world.acme.opened.conversation.id
    other = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "n-2", "text": "hi", "from": {"email": "n2@example.com"}},
        headers=auth(world.alice),
    ).json()["conversation_id"]
    _mention(client, world, first)
    _mention(client, world, other)
    _mention(client, world, other, "@alice, for you")
    assert _unread(client, world.bob) == 2 and _unread(client, world.alice) == 0
    cursor = client.get("/api/v1/events", headers=auth(world.bob)).json()["cursor"]
    r = client.post(
        "/api/v1/notifications/read", json={"conversation_id": other}, headers=auth(world.bob)
    )
    assert r.json() == {"marked": 1}
    unread = client.get(
        "/api/v1/notifications", params={"unread": True}, headers=auth(world.bob)
    ).json()["items"]
    assert [n["conversation_id"] for n in unread] == [first]
    assert _unread(client, world.bob) == 1
    # Bob's other pages count again; no one else hears of what Bob read.
    events = client.get("/api/v1/events", params={"after": cursor}, headers=auth(world.bob)).json()[
        "events"
    ]
    assert [(e["type"], e["payload"]["marked"]) for e in events] == [("notifications.read", 1)]
    seen_by_alice = client.get(
        "/api/v1/events", params={"after": cursor}, headers=auth(world.alice)
    ).json()["events"]
    assert "notifications.read" not in [e["type"] for e in seen_by_alice]
    # Nothing left to read: nothing is written, no one is told.
    r = client.post(
        "/api/v1/notifications/read", json={"conversation_id": other}, headers=auth(world.bob)
    )
    assert r.json() == {"marked": 0}


def test_the_unread_count_stops_at_its_cap_and_the_list_at_its_limit(
    client: TestClient, world: World, database: Database
) -> None:
    from rapport.notifications import service

    with database.session() as db:
        for n in range(service.COUNT_CAP + 5):
            db.add(
                Notification(
                    workspace_id=world.acme.workspace.id,
                    user_id=world.acme.users["bob"].id,
                    kind="mention",
                    text=f"note {n}",
                )
            )
    assert _unread(client, world.bob) == service.COUNT_CAP
    listed = client.get("/api/v1/notifications", params={"limit": 3}, headers=auth(world.bob))
    assert len(listed.json()["items"]) == 3 and listed.json()["next_cursor"]
    r = client.get("/api/v1/notifications", params={"limit": 201}, headers=auth(world.bob))
    assert r.status_code == 422
    assert client.get("/api/v1/notifications/unread-count").status_code == 401


@sqlite_only
def test_counting_the_unread_reads_only_the_unread(
    client: TestClient, world: World, database: Database
) -> None:
    # Every page counts them: through the (user, workspace, time) index the count read
    # every notification the member ever had, read or not.
    with sqlite_plans(database, "FROM notifications") as plans:
        assert _unread(client, world.bob) == 0
    assert plans
    for _, plan in plans:
        assert "USING INDEX ix_notifications_unread" in plan, plan


def _add(database: Database, world: World, count: int, *, at: datetime | None = None) -> list[str]:
    """``count`` notifications for Bob, all made at ``at`` when given (ties the list must
    still order); their ids."""
    with database.session() as db:
        rows = [
            Notification(
                workspace_id=world.acme.workspace.id,
                user_id=world.acme.users["bob"].id,
                kind="mention",
                text=f"note {n}",
                **({"created_at": at} if at else {}),
            )
            for n in range(count)
        ]
        db.add_all(rows)
        db.flush()
        return [r.id for r in rows]


def _walk(
    client: TestClient, token: str, between: Any = None, **params: Any
) -> tuple[list[str], int]:
    """Every notification the list gives, page after page (``between`` run after each);
    their ids in order and how many pages."""
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        r = client.get(
            "/api/v1/notifications",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=auth(token),
        )
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        seen += [n["id"] for n in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages
        if between is not None:
            between(body["items"])


def test_every_notification_is_listed_once_page_by_page_while_new_ones_come(
    client: TestClient, world: World, database: Database
) -> None:
    # The list gave the newest 200 and nothing older could be read.
    same_moment = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    old = _add(database, world, 4, at=same_moment) + _add(database, world, 6)
    # Someone else's, and Bob's in another workspace (a row no membership leads to), are
    # never his here.
    with database.session() as db:
        for workspace, user in ((world.acme, "alice"), (world.globex, "bob")):
            db.add(
                Notification(
                    workspace_id=workspace.workspace.id,
                    user_id=world.acme.users[user].id,
                    kind="mention",
                    text="not Bob's here",
                )
            )
    came: list[str] = []
    seen, pages = _walk(client, world.bob, lambda _: came.extend(_add(database, world, 2)), limit=3)
    assert pages == 4 and len(came) == 6
    assert len(seen) == len(set(seen)) == 10  # none twice, none skipped, none of the new
    assert set(seen) == set(old)
    assert seen[-4:] == sorted(old[:4], reverse=True)  # a tie goes by id, newest first
    first = client.get("/api/v1/notifications", params={"limit": 6}, headers=auth(world.bob))
    assert {n["id"] for n in first.json()["items"]} == set(came)  # the new ones lead
    assert len(_walk(client, world.alice)[0]) == 1
    assert _walk(client, world.mallory)[0] == []


def test_a_cursor_the_api_did_not_give_is_a_problem(client: TestClient, world: World) -> None:
    for bad in ("nope", "W10", "WyJ5ZXN0ZXJkYXkiLCAiYSJd"):
        r = client.get("/api/v1/notifications", params={"cursor": bad}, headers=auth(world.bob))
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert "cursor" in r.json()["detail"]


def test_reading_unread_pages_as_they_come_skips_none_and_all_read_reads_every_page(
    client: TestClient, world: World, database: Database
) -> None:
    made = _add(database, world, 7)

    def read(items: list[dict[str, Any]]) -> None:
        # What an agent's client does: read a page of the unread, mark it read, go on.
        ids = [n["id"] for n in items]
        r = client.post("/api/v1/notifications/read", json={"ids": ids}, headers=auth(world.bob))
        assert r.json() == {"marked": len(ids)}

    seen, _ = _walk(client, world.bob, read, unread=True, limit=2)
    assert sorted(seen) == sorted(made) and len(seen) == 7  # an offset would have skipped half
    made = _add(database, world, 5)
    assert _unread(client, world.bob) == 5 + 1  # the last page was listed, not marked
    # "Mark all read" marks those of every page, not only the first page's.
    r = client.post("/api/v1/notifications/read", json={}, headers=auth(world.bob))
    assert r.json() == {"marked": 6}
    assert _walk(client, world.bob, unread=True, limit=2) == ([], 1)


def test_mark_all_read_up_to_the_newest_shown_leaves_unread_those_that_came_after(
    client: TestClient, world: World, database: Database
) -> None:
    # "Mark all read" marked those that came after the page drew its list: never seen.
    shown = _add(database, world, 3, at=datetime(2026, 1, 1, tzinfo=UTC))  # ties: by id
    newest_shown = max(shown)
    gone = new_id()  # one the page showed, deleted since (its conversation erased)
    time.sleep(0.002)  # a later millisecond: ids begin with it
    came_after = _add(database, world, 2)

    def read(body: dict[str, Any]) -> Any:
        return client.post("/api/v1/notifications/read", json=body, headers=auth(world.bob))

    assert read({"up_to": min(shown)}).json() == {"marked": 1}
    assert read({"up_to": newest_shown}).json() == {"marked": 2}
    assert read({"up_to": gone}).json() == {"marked": 0}
    unread = client.get("/api/v1/notifications", params={"unread": True}, headers=auth(world.bob))
    assert sorted(n["id"] for n in unread.json()["items"]) == sorted(came_after)
    assert read({"up_to": "nope"}).status_code == 422
    # Another member's id marks none of Bob's.
    r = client.post(
        "/api/v1/notifications/read", json={"up_to": came_after[0]}, headers=auth(world.alice)
    )
    assert r.json() == {"marked": 0} and _unread(client, world.bob) == 2
    # A client that names none (as every one did) still reads them all.
    assert read({}).json() == {"marked": 2}


def test_the_notifications_page_leads_to_the_older_ones(
    client: TestClient, world: World, database: Database
) -> None:
    from rapport.web.views import NOTIFICATIONS_SHOWN

    oldest = _add(database, world, 1, at=datetime(2026, 1, 1, tzinfo=UTC))[0]
    _add(database, world, NOTIFICATIONS_SHOWN)
    r = client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    assert r.status_code == 200
    page = client.get("/app/notifications").text
    assert f'data-id="{oldest}"' not in page
    more = re.search(r'<a class="more" href="\?cursor=([^"]+)">Older</a>', page)
    assert more is not None
    page = client.get("/app/notifications", params={"cursor": more.group(1)}).text
    assert f'data-id="{oldest}"' in page and 'class="more"' not in page
    assert '<a href="/app/notifications">Newest</a>' in page
    # All are unread still, the older page's and the newer's: one button reads them all.
    assert 'id="notifications-all-read" disabled' not in page


def test_the_notifications_page_shows_the_unread_alone_page_by_page(
    client: TestClient, world: World, database: Database
) -> None:
    from rapport.web.views import NOTIFICATIONS_SHOWN

    read = _add(database, world, 3)
    client.post("/api/v1/notifications/read", json={"ids": read}, headers=auth(world.bob))
    oldest = _add(database, world, 1, at=datetime(2026, 1, 1, tzinfo=UTC))[0]
    _add(database, world, NOTIFICATIONS_SHOWN)
    client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    page = client.get("/app/notifications", params={"unread": 1}).text
    assert '<a href="/app/notifications">All</a> · <strong>Unread</strong>' in page
    assert not any(f'data-id="{i}"' in page for i in read)
    more = re.search(r'<a class="more" href="\?cursor=([^"&]+)&amp;unread=1">Older</a>', page)
    assert more is not None, page[-600:]
    page = client.get("/app/notifications", params={"cursor": more.group(1), "unread": 1}).text
    assert f'data-id="{oldest}"' in page and not any(f'data-id="{i}"' in page for i in read)
    assert '<a href="/app/notifications?unread=1">Newest</a>' in page
    client.post("/api/v1/notifications/read", json={}, headers=auth(world.bob))
    assert "No unread notifications." in client.get("/app/notifications?unread=1").text
    assert '<li class="notification"' in client.get("/app/notifications").text  # all: read too
