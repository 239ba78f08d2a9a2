"""A STOP sent from the merged person's phone while merged stays theirs once the merge is
undone (it stayed with the survivor, and they were marketable again)."""

from fastapi.testclient import TestClient

from rapport.config import Settings
from tests.channels.test_providers import (  # noqa: F401  (the fixture)
    SMS,
    only_conversation,
    provider,
    sms_consents,
    twilio_inbox,
    twilio_post,
)
from tests.conftest import auth
from tests.factories import World


def test_a_stop_sent_from_the_merged_persons_phone_stays_theirs_after_undo(
    client: TestClient,
    world: World,
    settings: Settings,
    provider,  # noqa: F811
) -> None:
    inbox, path, _ = twilio_inbox(client, world, provider)
    assert twilio_post(client, settings, path, SMS, "twilio-token").status_code == 200
    ben = only_conversation(client, world, inbox)["customer_id"]  # +14155550123, by SMS
    r = client.post(
        f"/api/v1/customers/{ben}/consents",
        json={"channel": "sms", "purpose": "marketing", "granted": True, "source": "form"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    ann = client.post(
        "/api/v1/customers",
        json={"name": "Ann", "email": "ann@example.com"},
        headers=auth(world.bob),
    ).json()["id"]
    merged = client.post(
        f"/api/v1/customers/{ann}/merge", json={"merged_id": ben}, headers=auth(world.bob)
    )
    assert merged.status_code == 201, merged.text
    # Ben texts STOP from his own phone while merged: recorded on the survivor.
    form = dict(
        SMS,
        MessageSid="SM_STOP",
        SmsSid="SM_STOP",
        SmsMessageSid="SM_STOP",
        Body="Stop",
        OptOutType="STOP",
    )
    assert twilio_post(client, settings, path, form, "twilio-token").status_code == 200
    assert sms_consents(client, world, ann)["marketing"][0] is False
    undone = client.post(
        f"/api/v1/customer-merges/{merged.json()['id']}/undo", headers=auth(world.bob)
    )
    assert undone.status_code == 200
    # Ben's phone is his again; so must be the STOP he sent from it.
    assert sms_consents(client, world, ben)["marketing"][0] is False
