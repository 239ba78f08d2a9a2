"""The customer panel's consent in a real browser: an agent records a withdrawal, a viewer
only reads."""

import pytest
from fastapi.testclient import TestClient

from rapport.config import Settings
from tests.channels.test_providers import SMS, make_inbox, only_conversation, twilio_post
from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


@pytest.fixture
def sms_conversation(client: TestClient, world: World, settings: Settings) -> dict:  # type: ignore[type-arg]
    """A customer's SMS to a Twilio inbox: its conversation."""
    inbox = make_inbox(
        client,
        world,
        "twilio_sms",
        {
            "account_sid": "AC00000000000000000000000000000000",
            "auth_token": "twilio-token",
            "phone_number": "+14155550100",
        },
    )
    r = twilio_post(client, settings, f"/webhooks/twilio_sms/{inbox}", SMS, "twilio-token")
    assert r.status_code == 200, r.text
    return only_conversation(client, world, inbox)


def test_an_agent_withdraws_sms_consent_and_a_reply_is_refused_saying_why(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    sms_conversation: dict,  # type: ignore[type-arg]
) -> None:
    # The panel only listed consent: an agent told by the 409 to record the customer's
    # consent had nowhere in the UI to do it.
    conv = sms_conversation
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv['id']}")
    panel = page.locator('#panel-extra [data-part="consent"]')
    expect(panel).to_contain_text("No consent recorded yet.")  # its load
    form = page.get_by_role("group", name="Record consent")
    expect(form.get_by_label("Channel")).to_have_value("sms")  # the inbox's channel
    expect(form.get_by_label("Purpose")).to_have_value("all")
    form.get_by_label("withdraws").check()
    form.get_by_label("Note (optional)").fill("asked on the phone <b>")
    form.get_by_role("button", name="Record consent").click()
    expect(form.get_by_role("status")).to_have_text("Recorded: SMS, everything withdrawn.")
    expect(panel.locator("dt")).to_have_text(["SMS"])
    line = panel.locator("dd li")
    expect(line).to_contain_text("everything: withdrawn since ")
    expect(line).to_contain_text(" UTC by agent: asked on the phone <b>")

    stored = live_server.http.get(
        f"/api/v1/customers/{conv['customer_id']}/consents",
        headers=auth(world.bob),
    ).json()
    assert [(c["channel"], c["purpose"], c["granted"], c["source"]) for c in stored["history"]] == [
        ("sms", "all", False, "agent: asked on the phone <b>")
    ]
    assert stored["history"][0]["recorded_by_user_id"] == world.acme.users["bob"].id

    # The reply is refused, and the agent reads why and what to do.
    page.fill("#composer textarea", "It ships tomorrow")
    page.click("#composer button[type=submit]")
    flash = page.get_by_role("alert")
    expect(flash).to_contain_text("Not sent: the customer opted out of SMS on ")
    expect(flash).to_contain_text("(agent: asked on the phone <b>)")
    expect(flash).to_contain_text("record it under Consent in the customer panel (purpose all)")
    expect(page.locator("#messages")).not_to_contain_text("It ships tomorrow")
    expect(page.locator("#composer textarea")).to_have_value("It ships tomorrow")
    page.screenshot(path=str(ARTIFACTS / "consent-withdrawn.png"), full_page=True)


def test_a_viewer_sees_the_consent_but_no_control_to_record_it(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    sms_conversation: dict,  # type: ignore[type-arg]
) -> None:
    customer = sms_conversation["customer_id"]
    r = client.post(
        f"/api/v1/customers/{customer}/consents",
        json={"channel": "email", "purpose": "marketing", "granted": True, "source": "form"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    page = signed_in(
        browser, live_server, "victor@acme.test", f"/app/conversations/{sms_conversation['id']}"
    )
    panel = page.locator('#panel-extra [data-part="consent"]')
    expect(panel).to_contain_text("marketing: given since ")  # its load
    expect(panel).to_contain_text(" UTC by form")
    expect(page.locator("#consent-form")).to_have_count(0)


def test_a_consent_a_colleague_records_shows_in_an_open_panel_at_once(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    sms_conversation: dict,  # type: ignore[type-arg]
) -> None:
    # Recording one published nothing: a colleague's open panel showed the old decisions,
    # and a reply form that seemed allowed, until the page was reloaded.
    page = browser.new_page()
    frames: list[object] = []  # what the page's stream received
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(frame)))
    sign_in(page, live_server, "victor@acme.test", f"/app/conversations/{sms_conversation['id']}")
    for _ in range(200):  # until the stream said hello: what comes after reaches the page
        if any('"hello"' in str(frame) for frame in frames):
            break
        page.wait_for_timeout(50)
    panel = page.locator('#panel-extra [data-part="consent"]')
    expect(panel).to_contain_text("No consent recorded yet.")  # its load
    r = live_server.http.post(
        f"/api/v1/customers/{sms_conversation['customer_id']}/consents",
        json={"channel": "sms", "purpose": "all", "granted": False, "source": "phone call"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    expect(panel.locator("dd li")).to_contain_text("everything: withdrawn since ")
    expect(panel.locator("dd li")).to_contain_text(" UTC by phone call")
