"""Suggested answers beside a conversation: articles, and how colleagues answered before."""

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World


def ask(client: TestClient, world: World, ext: str, text: str) -> str:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": text, "from": {"email": f"{ext}@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def answer_and_resolve(client: TestClient, world: World, conv: str, text: str) -> None:
    client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": text}, headers=auth(world.bob)
    ).raise_for_status()
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()


def test_a_similar_question_brings_the_answer_a_colleague_gave(
    client: TestClient, world: World
) -> None:
    past = [
        (
            "p1",
            "How do I change the delivery address of my order?",
            "Open Orders, pick the order, then Edit address.",
        ),
        ("p2", "Can I pay with PayPal?", "Yes, PayPal is offered at checkout."),
        ("p3", "My discount code does not work", "Codes apply before taxes; send me the code."),
    ]
    for ext, question, reply in past:
        answer_and_resolve(client, world, ask(client, world, ext, question), reply)
    client.put(
        "/api/v1/kb/help-center", json={"slug": "acme"}, headers=auth(world.alice)
    ).raise_for_status()
    article = client.post(
        "/api/v1/kb/articles",
        json={
            "title": "Changing the delivery address",
            "body": "Orders → Edit address, before shipping.",
        },
        headers=auth(world.bob),
    ).json()
    client.post(f"/api/v1/kb/articles/{article['id']}/publish", headers=auth(world.bob))
    now = ask(client, world, "n1", "hi, I need to change the address for delivery of order 77")
    out = client.get(f"/api/v1/conversations/{now}/suggestions", headers=auth(world.victor)).json()
    assert [a["answer"] for a in out["answers"]] == [
        "Open Orders, pick the order, then Edit address."
    ]
    assert out["articles"][0]["title"] == "Changing the delivery address"
    other = ask(client, world, "n2", "Do you sponsor chess tournaments?")
    nothing = client.get(
        f"/api/v1/conversations/{other}/suggestions", headers=auth(world.bob)
    ).json()
    assert nothing["answers"] == [] and nothing["articles"] == []
    theirs = client.get(f"/api/v1/conversations/{now}/suggestions", headers=auth(world.mallory))
    assert theirs.status_code == 404
