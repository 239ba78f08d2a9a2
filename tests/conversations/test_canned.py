"""Canned responses fill in their variables in a sandbox."""

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World


def test_a_canned_response_greets_the_customer_by_first_name(
    client: TestClient, world: World
) -> None:
    cid = world.acme.opened.customer.id
    client.patch(f"/api/v1/customers/{cid}", json={"name": "Grace Hopper"}, headers=auth(world.bob))
    made = client.post(
        "/api/v1/canned-responses",
        json={
            "shortcut": "/Thanks",
            "text": "Hi {{ customer.first_name }}, {{ agent.name }} here.",
        },
        headers=auth(world.bob),
    )
    assert made.status_code == 201 and made.json()["shortcut"] == "thanks"
    found = client.get(
        "/api/v1/canned-responses", params={"prefix": "tha"}, headers=auth(world.bob)
    ).json()
    assert [c["shortcut"] for c in found] == ["thanks"]
    conv = world.acme.opened.conversation.id
    text = client.get(
        f"/api/v1/conversations/{conv}/canned/{made.json()['id']}", headers=auth(world.bob)
    ).json()
    assert text == {"text": "Hi Grace, Bob here."}


def test_a_canned_response_is_filled_in_for_a_customer_before_their_conversation(
    client: TestClient, world: World
) -> None:
    cid = world.acme.opened.customer.id
    client.patch(f"/api/v1/customers/{cid}", json={"name": "Grace Hopper"}, headers=auth(world.bob))
    made = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "hi", "text": "Hi {{ customer.first_name }}{{ conversation.subject }},"},
        headers=auth(world.bob),
    ).json()
    path = f"/api/v1/canned-responses/{made['id']}/for-customer/{cid}"
    assert client.get(path, headers=auth(world.bob)).json() == {"text": "Hi Grace,"}
    # Another workspace's customer, or canned response, is not found; a viewer writes none.
    other = world.globex.opened.customer.id
    assert (
        client.get(
            f"/api/v1/canned-responses/{made['id']}/for-customer/{other}", headers=auth(world.bob)
        ).status_code
        == 404
    )
    r = client.get(path, headers=auth(world.globex.tokens["mallory"]))
    assert r.status_code == 404
    assert client.get(path, headers=auth(world.acme.tokens["victor"])).status_code == 403


def test_a_template_cannot_reach_outside_its_sandbox(client: TestClient, world: World) -> None:
    escape = "{{ customer.__class__.__mro__[1].__subclasses__() }}"
    made = client.post(
        "/api/v1/canned-responses", json={"shortcut": "x", "text": escape}, headers=auth(world.bob)
    )
    conv = world.acme.opened.conversation.id
    r = client.get(
        f"/api/v1/conversations/{conv}/canned/{made.json()['id']}", headers=auth(world.bob)
    )
    assert r.status_code == 422 and "template" in r.json()["detail"]


def test_a_broken_template_is_refused_when_saved(client: TestClient, world: World) -> None:
    r = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "bad", "text": "Hi {{ customer.name"},
        headers=auth(world.bob),
    )
    assert r.status_code == 422


def test_a_template_that_fails_while_rendering_answers_a_problem(
    client: TestClient, world: World
) -> None:
    made = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "d", "text": "{{ 1/0 }}"},
        headers=auth(world.bob),
    )
    assert made.status_code == 201, made.text
    conv = world.acme.opened.conversation.id
    r = client.get(
        f"/api/v1/conversations/{conv}/canned/{made.json()['id']}", headers=auth(world.bob)
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "template error: division by zero"


def test_a_canned_response_is_edited_as_it_was_made(client: TestClient, world: World) -> None:
    # A canned response could be added and deleted, never corrected.
    url = "/api/v1/canned-responses"
    made = client.post(url, json={"shortcut": "hi", "text": "Hi!"}, headers=auth(world.bob))
    client.post(url, json={"shortcut": "bye", "text": "Bye!"}, headers=auth(world.bob))
    one = f"{url}/{made.json()['id']}"
    # Its own shortcut stays its own; a colleague's is taken; a broken template is refused.
    same = client.put(one, json={"shortcut": "/HI", "text": "Hello!"}, headers=auth(world.bob))
    assert same.status_code == 200
    assert (same.json()["shortcut"], same.json()["text"]) == ("hi", "Hello!")
    taken = client.put(one, json={"shortcut": "bye", "text": "x"}, headers=auth(world.bob))
    assert taken.status_code == 409 and "/bye exists" in taken.json()["detail"]
    broken = client.put(one, json={"shortcut": "hi", "text": "{{ oops"}, headers=auth(world.bob))
    assert broken.status_code == 422
    assert (
        client.put(
            one, json={"shortcut": "hi", "text": "x"}, headers=auth(world.victor)
        ).status_code
        == 403
    )  # a viewer changes nothing
    kept = {c["shortcut"]: c["text"] for c in client.get(url, headers=auth(world.bob)).json()}
    assert kept == {"bye": "Bye!", "hi": "Hello!"}
