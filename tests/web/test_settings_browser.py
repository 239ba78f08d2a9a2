"""An admin sets business hours, writes and edits an automation rule, and adds a webhook
whose secret is shown once and whose delivery log shows the receiver's status codes."""

import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient

from rapport.auth.models import Team
from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.worker import Worker
from tests.conftest import auth
from tests.factories import World
from tests.standin import serving
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


class _Teapot(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(418)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    with serving(HTTPServer(("127.0.0.1", 0), _Teapot)) as server:
        yield f"http://127.0.0.1:{server.server_port}/hook"


def test_an_admin_sets_hours_rules_and_webhooks(
    request: pytest.FixtureRequest,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    receiver: str,
    database: Database,
    settings: Settings,
) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.on("dialog", lambda d: d.accept())
    sign_in(page, live_server, "alice@acme.test", "/app/settings")
    api = httpx.Client(base_url=live_server.url, headers=auth(world.alice))
    request.addfinalizer(api.close)

    # Business hours: Madrid, a split Monday, Tuesday 9-17, and Christmas off.
    page.fill("#hours-form input[name=timezone]", "Europe/Madrid")
    page.fill("#hours-form input[name=day-mon]", "9:00-13:00, 14:00-18:00")
    page.fill("#hours-form input[name=day-tue]", "09:00-17:00")
    page.fill("#hours-form textarea[name=holidays]", "2026-12-25")
    page.click("#hours-form button[type=submit]")
    page.wait_for_load_state("load")
    expect(page.locator("#hours-form input[name=day-mon]")).to_have_value(
        "09:00-13:00, 14:00-18:00"
    )
    assert api.get("/api/v1/business-hours").json() == {
        "timezone": "Europe/Madrid",
        "hours": {"mon": [["09:00", "13:00"], ["14:00", "18:00"]], "tue": [["09:00", "17:00"]]},
        "holidays": ["2026-12-25"],
    }
    # A bad time zone is refused with the reason, and nothing changes.
    page.fill("#hours-form input[name=timezone]", "Mars/Olympus")
    page.click("#hours-form button[type=submit]")
    expect(page.locator("#settings-error")).to_contain_text("Mars/Olympus")

    # A rule: refunds by email get a label and high priority, and stop later rules.
    page.goto(f"{live_server.url}/app/settings")
    page.fill("#rule-form input[name=name]", "Refunds <first>")
    page.select_option("#rule-form select[name=event]", "message.received")
    page.click("#add-condition")
    text = page.locator("#conditions > li").nth(0)
    text.get_by_label("Field").select_option("message.text")
    text.get_by_label("Operator").select_option("contains")
    text.get_by_label("Value").fill("refund")
    page.click("#add-condition")
    channel = page.locator("#conditions > li").nth(1)
    channel.get_by_label("Field").select_option("channel")
    channel.get_by_label("Operator").select_option("in")
    channel.get_by_role("checkbox", name="email", exact=True).check()
    channel.get_by_role("checkbox", name="api", exact=True).check()
    steps = page.locator("#actions > li")
    steps.nth(0).get_by_label("Action", exact=True).select_option("add_label")
    steps.nth(0).get_by_label("Label").fill("billing")
    page.click("#add-action")
    steps.nth(1).get_by_label("Action", exact=True).select_option("set_priority")
    steps.nth(1).get_by_label("Priority").select_option("high")
    page.fill("#rule-form input[name=position]", "2")
    page.check("#rule-form input[name=stop_processing]")
    page.click("#rule-form button[type=submit]")
    expect(page.locator("#rule-rows")).to_contain_text("Refunds <first>")
    [rule] = api.get("/api/v1/automation-rules").json()
    assert rule["conditions"] == [
        {"field": "message.text", "op": "contains", "value": "refund"},
        {"field": "channel", "op": "in", "value": ["api", "email"]},
    ]
    assert rule["actions"] == [
        {"type": "add_label", "value": "billing"},
        {"type": "set_priority", "value": "high"},
    ]
    assert rule["position"] == 2 and rule["stop_processing"] and rule["enabled"]

    # Edit it: rename, drop the channel condition. Then switch it off from the list.
    page.click(f'#rule-rows tr[data-id="{rule["id"]}"] .rule-edit')
    expect(page.locator("#rule-form input[name=name]")).to_have_value("Refunds <first>")
    # Shown as saved, each part in its own control.
    expect(text.get_by_label("Field")).to_have_value("message.text")
    expect(text.get_by_label("Value")).to_have_value("refund")
    expect(channel.get_by_role("checkbox", name="api", exact=True)).to_be_checked()
    expect(channel.get_by_role("checkbox", name="whatsapp", exact=True)).not_to_be_checked()
    expect(steps.nth(1).get_by_label("Priority")).to_have_value("high")
    page.fill("#rule-form input[name=name]", "Refunds")
    page.click("#conditions li:nth-child(2) .remove-row")
    page.click("#rule-form button[type=submit]")
    # (The old name holds the new one: wait for the old to go, not for the new to show.)
    expect(page.locator("#rule-rows")).not_to_contain_text("Refunds <first>")
    expect(page.locator("#rule-rows")).to_contain_text("Refunds")
    page.uncheck(f'#rule-rows tr[data-id="{rule["id"]}"] .rule-enabled')
    page.wait_for_timeout(300)
    [edited] = api.get("/api/v1/automation-rules").json()
    assert edited["name"] == "Refunds" and len(edited["conditions"]) == 1
    assert edited["enabled"] is False and edited["id"] == rule["id"]

    # A webhook: the secret shows once; the log shows the receiver's 418.
    page.fill("#webhook-form input[name=url]", receiver)
    page.check('#webhook-form input[name=events][value="sla.breached"]')
    page.click("#webhook-form button[type=submit]")
    expect(page.locator("#webhook-secret")).to_be_visible()
    secret = page.inner_text("#webhook-secret code")
    assert len(secret) >= 20
    page.reload()
    assert secret not in page.content()
    [hook] = api.get("/api/v1/webhooks").json()
    assert hook["events"] == ["sla.breached"]
    api.post(
        "/api/v1/automation-rules",
        json={
            "name": "tell them",
            "event": "conversation.created",
            "actions": [{"type": "send_webhook", "value": hook["id"]}],
        },
    ).raise_for_status()
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "hook-1", "text": "hi", "from": {"email": "hook@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201
    # The live server's worker may claim the job first: work and look until it is done.
    for _ in range(100):
        Worker(database, settings).run_until_idle(max_jobs=50)
        log = api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
        if log and log[0]["attempts"]:
            break
        page.wait_for_timeout(100)
    assert log[0]["response_status"] == 418, log
    page.click(f'#webhooks tr[data-id="{hook["id"]}"] .hook-log')
    expect(page.locator(f"#log-{hook['id']} .delivery-log")).to_contain_text("418")
    page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)
    # Switch it off from the list (the page reloads and says so).
    with page.expect_navigation():
        page.click(f'#webhooks tr[data-id="{hook["id"]}"] .hook-toggle')
    expect(page.locator(f'#webhooks tr[data-id="{hook["id"]}"] .hook-toggle')).to_have_text(
        "Switch on"
    )
    assert api.get("/api/v1/webhooks").json()[0]["enabled"] is False

    # Labels: define one in green, rename it; the inbox paints it on conversations.
    page.goto(f"{live_server.url}/app/settings")
    page.fill("#label-create input[name=name]", "Urgnt")
    page.eval_on_selector("#label-create input[name=colour]", "el => el.value = '#00aa00'")
    page.click("#label-create button[type=submit]")
    row = page.locator("#labels-settings tr[data-id]")
    expect(row.locator("input[name=name]")).to_have_value("urgnt")
    row.locator("input[name=name]").fill("urgent")
    with page.expect_navigation():  # saving reloads the page: let it finish first
        row.locator(".label-save").click()
    expect(page.locator("#labels-settings tr[data-id] input[name=name]")).to_have_value("urgent")
    conv = r.json()["conversation_id"]
    api.post(f"/api/v1/conversations/{conv}/labels", json={"labels": ["urgent"]})
    page.goto(f"{live_server.url}/app/inbox?view=all")
    chip = page.locator(f'#conversation-list li[data-id="{conv}"] .label')
    expect(chip).to_have_css("background-color", "rgb(0, 170, 0)")


def test_an_owner_manages_members_teams_canned_responses_and_policies(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # The settings page could add members, teams, canned responses and SLA policies, and
    # change or remove none of them: that took the API.
    bob, victor = world.acme.users["bob"].id, world.acme.users["victor"].id
    team = client.post(
        "/api/v1/teams", json={"name": "Billing", "member_ids": [bob]}, headers=auth(world.alice)
    ).json()
    canned = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "bye", "text": "Goodbye!"},
        headers=auth(world.alice),
    ).json()
    policy = client.post(
        "/api/v1/sla-policies",
        json={"name": "Gold", "first_response_minutes": 10},
        headers=auth(world.alice),
    ).json()
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings")
    page.on("dialog", lambda dialog: dialog.accept())
    own = page.locator(f'#members tr[data-user="{world.acme.users["alice"].id}"] td.manage')
    expect(own).to_have_text("you")  # nobody demotes or removes themself by a slip

    # bob becomes an admin with room for 3 conversations; his row says so, drawn again
    # from the change as every open settings page hears it.
    row = page.locator(f'#members tr[data-user="{bob}"]')
    row.locator("select").select_option("admin")
    row.locator("input.capacity").fill("3")
    row.locator("button", has_text="Save").click()
    expect(row.locator("td").nth(2)).to_have_text("admin")
    expect(row.locator("td").nth(3)).to_have_text("3")
    assert row.locator("select").input_value() == "admin"  # its controls drawn again too
    # victor leaves the workspace.
    page.locator(f'#members tr[data-user="{victor}"] button', has_text="Remove").click()
    expect(page.locator(f'#members tr[data-user="{victor}"]')).to_have_count(0)
    members = client.get("/api/v1/members", headers=auth(world.alice)).json()
    assert {m["user_id"]: m["role"] for m in members}.get(victor) is None
    assert [m["capacity"] for m in members if m["user_id"] == bob] == [3]

    # The team is renamed and loses bob; then deleted.
    item = page.locator(f'#teams li[data-id="{team["id"]}"]')
    item.locator("input[name=name]").fill("Billing and refunds")
    item.locator(f'.team-members input[value="{bob}"]').uncheck()
    # Saved, the page is drawn again: waited for, or the Delete below can be clicked on the
    # page going away (its request cut off by the reload).
    with page.expect_navigation():
        item.locator("button.team-save").click()
    item = page.locator(f'#teams li[data-id="{team["id"]}"]')
    expect(item.locator("input[name=name]")).to_have_value("Billing and refunds")
    expect(item.locator(f'.team-members input[value="{bob}"]')).not_to_be_checked()
    item.locator("button.team-delete").click()
    expect(item).to_have_count(0)
    assert client.get("/api/v1/teams", headers=auth(world.alice)).json() == []

    # A canned response is edited (a shortcut taken is refused, said), then deleted with
    # a policy.
    client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "hello", "text": "Hello!"},
        headers=auth(world.alice),
    )
    page.reload()
    line = page.locator(f'#canned li[data-id="{canned["id"]}"]')
    line.locator("input[name=shortcut]").fill("hello")
    line.locator("button.save").click()
    expect(page.locator("#settings-error")).to_contain_text("/hello exists")
    line.locator("input[name=shortcut]").fill("/Goodbye")
    line.locator("textarea[name=text]").fill("Goodbye, {{ customer.first_name }}!")
    line.locator("button.save").click()
    expect(line.locator("input[name=shortcut]")).to_have_value("goodbye")
    expect(page.locator("#settings-error")).to_be_hidden()
    edited = client.get("/api/v1/canned-responses", headers=auth(world.alice)).json()
    assert {c["shortcut"]: c["text"] for c in edited}["goodbye"] == (
        "Goodbye, {{ customer.first_name }}!"
    )
    client.delete(
        f"/api/v1/canned-responses/{[c for c in edited if c['shortcut'] == 'hello'][0]['id']}",
        headers=auth(world.alice),
    )
    # A canned response and a policy are deleted.
    page.locator(f'#canned li[data-id="{canned["id"]}"] button.delete').click()
    expect(page.locator(f'#canned li[data-id="{canned["id"]}"]')).to_have_count(0)
    page.locator(f'#sla-policies li[data-id="{policy["id"]}"] button.delete').click()
    expect(page.locator(f'#sla-policies li[data-id="{policy["id"]}"]')).to_have_count(0)
    assert client.get("/api/v1/canned-responses", headers=auth(world.alice)).json() == []
    assert client.get("/api/v1/sla-policies", headers=auth(world.alice)).json() == []

    # What the server refuses is said, and nothing changes.
    row.locator("input.capacity").fill("5000")
    row.locator("button", has_text="Save").click()
    expect(page.locator("#settings-error")).to_contain_text("capacity: must be at most")
    expect(row.locator("td").nth(3)).to_have_text("3")


