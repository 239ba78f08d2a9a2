"""The workspace's labels: admins define, recolour, rename and delete them; a rename or a
delete reaches every conversation of the workspace and no other."""

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import World


def labels_of(client: TestClient, world: World, cid: str) -> list[str]:
    r = client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob))
    return list(r.json()["labels"])


def test_admins_define_and_recolour_labels(client: TestClient, world: World) -> None:
    r = client.post(
        "/api/v1/labels", json={"name": " VIP ", "colour": "#FFAA00"}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["colour"]) == ("vip", "#ffaa00")
    dup = client.post("/api/v1/labels", json={"name": "vip"}, headers=auth(world.alice))
    assert dup.status_code == 409
    bad = client.post(
        "/api/v1/labels", json={"name": "x", "colour": "red;}"}, headers=auth(world.alice)
    )
    assert bad.status_code == 422
    assert (
        client.post("/api/v1/labels", json={"name": "y"}, headers=auth(world.bob)).status_code
        == 403
    )
    lid = r.json()["id"]
    client.patch(f"/api/v1/labels/{lid}", json={"colour": "#00aa00"}, headers=auth(world.alice))
    listed = client.get("/api/v1/labels", headers=auth(world.bob)).json()
    assert [(x["name"], x["colour"]) for x in listed] == [("vip", "#00aa00")]
    assert client.get("/api/v1/labels", headers=auth(world.mallory)).json() == []


