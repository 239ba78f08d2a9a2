"""One person's number through WhatsApp and SMS is one customer."""

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.customers.identity import normalize_phone
from tests.channels.test_providers import SMS, twilio_post
from tests.channels.test_whatsapp import graph, message_event, post_signed  # noqa: F401
from tests.channels.test_whatsapp import inbox as whatsapp  # noqa: F401
from tests.conftest import auth
from tests.factories import World


def test_a_mexican_mobile_written_with_its_old_one_is_the_number_without_it() -> None:
    assert normalize_phone("+52 1 55 1234 5678") == "+525512345678"
    assert normalize_phone("+525512345678") == "+525512345678"
    assert normalize_phone("55 1234 5678", "MX") == "+525512345678"


def test_a_mexican_customer_on_whatsapp_and_by_sms_is_one_customer(
    client: TestClient,
    world: World,
    whatsapp: str,  # noqa: F811
    settings: Settings,
) -> None:
    # WhatsApp gives a Mexican mobile's id with the "1" Mexico dropped in 2019: read as a
    # number it was no possible one, and their messages were never stored.
    r = post_signed(client, whatsapp, message_event("wamid.MX1", "Hola", wa_id="5215512345678"))
    assert r.status_code == 200, r.text
    sms = client.post(
        "/api/v1/inboxes",
        json={
            "name": "SMS",
            "channel": "twilio_sms",
            "settings": {"account_sid": "AC0", "auth_token": "twilio-token"},
        },
        headers=auth(world.alice),
    ).json()["id"]
    texted = SMS | {"From": "+525512345678", "MessageSid": "SM_MX", "Body": "¿Hola?"}
    path = f"/webhooks/twilio_sms/{sms}"
    assert twilio_post(client, settings, path, texted, "twilio-token").status_code == 200
    convs = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"]
    assert {c["inbox_id"] for c in convs} >= {whatsapp, sms}  # the WhatsApp one stored
    mine = {c["customer_id"] for c in convs if c["inbox_id"] in (whatsapp, sms)}
    assert len(mine) == 1
    customer = client.get(f"/api/v1/customers/{mine.pop()}", headers=auth(world.bob)).json()
    assert customer["phone"] == "+525512345678"
    assert {(i["kind"], i["value"]) for i in customer["identities"]} == {
        ("whatsapp", "5215512345678"),  # the id WhatsApp gave, which replies go to
        ("phone", "+525512345678"),
    }