def test_an_admin_edits_and_disables_an_inbox(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # An inbox's settings were one JSON text to edit by hand: now a field each, by kind.
    chat = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Chat",
            "channel": "webchat",
            "settings": {"allowed_origins": ["https://shop.example"], "hmac_secret": "s3cret"},
        },
        headers=auth(world.alice),
    ).json()
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Mail", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    team = client.post(
        "/api/v1/teams", json={"name": "Front desk"}, headers=auth(world.alice)
    ).json()
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings")
    row = page.locator(f'#inboxes tr[data-id="{chat["id"]}"]')
    form = page.locator(f'form.inbox-form[data-id="{chat["id"]}"]')
    expect(form).to_be_hidden()
    row.locator("summary", has_text="Edit").click()
    expect(form).to_be_visible()
    secret = form.locator("input[name='settings.hmac_secret']")
    expect(secret).to_have_attribute("placeholder", re.compile("^Set "))
    assert "s3cret" not in page.content()  # a credential's value never reaches the page
    expect(form.locator("textarea[name='settings.allowed_origins']")).to_have_value(
        "https://shop.example"
    )
    form.locator("input[name=name]").fill("Site chat")
    form.locator("select[name=team_id]").select_option(team["id"])
    form.locator("textarea[name='settings.allowed_origins']").fill(
        "https://shop.example\nhttps://www.shop.example"
    )
    form.locator("input[name='settings.ask_email']").uncheck()
    form.locator("select[name='settings.email_inbox_id']").select_option(mail["id"])
    form.locator("input[name=enabled]").uncheck()
    form.locator("button[type=submit]").click()
    row = page.locator(f'#inboxes tr[data-id="{chat["id"]}"]')
    # Its name, and its health's badge says it is off (its reasons and figures behind it).
    expect(row.locator("td").first).to_contain_text("Site chat")
    expect(row.locator("td details.health > summary")).to_have_text("disabled")
    got = client.get(f"/api/v1/inboxes/{chat['id']}", headers=auth(world.alice)).json()
    assert got["name"] == "Site chat" and got["enabled"] is False
    assert got["team_id"] == team["id"] and got["secrets_set"] == ["hmac_secret"]
    assert got["settings"] == {
        "allowed_origins": ["https://shop.example", "https://www.shop.example"],
        "ask_email": False,
        "email_inbox_id": mail["id"],
    }
    # Disabled, its widget is refused.
    r = client.post(
        f"/widget/api/{chat['public_token']}/session",
        json={},
        headers={"Origin": "https://shop.example"},
    )
    assert r.status_code == 404
    # The credential cleared from its own field.
    page.locator(f'#inboxes tr[data-id="{chat["id"]}"] summary', has_text="Edit").click()
    form = page.locator(f'form.inbox-form[data-id="{chat["id"]}"]')
    form.locator("input[data-clear='settings.hmac_secret']").check()
    form.locator("button[type=submit]").click()
    expect(page.locator(f'form.inbox-form[data-id="{chat["id"]}"]')).to_be_hidden()
    got = client.get(f"/api/v1/inboxes/{chat['id']}", headers=auth(world.alice)).json()
    assert got["secrets_set"] == [] and got["settings"]["email_inbox_id"] == mail["id"]