def test_a_rename_moves_the_label_on_every_conversation(client: TestClient, world: World) -> None:
    a = inbound(client, world, "lr1", "lr1@example.com")
    b = inbound(client, world, "lr2", "lr2@example.com")
    for cid in (a, b):
        client.post(
            f"/api/v1/conversations/{cid}/labels",
            json={"labels": ["refnd"]},
            headers=auth(world.bob),
        )
    # b already carries the right spelling: it keeps one copy.
    client.post(
        f"/api/v1/conversations/{b}/labels", json={"labels": ["refund"]}, headers=auth(world.bob)
    )
    theirs = world.globex.opened.conversation.id
    client.post(
        f"/api/v1/conversations/{theirs}/labels",
        json={"labels": ["refnd"]},
        headers=auth(world.mallory),
    )
    policy = client.post(
        "/api/v1/sla-policies",
        json={"name": "Refunds", "labels": ["refnd"], "first_response_minutes": 30},
        headers=auth(world.alice),
    ).json()
    label = client.post("/api/v1/labels", json={"name": "refnd"}, headers=auth(world.alice))
    r = client.patch(
        f"/api/v1/labels/{label.json()['id']}", json={"name": "Refund"}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    assert labels_of(client, world, a) == ["refund"]
    assert labels_of(client, world, b) == ["refund"]
    # Globex's own "refnd" is Globex's business.
    other = client.get(f"/api/v1/conversations/{theirs}", headers=auth(world.mallory)).json()
    assert other["labels"] == ["refnd"]
    policies = client.get("/api/v1/sla-policies", headers=auth(world.alice)).json()
    assert [p["labels"] for p in policies if p["id"] == policy["id"]] == [["refund"]]


def test_deleting_a_label_takes_it_off_conversations(client: TestClient, world: World) -> None:
    a = inbound(client, world, "ld1", "ld1@example.com")
    client.post(
        f"/api/v1/conversations/{a}/labels",
        json={"labels": ["old", "keep"]},
        headers=auth(world.bob),
    )
    label = client.post("/api/v1/labels", json={"name": "old"}, headers=auth(world.alice)).json()
    r = client.delete(f"/api/v1/labels/{label['id']}", headers=auth(world.alice))
    assert r.status_code == 200 and r.json() == {"saved_views": []}, r.text
    assert labels_of(client, world, a) == ["keep"]
    assert client.get("/api/v1/labels", headers=auth(world.alice)).json() == []


def test_a_rename_rewrites_the_automation_rules_that_name_the_label(
    client: TestClient, world: World
) -> None:
    def rule(body: dict[str, object]) -> str:
        r = client.post("/api/v1/automation-rules", json=body, headers=auth(world.alice))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    tagging = rule(
        {
            "name": "tag refunds",
            "event": "message.received",
            "conditions": [
                {"field": "message.text", "op": "contains", "value": "refnd"},
                {"field": "labels", "op": "not_contains", "value": " Refnd "},
            ],
            "actions": [
                {"type": "add_label", "value": "Refnd"},
                {"type": "remove_label", "value": "refnd"},
                {"type": "add_note", "value": "refnd"},  # text, not a label: untouched
            ],
        }
    )
    choosing = rule(
        {
            "name": "route refunds",
            "event": "conversation.created",
            "conditions": [{"field": "labels", "op": "in", "value": ["refnd", "vip"]}],
            "actions": [{"type": "set_priority", "value": "high"}],
        }
    )
    theirs = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "globex",
            "event": "message.received",
            "actions": [{"type": "add_label", "value": "refnd"}],
        },
        headers=auth(world.mallory),
    ).json()
    label = client.post("/api/v1/labels", json={"name": "refnd"}, headers=auth(world.alice)).json()
    r = client.patch(
        f"/api/v1/labels/{label['id']}", json={"name": "refund"}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    rules = {
        x["id"]: x for x in client.get("/api/v1/automation-rules", headers=auth(world.alice)).json()
    }
    assert rules[tagging]["conditions"] == [
        {"field": "message.text", "op": "contains", "value": "refnd"},
        {"field": "labels", "op": "not_contains", "value": "refund"},
    ]
    assert rules[tagging]["actions"] == [
        {"type": "add_label", "value": "refund"},
        {"type": "remove_label", "value": "refund"},
        {"type": "add_note", "value": "refnd"},
    ]
    assert rules[choosing]["conditions"] == [
        {"field": "labels", "op": "in", "value": ["refund", "vip"]}
    ]
    mine = client.get("/api/v1/automation-rules", headers=auth(world.mallory)).json()
    assert [x["actions"] for x in mine if x["id"] == theirs["id"]] == [
        [{"type": "add_label", "value": "refnd"}]
    ]


def test_a_label_with_a_slash_comes_off_a_conversation_and_out_of_the_list(
    client: TestClient, world: World
) -> None:
    a = inbound(client, world, "ls1", "ls1@example.com")
    client.post(
        f"/api/v1/conversations/{a}/labels",
        json={"labels": ["billing/eu", "keep"]},
        headers=auth(world.bob),
    ).raise_for_status()
    r = client.delete(f"/api/v1/conversations/{a}/labels/billing%2Feu", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    assert r.json() == ["keep"]
    label = client.post(
        "/api/v1/labels", json={"name": "Billing/EU"}, headers=auth(world.alice)
    ).json()
    # The label list's own endpoints take the id, and the name as well.
    r = client.patch(
        "/api/v1/labels/billing%2Feu", json={"colour": "#112233"}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == label["id"]
    r = client.delete("/api/v1/labels/billing%2Feu", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/labels", headers=auth(world.alice)).json() == []
    # Another workspace's name reaches nothing here.
    client.post("/api/v1/labels", json={"name": "keep"}, headers=auth(world.alice))
    assert client.delete("/api/v1/labels/keep", headers=auth(world.mallory)).status_code == 404


def test_a_label_a_rule_or_sla_policy_still_uses_cannot_be_deleted(
    client: TestClient, world: World
) -> None:
    label = client.post("/api/v1/labels", json={"name": "vip"}, headers=auth(world.alice)).json()
    rule = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "VIPs first",
            "event": "message.received",
            "conditions": [{"field": "labels", "op": "in", "value": ["vip", "gold"]}],
            "actions": [{"type": "set_priority", "value": "high"}],
        },
        headers=auth(world.alice),
    ).json()
    policy = client.post(
        "/api/v1/sla-policies",
        json={"name": "VIP replies", "labels": ["vip"], "first_response_minutes": 15},
        headers=auth(world.alice),
    ).json()
    r = client.delete(f"/api/v1/labels/{label['id']}", headers=auth(world.alice))
    assert r.status_code == 409, r.text
    assert "'VIPs first'" in r.json()["detail"] and "'VIP replies'" in r.json()["detail"]
    assert [x["name"] for x in client.get("/api/v1/labels", headers=auth(world.alice)).json()] == [
        "vip"
    ]
    client.delete(f"/api/v1/automation-rules/{rule['id']}", headers=auth(world.alice))
    r = client.delete(f"/api/v1/labels/{label['id']}", headers=auth(world.alice))
    assert r.status_code == 409 and "'VIPs first'" not in r.json()["detail"]
    client.delete(f"/api/v1/sla-policies/{policy['id']}", headers=auth(world.alice))
    r = client.delete(f"/api/v1/labels/{label['id']}", headers=auth(world.alice))
    assert r.status_code == 200, r.text
