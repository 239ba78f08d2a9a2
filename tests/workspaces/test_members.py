"""Members, roles and teams of a workspace."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.auth.models import Membership
from rapport.automation.models import Macro
from rapport.channels.models import Inbox
from rapport.config import Settings
from rapport.db import Database, utcnow
from rapport.jobs.worker import Worker
from rapport.workspaces.models import SavedView
from tests.channels.email.test_email import Outbox
from tests.conftest import auth, published_events
from tests.factories import PASSWORD, World
from tests.workspaces.test_invitations import NEW_PASSWORD, join


def test_an_agent_cannot_manage_members(client: TestClient, world: World) -> None:
    r = client.post(
        "/api/v1/members",
        json={"email": "x@acme.test"},
        headers=auth(world.bob),
    )
    assert r.status_code == 403


def test_the_last_owner_cannot_be_demoted_or_removed(client: TestClient, world: World) -> None:
    alice = world.acme.users["alice"].id
    r = client.patch(f"/api/v1/members/{alice}", json={"role": "admin"}, headers=auth(world.alice))
    assert r.status_code == 409
    assert client.delete(f"/api/v1/members/{alice}", headers=auth(world.alice)).status_code == 409


def dana_the_admin(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> str:
    """An API token of dana, whom alice invited to Acme as an admin."""
    join(client, database, settings, relay, world.alice, "dana@acme.test", role="admin")
    login = client.post(
        "/api/v1/auth/login", json={"email": "dana@acme.test", "password": NEW_PASSWORD}
    )
    csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
    token = client.post("/api/v1/tokens", json={"role": "admin"}, headers=csrf).json()["token"]
    client.cookies.clear()
    return str(token)


def capacity_of(client: TestClient, world: World, user_id: str) -> int:
    members = client.get("/api/v1/members", headers=auth(world.alice)).json()
    return next(int(m["capacity"]) for m in members if m["user_id"] == user_id)


def test_an_admin_cannot_change_or_remove_an_owner(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    # An admin could set an owner's capacity (to 0: no conversation routed to them).
    dana = dana_the_admin(client, world, database, settings, relay)
    alice, bob = world.acme.users["alice"].id, world.acme.users["bob"].id
    before = capacity_of(client, world, alice)
    for body in ({"capacity": 0}, {"role": "agent"}, {}):
        r = client.patch(f"/api/v1/members/{alice}", json=body, headers=auth(dana))
        assert r.status_code == 403, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert client.delete(f"/api/v1/members/{alice}", headers=auth(dana)).status_code == 403
    assert capacity_of(client, world, alice) == before
    # An admin still manages agents, and an owner everyone, themselves included.
    r = client.patch(f"/api/v1/members/{bob}", json={"capacity": 2}, headers=auth(dana))
    assert r.status_code == 200 and r.json()["capacity"] == 2
    dana_id = client.get("/api/v1/auth/me", headers=auth(dana)).json()["user_id"]
    for who in (alice, dana_id):
        r = client.patch(f"/api/v1/members/{who}", json={"capacity": 1}, headers=auth(world.alice))
        assert r.status_code == 200 and r.json()["capacity"] == 1


def test_an_admin_cannot_revoke_an_owners_token(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    dana = dana_the_admin(client, world, database, settings, relay)
    (alices,) = client.get("/api/v1/tokens", headers=auth(world.alice)).json()
    (bobs,) = client.get("/api/v1/tokens", headers=auth(world.bob)).json()
    r = client.delete(f"/api/v1/tokens/{alices['id']}", headers=auth(dana))
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/auth/me", headers=auth(world.alice)).status_code == 200
    # An agent's token is still the admin's to revoke, and the admin's the owner's.
    assert client.delete(f"/api/v1/tokens/{bobs['id']}", headers=auth(dana)).status_code == 204
    assert client.get("/api/v1/auth/me", headers=auth(world.bob)).status_code == 401
    (danas,) = client.get("/api/v1/tokens", headers=auth(dana)).json()
    r = client.delete(f"/api/v1/tokens/{danas['id']}", headers=auth(world.alice))
    assert r.status_code == 204
    assert client.get("/api/v1/auth/me", headers=auth(dana)).status_code == 401


def test_a_member_removed_then_added_back_gets_no_old_token_back(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    # The tokens of a removed member only stopped working with the membership: added back
    # (the same person, rehired), every old token of theirs worked again.
    bob = world.acme.users["bob"].id
    assert client.delete(f"/api/v1/members/{bob}", headers=auth(world.alice)).status_code == 204
    assert client.get("/api/v1/auth/me", headers=auth(world.bob)).status_code == 401
    join(client, database, settings, relay, world.alice, "bob@acme.test", password=PASSWORD)
    assert client.get("/api/v1/auth/me", headers=auth(world.bob)).status_code == 401


def test_a_removed_members_own_macros_and_views_go_with_them(
    client: TestClient, world: World, database: Database
) -> None:
    # Kept, nobody could see or delete them, and they came back with the person.
    label = [{"type": "add_label", "value": "x"}]
    for token, visibility in ((world.bob, "personal"), (world.alice, "workspace")):
        r = client.post(
            "/api/v1/macros",
            json={"name": f"m-{visibility}", "actions": label, "visibility": visibility},
            headers=auth(token),
        )
        assert r.status_code == 201, r.text
    for token, shared in ((world.bob, False), (world.alice, True)):
        r = client.post(
            "/api/v1/saved-views",
            json={"page": "inbox", "name": f"v-{shared}", "query": "view=all", "shared": shared},
            headers=auth(token),
        )
        assert r.status_code == 201, r.text
    bob = world.acme.users["bob"].id
    assert client.delete(f"/api/v1/members/{bob}", headers=auth(world.alice)).status_code == 204
    with database.session(write=False) as db:
        assert db.execute(select(Macro.name, Macro.visibility)).all() == [
            ("m-workspace", "workspace")
        ]
        assert db.scalars(select(SavedView.name)).all() == ["v-True"]


def test_teams_hold_only_members_of_their_workspace(client: TestClient, world: World) -> None:
    bob = world.acme.users["bob"].id
    team = client.post(
        "/api/v1/teams", json={"name": "Billing", "member_ids": [bob]}, headers=auth(world.alice)
    )
    assert team.status_code == 201 and team.json()["member_ids"] == [bob]
    mallory = world.globex.users["mallory"].id
    r = client.patch(
        f"/api/v1/teams/{team.json()['id']}",
        json={"member_ids": [bob, mallory]},
        headers=auth(world.alice),
    )
    assert r.status_code == 404
    assert client.get("/api/v1/teams", headers=auth(world.bob)).json()[0]["member_ids"] == [bob]


def test_a_team_given_its_members_at_once_ends_with_one_of_the_lists(
    client: TestClient, world: World
) -> None:
    team = client.post("/api/v1/teams", json={"name": "Tier 1"}, headers=auth(world.alice)).json()
    alice, bob = world.acme.users["alice"].id, world.acme.users["bob"].id
    lists = [[alice], [bob], [alice, bob]] * 5
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda ids: client.patch(
                    f"/api/v1/teams/{team['id']}",
                    json={"member_ids": ids},
                    headers=auth(world.alice),
                ),
                lists,
            )
        )
    assert [r.status_code for r in answers] == [200] * len(lists), [r.text for r in answers]
    (final,) = [
        t
        for t in client.get("/api/v1/teams", headers=auth(world.alice)).json()
        if t["id"] == team["id"]
    ]
    assert sorted(final["member_ids"]) in [sorted(ids) for ids in lists]


def bobs_conversations(client: TestClient, world: World, database: Database) -> dict[str, str]:
    """Two conversations of an auto-assigning inbox given to bob, one of them resolved;
    alice online with room, nobody routed yet."""
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    with database.session() as db:
        db.execute(update(Inbox).where(Inbox.id == inbox).values(auto_assign=True))
    convs = {"open": world.acme.opened.conversation.id}
    r = client.post(
        f"/api/v1/inboxes/{inbox}/messages",
        json={"external_id": "m2", "text": "hi", "from": {"email": "m2@example.com"}},
        headers=auth(world.alice),
    )
    convs["resolved"] = r.json()["conversation_id"]
    bob = world.acme.users["bob"].id
    for conv in convs.values():
        r = client.post(
            f"/api/v1/conversations/{conv}/assign",
            json={"assignee_id": bob},
            headers=auth(world.alice),
        )
        assert r.status_code == 200, r.text
    r = client.post(
        f"/api/v1/conversations/{convs['resolved']}/status",
        json={"status": "resolved"},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    r = client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    return convs


def conversation(client: TestClient, world: World, conv: str) -> dict[str, Any]:
    return client.get(f"/api/v1/conversations/{conv}", headers=auth(world.alice)).json()  # type: ignore[no-any-return]


def test_a_removed_members_unresolved_conversations_are_offered_to_others(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A removed member kept their open conversations: nothing unassigned them or woke
    # routing, so their customers waited on someone who was gone.
    convs = bobs_conversations(client, world, database)
    bob = world.acme.users["bob"].id
    with published_events() as published:
        r = client.delete(f"/api/v1/members/{bob}", headers=auth(world.alice))
        assert r.status_code == 204, r.text
    updated = [e["payload"] for e in published if e["type"] == "conversation.updated"]
    assert [(p["id"], p["assignee_id"]) for p in updated] == [(convs["open"], None)]
    unassigned = conversation(client, world, convs["open"])["messages"][-1]
    assert unassigned["kind"] == "activity" and unassigned["text"] == "Unassigned from Bob by Alice"
    Worker(database, settings).run_until_idle()
    assert conversation(client, world, convs["open"])["assignee_id"] == world.acme.users["alice"].id
    # Who handled a resolved conversation is its history: it stays bob's.
    assert conversation(client, world, convs["resolved"])["assignee_id"] == bob


def test_a_member_made_a_viewer_gives_back_their_unresolved_conversations(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A viewer is never given conversations, yet one demoted kept those they held.
    convs = bobs_conversations(client, world, database)
    bob = world.acme.users["bob"].id
    r = client.patch(f"/api/v1/members/{bob}", json={"role": "viewer"}, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    Worker(database, settings).run_until_idle()
    assert conversation(client, world, convs["open"])["assignee_id"] == world.acme.users["alice"].id
    assert conversation(client, world, convs["resolved"])["assignee_id"] == bob


def test_a_team_of_more_members_than_a_query_holds_is_refused(
    client: TestClient, world: World
) -> None:
    # Every id went into one query: past the 65,535 parameters PostgreSQL allows, a 500.
    ids = [f"{i:x}" for i in range(70_000)]
    admin = auth(world.alice)
    r = client.post("/api/v1/teams", json={"name": "All", "member_ids": ids}, headers=admin)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    team = client.post("/api/v1/teams", json={"name": "All"}, headers=admin).json()
    r = client.patch(f"/api/v1/teams/{team['id']}", json={"member_ids": ids}, headers=admin)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_open_pages_hear_of_members_joining_changing_and_leaving(
    client: TestClient, world: World, database: Database, settings: Settings, relay: Outbox
) -> None:
    # The settings page's members table showed the workspace as it was when opened: no
    # event said a member joined, changed role or left.
    acme = world.acme.workspace.id
    with published_events() as published:
        joined = join(client, database, settings, relay, world.alice, "dana@acme.test")
    [event] = [e for e in published if e["type"].startswith("member.")]
    assert (event["type"], event["workspace_id"]) == ("member.joined", acme)
    dana = event["payload"]["user_id"]
    assert event["payload"] == {
        "user_id": dana,
        "name": "dana",
        "email": "dana@acme.test",
        "role": joined["role"],
        "capacity": 20,
        "totp_enabled": False,
        "presence": "offline",
    }
    with published_events() as published:
        r = client.patch(
            f"/api/v1/members/{dana}", json={"role": "admin"}, headers=auth(world.alice)
        )
        assert r.status_code == 200, r.text
        assert client.delete(f"/api/v1/members/{dana}", headers=auth(world.alice)).is_success
    told = [(e["type"], e["payload"].get("role")) for e in published if "member." in e["type"]]
    assert told == [("member.updated", "admin"), ("member.removed", None)]
    assert all(e["workspace_id"] == acme for e in published if "member." in e["type"])


def test_open_pages_hear_of_a_presence_change_but_not_of_every_heartbeat(
    client: TestClient, world: World, database: Database
) -> None:
    # An agent going online, busy or offline sent no event: the members table showed
    # everyone as they were when the page was opened.
    bob = world.acme.users["bob"].id

    def ping(availability: str) -> list[str]:
        """What presence the workspace heard of for bob during this heartbeat."""
        with published_events() as published:
            r = client.put(
                "/api/v1/presence", json={"availability": availability}, headers=auth(world.bob)
            )
            assert r.status_code == 200 and r.json()["presence"] == availability, r.text
        told = [e for e in published if e["type"] == "member.updated"]
        assert all(e["payload"]["user_id"] == bob for e in told)
        assert all(e["workspace_id"] == world.acme.workspace.id for e in told)
        return [e["payload"]["presence"] for e in told]

    assert ping("online") == ["online"]
    assert ping("online") == []  # the browser's heartbeat, every minute
    assert ping("busy") == ["busy"]
    assert ping("busy") == []
    # The browser was closed past the presence timeout: others see bob offline, and his
    # next heartbeat brings him back.
    with database.session() as db:
        db.execute(
            update(Membership)
            .where(Membership.user_id == bob)
            .values(last_seen_at=utcnow() - timedelta(minutes=10))
        )
    [listed] = [
        m
        for m in client.get("/api/v1/members", headers=auth(world.alice)).json()
        if m["user_id"] == bob
    ]
    assert (listed["availability"], listed["presence"]) == ("busy", "offline")
    assert ping("busy") == ["busy"]
    assert ping("offline") == ["offline"]
    assert ping("offline") == []


def test_a_closed_browser_is_heard_as_offline_once_its_heartbeats_time_out(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Going offline by closing the browser sent nothing: no request says so, and open
    # pages showed the agent online until reloaded. The periodic sweep tells them, once,
    # however long after the timeout it runs.
    from rapport.conversations import routing
    from rapport.jobs import periodic

    bob, alice = world.acme.users["bob"].id, world.acme.users["alice"].id
    for who in (world.bob, world.alice):
        r = client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(who))
        assert r.status_code == 200, r.text
    with database.session() as db:  # bob closed his browser ten minutes ago; alice's beats
        db.execute(
            update(Membership)
            .where(Membership.user_id == bob)
            .values(last_seen_at=utcnow() - timedelta(minutes=10))
        )

    def sweep() -> list[tuple[str, str]]:
        with published_events() as published:
            with database.session() as db:
                key = f"presence_sweep:test-{utcnow().isoformat()}"
                periodic.enqueue_unique(db, name="presence_sweep", key=key)
            Worker(database, settings).run_until_idle()
        told = [e["payload"] for e in published if e["type"] == "member.updated"]
        return [(p["user_id"], p["presence"]) for p in told]

    assert sweep() == [(bob, "offline")]
    assert alice not in {who for who, _ in sweep()}
    assert sweep() == []  # told once
    # His next heartbeat brings him back, heard as such.
    r = client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["presence"] == "online"
    with database.session() as db:
        assert routing.announce_timed_out(db, now=utcnow()) == 0
        shown = db.scalar(select(Membership.presence_shown).where(Membership.user_id == bob))
    assert shown == "online"