def test_an_admin_adds_an_inbox_with_its_channels_settings(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings")
    new = page.locator("#new-inbox")
    new.locator("input[name=name]").fill("Texts")
    new.locator("select[name=channel]").select_option("twilio_sms")
    sms = new.locator("fieldset[data-channel=twilio_sms]")
    expect(sms).to_be_visible()
    expect(new.locator("fieldset[data-channel=email]")).to_be_hidden()
    sms.locator("input[name='settings.account_sid']").fill("AC123")
    sms.locator("input[name='settings.auth_token']").fill("tw-token")
    # A setting of the wrong form is refused, naming it; nothing is added.
    sms.locator("input[name='settings.phone_number']").fill("555-0100")
    new.locator("button[type=submit]").click()
    expect(page.locator("#settings-error")).to_contain_text(
        "settings.phone_number (Phone number): not a phone number"
    )
    assert not any(
        i["name"] == "Texts"
        for i in client.get("/api/v1/inboxes", headers=auth(world.alice)).json()
    )
    sms.locator("input[name='settings.phone_number']").fill("+1 (415) 555-0100")
    new.locator("button[type=submit]").click()
    row = page.locator("#inboxes tr[data-id]", has_text="Texts")
    expect(row).to_be_visible()
    expect(row).not_to_contain_text("needs")
    made = next(
        i
        for i in client.get("/api/v1/inboxes", headers=auth(world.alice)).json()
        if i["name"] == "Texts"
    )
    # Only the chosen channel's settings went, written as stored: the number in E.164.
    assert made["channel"] == "twilio_sms" and made["missing"] == []
    assert made["settings"] == {"account_sid": "AC123", "phone_number": "+14155550100"}
    assert made["secrets_set"] == ["auth_token"]
    # One without what it needs says so in the list.
    new = page.locator("#new-inbox")
    new.locator("input[name=name]").fill("Bot")
    new.locator("select[name=channel]").select_option("telegram")
    new.locator("button[type=submit]").click()
    expect(page.locator("#inboxes tr[data-id]", has_text="Bot")).to_contain_text(
        "needs bot_token, secret_token"
    )


def test_an_admin_changes_a_service_level_policy_and_adds_one_with_conditions(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The settings page could add a policy by its name and two targets, and delete it:
    # no conditions, no next-response target or warning, and nothing could be changed.
    policy = client.post(
        "/api/v1/sla-policies",
        json={"name": "Gold", "first_response_minutes": 10},
        headers=auth(world.alice),
    ).json()
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings#service-levels")
    item = page.locator(f'#sla-policies li[data-id="{policy["id"]}"]')
    item.locator("input[name=first_response_minutes]").fill("30")
    item.locator("input[name=resolution_minutes]").fill("480")
    item.locator('input[name=priorities][value="urgent"]').check()
    item.locator("input[name=labels]").fill(" VIP , billing")
    item.locator("button[type=submit]").click()
    expect(item.locator(".saved")).to_be_visible()
    expect(item.locator("input[name=labels]")).to_have_value("billing, vip")
    (kept,) = client.get("/api/v1/sla-policies", headers=auth(world.alice)).json()
    assert (kept["first_response_minutes"], kept["resolution_minutes"]) == (30, 480)
    assert kept["priorities"] == ["urgent"] and kept["labels"] == ["billing", "vip"]
    assert kept["warn_before_minutes"] == 15 and kept["next_response_minutes"] is None
    # A refused change is said and leaves the policy as it was.
    item.locator("input[name=name]").fill("")
    item.locator("button[type=submit]").click()
    expect(page.locator("#settings-error")).to_contain_text("name")
    assert client.get("/api/v1/sla-policies", headers=auth(world.alice)).json()[0]["name"] == (
        "Gold"
    )
    # A new one, for one inbox, with a next-response target and no warning.
    new = page.locator("#sla-create")
    new.locator("input[name=name]").fill("API inbox")
    new.locator(f'input[name=inbox_ids][value="{inbox}"]').check()
    new.locator("input[name=position]").fill("-1")
    new.locator("input[name=next_response_minutes]").fill("20")
    new.locator("input[name=warn_before_minutes]").fill("0")
    new.locator("button[type=submit]").click()
    expect(page.locator("#sla-policies > li[data-id]")).to_have_count(2)
    made = next(
        p
        for p in client.get("/api/v1/sla-policies", headers=auth(world.alice)).json()
        if p["name"] == "API inbox"
    )
    assert made["inbox_ids"] == [inbox] and made["position"] == -1
    assert (made["next_response_minutes"], made["warn_before_minutes"]) == (20, 0)
    assert made["first_response_minutes"] is None and made["priorities"] == []


def test_an_admin_builds_a_rule_by_choosing_names_and_it_runs(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
    settings: Settings,
) -> None:
    # The rule builder took raw ids typed into one text box, and no page showed a member's,
    # team's or canned response's id: now every part of a rule is chosen, by name.
    bob = world.acme.users["bob"].id
    alice = auth(world.alice)
    thanks = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "thanks", "text": "Thanks, we are on it."},
        headers=alice,
    ).json()
    # A rule before it makes VIP customers' conversations urgent.
    client.post(
        "/api/v1/automation-rules",
        json={
            "name": "VIPs are urgent",
            "event": "conversation.created",
            "position": -1,
            "conditions": [{"field": "customer.email", "op": "contains", "value": "@vip.example"}],
            "actions": [{"type": "set_priority", "value": "urgent"}],
        },
        headers=alice,
    ).raise_for_status()
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    sign_in(page, live_server, "alice@acme.test", "/app/settings#automation")
    form = page.locator("#rule-form")
    form.locator("input[name=name]").fill("VIPs to Bob")
    form.get_by_label("When").select_option("conversation.created")
    page.click("#add-condition")
    channel = page.locator("#conditions > li").nth(0)
    channel.get_by_label("Field").select_option(label="channel")
    channel.get_by_label("Operator").select_option(label="equals")
    channel.get_by_label("Value").select_option(label="api")
    page.click("#add-condition")
    priority = page.locator("#conditions > li").nth(1)
    priority.get_by_label("Field").select_option(label="priority")
    priority.get_by_label("Operator").select_option(label="is one of")
    expect(priority.get_by_role("checkbox")).to_have_count(5)  # none, low ... urgent
    priority.get_by_role("checkbox", name="high").check()
    priority.get_by_role("checkbox", name="urgent").check()
    steps = page.locator("#actions > li")
    steps.nth(0).get_by_label("Action", exact=True).select_option(label="assign agent")
    agents = steps.nth(0).get_by_label("Agent to assign")
    # Those who can be given conversations, by name: the viewer is not among them.
    expect(agents.locator("option")).to_have_text(["Choose an agent…", "Alice", "Bob"])
    agents.select_option(label="Bob")
    page.click("#add-action")
    steps.nth(1).get_by_label("Action", exact=True).select_option(label="add label")
    steps.nth(1).get_by_label("Label").fill("vip")
    page.click("#add-action")
    steps.nth(2).get_by_label("Action", exact=True).select_option(label="send canned")
    steps.nth(2).get_by_label("Canned response").select_option(label="/thanks")
    # Switched to an event without a conversation, the rule is refused, saying why; nothing
    # chosen is lost, and switched back it saves.
    form.get_by_label("When").select_option("customer.attribute_changed")
    form.locator("button[type=submit]").click()
    expect(page.locator("#settings-error")).to_contain_text(
        "conditions[0].field: channel is a conversation's"
    )
    expect(channel.get_by_label("Value")).to_have_value("api")
    expect(priority.get_by_role("checkbox", name="urgent")).to_be_checked()
    expect(steps.nth(0).get_by_label("Agent to assign")).to_have_value(bob)
    form.get_by_label("When").select_option("conversation.created")
    page.locator("#automation").screenshot(path=str(ARTIFACTS / "rule-builder.png"))
    form.locator("button[type=submit]").click()
    row = page.locator("#rule-rows tr", has_text="VIPs to Bob")
    expect(row).to_contain_text("assign agent Bob")
    expect(row).to_contain_text("send canned /thanks")
    made = next(
        r
        for r in client.get("/api/v1/automation-rules", headers=alice).json()
        if r["name"] == "VIPs to Bob"
    )
    assert made["conditions"] == [
        {"field": "channel", "op": "equals", "value": "api"},
        {"field": "priority", "op": "in", "value": ["high", "urgent"]},
    ]
    assert made["actions"] == [
        {"type": "assign_agent", "value": bob},
        {"type": "add_label", "value": "vip"},
        {"type": "send_canned", "value": thanks["id"]},
    ]

    # A VIP writes through the API channel: the rule gives Bob the conversation, labels it
    # and thanks them.
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "vip-1", "text": "Hello", "from": {"email": "ceo@vip.example"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    conv = r.json()["conversation_id"]
    # The live server's worker may claim the job first: work and look until it is done.
    for _ in range(100):
        Worker(database, settings).run_until_idle(max_jobs=50)
        got = client.get(f"/api/v1/conversations/{conv}", headers=alice).json()
        if got["assignee_id"]:
            break
        page.wait_for_timeout(100)
    assert got["assignee_id"] == bob and got["priority"] == "urgent"
    assert "vip" in got["labels"]
    assert "Thanks, we are on it." in [m["text"] for m in got["messages"]]

    # What a rule names and is gone since shows as gone, chosen, when the rule is edited.
    team = client.post("/api/v1/teams", json={"name": "Escalations"}, headers=alice).json()
    escalate = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "Escalate",
            "event": "conversation.created",
            "actions": [{"type": "assign_team", "value": team["id"]}],
        },
        headers=alice,
    ).json()
    with database.session() as db:  # as Rapport allowed before it refused it (409 now)
        db.delete(db.get(Team, team["id"]))
        db.commit()
    page.reload()
    page.click(f'#rule-rows tr[data-id="{escalate["id"]}"] .rule-edit')
    gone = page.locator("#actions > li").nth(0).get_by_label("Team", exact=True)
    expect(gone).to_have_value(team["id"])
    expect(gone.locator("option:checked")).to_have_text(f"(gone: {team['id']})")


