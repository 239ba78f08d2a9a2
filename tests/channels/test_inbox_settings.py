"""Inbox settings are declared by each channel: checked, written one way, listed for forms."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.channels import base
from rapport.channels.models import Inbox
from rapport.channels.service import secrets_of
from rapport.crypto import box_for
from rapport.db import Database
from tests.conftest import SECRET, auth
from tests.factories import World


def make(client: TestClient, token: str, channel: str, **settings: Any) -> Any:
    return client.post(
        "/api/v1/inboxes",
        json={"name": f"A {channel} inbox", "channel": channel, "settings": settings},
        headers=auth(token),
    )


def patch(client: TestClient, token: str, inbox_id: str, **settings: Any) -> Any:
    return client.patch(
        f"/api/v1/inboxes/{inbox_id}", json={"settings": settings}, headers=auth(token)
    )


def test_a_setting_no_channel_has_is_refused_by_name(client: TestClient, world: World) -> None:
    # A typo was kept and did nothing: the inbox sent from no address, silently.
    r = make(client, world.alice, "email", adress="help@acme.test")
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    assert detail.startswith("settings.adress: email inboxes have no such setting")
    assert "address" in detail and "smtp_host" in detail
    assert not any(
        i["name"] == "A email inbox"
        for i in client.get("/api/v1/inboxes", headers=auth(world.alice)).json()
    )


@pytest.mark.parametrize(
    ("channel", "given", "error"),
    [
        ("email", {"smtp_port": "twenty-five"}, "settings.smtp_port (SMTP port): "),
        ("email", {"smtp_port": 70000}, "must be from 1 to 65535"),
        ("email", {"smtp_port": True}, "must be a whole number"),
        ("email", {"smtp_security": "ssl"}, "must be one of starttls, tls, none"),
        ("email", {"address": "not an address"}, "settings.address (Address): "),
        ("email", {"trusted_authserv_ids": [1, 2]}, "must be a list of texts"),
        ("twilio_voice", {"ring_seconds": 2}, "must be from 5 to 60"),
        ("twilio_voice", {"forward_to": "+1 415 555 0100, 12"}, "settings.forward_to"),
        ("twilio_sms", {"phone_number": "555-0100"}, "not a phone number"),
        ("webchat", {"ask_name": "no"}, "must be true or false"),
        ("api", {"webhook_url": "ftp://example.com/hook"}, "must be http:// or https://"),
        ("api", {"webhook_secret": 42}, "must be text"),
        ("webchat", {"title": "x" * 2001}, "takes at most 2000 characters"),
    ],
)
def test_a_setting_of_the_wrong_form_is_refused_naming_it(
    client: TestClient, world: World, channel: str, given: dict[str, Any], error: str
) -> None:
    r = make(client, world.alice, channel, **given)
    assert r.status_code == 422, r.text
    assert error in r.json()["detail"]


def test_settings_are_kept_one_way(client: TestClient, world: World) -> None:
    r = make(
        client,
        world.alice,
        "twilio_voice",
        account_sid="AC1",
        auth_token="secret",
        phone_number="+44 20 7946 0958",
        forward_to="+1 (415) 555-0100\n+1 415 555 0101",
        ring_seconds="30",
        greeting="  Hello  ",
        language="",
    )
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["settings"] == {
        "account_sid": "AC1",
        "phone_number": "+442079460958",
        "forward_to": "+14155550100, +14155550101",
        "ring_seconds": 30,
        "greeting": "Hello",
    }
    assert got["secrets_set"] == ["auth_token"] and got["missing"] == []
    r = make(
        client,
        world.alice,
        "email",
        address="Help@ACME.test",
        smtp_security="TLS",
        trusted_authserv_ids="mx.google.com, mx.acme.test\n",
    )
    assert r.status_code == 201, r.text
    assert r.json()["settings"] == {
        "address": "help@acme.test",
        "smtp_security": "tls",
        "trusted_authserv_ids": ["mx.google.com", "mx.acme.test"],
    }


def test_null_or_empty_clears_a_setting_and_the_others_stay(
    client: TestClient, world: World
) -> None:
    made = make(
        client, world.alice, "webchat", title="Help", reply_time="an hour", hmac_secret="k"
    ).json()
    r = patch(client, world.alice, made["id"], title=None, reply_time="", hmac_secret="")
    assert r.status_code == 200, r.text
    assert r.json()["settings"] == {} and r.json()["secrets_set"] == []
    r = patch(client, world.alice, made["id"], allowed_origins=["https://shop.example"])
    assert r.json()["settings"] == {"allowed_origins": ["https://shop.example"]}
    r = patch(client, world.alice, made["id"], allowed_origins=[])
    assert r.json()["settings"] == {}


def test_an_inbox_setting_names_an_inbox_of_the_workspace_and_channel(
    client: TestClient, world: World
) -> None:
    chat = make(client, world.alice, "webchat").json()
    ours = make(client, world.alice, "email", address="help@acme.test").json()
    theirs = make(client, world.mallory, "email", address="help@globex.test").json()
    api_inbox = world.acme.inbox.id  # type: ignore[union-attr]
    for other in (theirs["id"], api_inbox, "nope"):
        r = patch(client, world.alice, chat["id"], email_inbox_id=other)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("settings.email_inbox_id")
        assert "globex" not in r.text
    r = patch(client, world.alice, chat["id"], email_inbox_id=ours["id"])
    assert r.status_code == 200 and r.json()["settings"]["email_inbox_id"] == ours["id"]


def test_a_setting_sent_back_as_kept_is_left_alone(
    client: TestClient, world: World, database: Database
) -> None:
    # A client that reads an inbox and writes its settings back was refused for a value
    # kept before settings were checked (a number without its +, a key since retired).
    made = make(client, world.alice, "twilio_sms", account_sid="AC1").json()
    with database.session() as db:
        row = db.get(Inbox, made["id"])
        assert row is not None
        row.settings = {**row.settings, "phone_number": "415 555 0100", "legacy": 1}
    stored = client.get(f"/api/v1/inboxes/{made['id']}", headers=auth(world.alice)).json()
    r = patch(client, world.alice, made["id"], **(stored["settings"] | {"account_sid": "AC2"}))
    assert r.status_code == 200, r.text
    assert r.json()["settings"] == {
        "account_sid": "AC2",
        "phone_number": "415 555 0100",
        "legacy": 1,
    }
    # Changed, it is checked as any other.
    assert patch(client, world.alice, made["id"], phone_number="415").status_code == 422
    assert patch(client, world.alice, made["id"], legacy=2).status_code == 422


def test_a_credential_is_kept_exactly_as_given(
    client: TestClient, world: World, database: Database
) -> None:
    made = make(client, world.alice, "email", smtp_password="  pass word  ").json()
    with database.session() as db:
        row = db.get(Inbox, made["id"])
        assert row is not None
        assert secrets_of(row, box_for(SECRET))["smtp_password"] == "  pass word  "


def test_the_bot_setting_goes_back_unchanged_but_is_changed_through_its_own_endpoint(
    client: TestClient, world: World
) -> None:
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    r = client.put(
        f"/api/v1/bot/inboxes/{inbox_id}", json={"enabled": True}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    stored = client.get(f"/api/v1/inboxes/{inbox_id}", headers=auth(world.alice)).json()
    # A client that reads an inbox, changes one thing and writes all back is not refused.
    settings = {**stored["settings"], "webhook_url": "https://example.com/hook"}
    r = patch(client, world.alice, inbox_id, **settings)
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["bot"] == stored["settings"]["bot"]
    r = patch(client, world.alice, inbox_id, bot={"enabled": False})
    assert r.status_code == 422
    assert "PUT /api/v1/bot/inboxes/{id}" in r.json()["detail"]


def test_an_inbox_says_which_needed_settings_are_missing(client: TestClient, world: World) -> None:
    made = make(client, world.alice, "whatsapp", phone_number_id="123").json()
    assert made["missing"] == ["access_token", "app_secret", "verify_token"]
    r = patch(client, world.alice, made["id"], access_token="a", app_secret="b", verify_token="c")
    assert r.json()["missing"] == []
    assert make(client, world.alice, "api").json()["missing"] == []


def test_the_channels_and_their_settings_are_listed(client: TestClient, world: World) -> None:
    r = client.get("/api/v1/channels", headers=auth(world.victor))  # a viewer may read them
    assert r.status_code == 200
    channels = {c["name"]: c for c in r.json()}
    assert sorted(channels) == base.names()
    email = {s["name"]: s for s in channels["email"]["settings"]}
    assert email["address"]["needed"] and email["address"]["kind"] == "email"
    assert email["smtp_password"]["secret"] and not email["smtp_host"]["secret"]
    assert email["smtp_security"]["choices"] == ["starttls", "tls", "none"]
    assert email["smtp_port"] | {"help": ""} == {
        "name": "smtp_port",
        "label": "SMTP port",
        "kind": "number",
        "help": "",
        "needed": False,
        "secret": False,
        "choices": [],
        "default": 25,
        "low": 1,
        "high": 65535,
    }
    # The credentials, stored encrypted and never shown back, are these and only these.
    secret = {
        name: {s["name"] for s in c["settings"] if s["secret"]} for name, c in channels.items()
    }
    assert secret == {
        "api": {"webhook_secret"},
        "email": {"smtp_password", "imap_password"},
        "instagram": {"page_access_token", "app_secret", "verify_token"},
        "messenger": {"page_access_token", "app_secret", "verify_token"},
        "telegram": {"bot_token", "secret_token"},
        "twilio_sms": {"auth_token"},
        "twilio_voice": {"auth_token"},
        "webchat": {"hmac_secret"},
        "whatsapp": {"access_token", "app_secret", "verify_token"},
    }
    assert client.get("/api/v1/channels").status_code == 401


def test_replies_go_at_the_rate_each_channel_declares() -> None:
    assert base.default_of("twilio_sms", "rate_per_second") == 1
    assert base.default_of("whatsapp", "rate_per_second") == 80
    assert base.default_of("email", "nothing") is None
    assert base.default_of("no-such-channel", "rate_per_second") is None


def test_disabling_an_inbox_tells_the_agents_pages_and_a_change_they_do_not_show_does_not(
    client: TestClient, world: World
) -> None:
    # Open pages kept offering a disabled inbox (a new conversation through it was refused).
    inbox = make(client, world.alice, "api", webhook_url="https://shop.example/hook").json()
    url = f"/api/v1/inboxes/{inbox['id']}"
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        assert client.patch(url, json={"auto_assign": True}, headers=auth(world.alice)).is_success
        r = client.patch(url, json={"enabled": False}, headers=auth(world.alice))
        assert r.status_code == 200, r.text
        event = ws.receive_json()
    assert (event["type"], event["payload"]) == (
        "inbox.updated",
        {"id": inbox["id"], "name": "A api inbox", "channel": "api", "enabled": False},
    )