def test_a_refusal_far_down_the_settings_page_is_said_in_view(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # A team a rule names is not deleted: the refusal was drawn at the page's top, out of
    # sight of the admin who had scrolled down to the team.
    team = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice))
    team_id = team.json()["id"]
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "Billing to billing",
            "event": "conversation.created",
            "conditions": [],
            "actions": [{"type": "assign_team", "value": team_id}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    client.post(
        "/api/v1/attribute-definitions",
        json={"key": "plan", "type": "text"},
        headers=auth(world.alice),
    ).raise_for_status()
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings")
    page.set_viewport_size({"width": 1200, "height": 500})
    page.on("dialog", lambda dialog: dialog.accept())
    row = page.locator(f'#teams li[data-id="{team_id}"]')
    row.locator("button.team-delete").scroll_into_view_if_needed()
    row.locator("button.team-delete").click()
    said = page.locator("#settings-error")
    expect(said).to_contain_text("Billing to billing")
    expect(said).to_be_in_viewport()
    expect(row.locator("button.team-delete")).to_be_in_viewport()  # the page stayed
    # ...and nothing sticky covers it.
    covered = row.locator("button.team-delete").evaluate(
        """b => {
             const r = b.getBoundingClientRect();
             return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) !== b;
           }"""
    )
    assert not covered
    page.screenshot(path=str(ARTIFACTS / "settings-refusal.png"))
    expect(row).to_be_visible()  # not deleted
    # The next action takes the refusal away (it stayed pinned over the page for good).
    page.locator("#attribute-definitions button.edit").click()
    expect(said).to_be_hidden()
