"""What sanitizing leaves of an HTML message: formatting, never anything that runs or asks
an address unasked (a tracking pixel told its sender when an agent read the mail, and from
where; a relative image made the agent's browser ask Rapport, with the agent's cookies)."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from rapport.conversations.models import Message
from rapport.db import Database
from rapport.sanitize import clean_html, message_html
from tests.conftest import auth
from tests.factories import PASSWORD, World

OWN = "/api/v1/conversations/c1/messages/m1/attachments/"


def test_a_remote_image_is_held_with_its_address_in_data_remote_src() -> None:
    got = message_html('<p>Hi</p><img src="https://t.test/p.gif?u=1&amp;o=2" alt="logo">')
    assert (
        got.html == '<p>Hi</p><img data-remote-src="https://t.test/p.gif?u=1&amp;o=2" alt="logo">'
    )
    assert got.held == 1


@pytest.mark.parametrize(
    "src",
    [
        "http://t.test/p.gif",
        "HTTP://t.test/p.gif",
        " http://t.test/p.gif ",
        "ht\ttp://t.test/p.gif",
        "http&#58;//t.test/p.gif",
    ],
)
def test_a_plain_http_image_is_held_as_https_as_a_browser_would_load_it(src: str) -> None:
    got = message_html(f'<img src="{src}">')
    assert got.html.lower() == '<img data-remote-src="https://t.test/p.gif">'


@pytest.mark.parametrize(
    "src",
    [
        "/api/v1/me",
        "../settings",
        "settings",
        "?x=1",
        "//t.test/p.gif",
        " //t.test/p.gif",
        "/\\t.test/p.gif",
        "\\\\t.test/p.gif",
        "https:t.test/p.gif",
        "https:\\\\t.test/p.gif",
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
        "javascript:alert(1)",
        "ftp://t.test/p.gif",
        "blob:https://t.test/x",
    ],
)
def test_an_image_of_a_relative_or_other_address_is_dropped(src: str) -> None:
    got = message_html(f'<img src="{src}" alt="a">')
    assert (got.html, got.held) == ('<img alt="a">', 0)


@pytest.mark.parametrize(
    "markup",
    [
        '<img srcset="https://t.test/a.gif 2x">',
        '<img src="cid:a" srcset="https://t.test/a.gif 2x" sizes="1px">',
        '<img lowsrc="https://t.test/a.gif" dynsrc="https://t.test/b.gif">',
        '<img longdesc="https://t.test/a">',
        '<div style="background:url(https://t.test/a.gif)">x</div>',
        "<p style=\"background-image: url('//t.test/a.gif')\">x</p>",
        '<picture><source srcset="https://t.test/a.gif"></picture>',
        '<table background="https://t.test/a.gif"><tr><td background="/x">x</td></tr></table>',
        '<body background="https://t.test/a.gif">x</body>',
        '<video poster="https://t.test/a.gif" src="https://t.test/v.mp4"></video>',
        '<audio src="https://t.test/a.mp3"></audio>',
        '<input type="image" src="https://t.test/a.gif">',
        '<svg><image href="https://t.test/a.gif"></image></svg>',
        '<svg><image xlink:href="https://t.test/a.gif"></image></svg>',
        '<link rel="stylesheet" href="https://t.test/a.css">',
        "<style>@import url(https://t.test/a.css); p{background:url(/x)}</style>",
        '<iframe src="https://t.test/"></iframe>',
        '<object data="https://t.test/a.swf"></object><embed src="https://t.test/a">',
        '<meta http-equiv="refresh" content="0;url=https://t.test/">',
        '<base href="https://t.test/">',
        '<a href="https://t.test/" ping="https://t.test/ping">x</a>',
    ],
)
def test_nothing_else_that_loads_an_address_survives(markup: str) -> None:
    got = message_html(markup)
    assert "t.test/a" not in got.html and "url(" not in got.html and got.held == 0


def test_an_image_of_the_mails_own_parts_keeps_its_cid_address() -> None:
    assert message_html('<img src="cid:logo@x">').html == '<img src="cid:logo@x">'


def test_the_messages_own_attachments_show_and_nothing_else_of_ours() -> None:
    assert message_html(f'<img src="{OWN}a1">', own_images=OWN).html == f'<img src="{OWN}a1">'
    for other in (
        f"{OWN}../../m2/attachments/a1",
        f"{OWN}a1?download=1",
        "/api/v1/conversations/c2/messages/m9/attachments/a1",
    ):
        assert message_html(f'<img src="{other}">', own_images=OWN).html == "<img>", other
    # Without a message to show it in (when a message is stored), no address of ours.
    assert message_html(f'<img src="{OWN}a1">').html == "<img>"


def test_an_address_of_its_own_in_data_remote_src_is_held_only_if_remote() -> None:
    assert message_html('<img data-remote-src="https://t.test/a">').held == 1
    for bad in ("/api/v1/me", "javascript:alert(1)", "//t.test/a", "cid:a"):
        assert message_html(f'<img data-remote-src="{bad}">').html == "<img>", bad
    assert message_html('<p data-remote-src="https://t.test/a">x</p>').html == "<p>x</p>"


def test_text_that_looks_like_the_mark_is_left_as_text() -> None:
    got = message_html(
        '<p> src="##https://t.test/a" data-remote-src="x"</p><img alt=" src=&quot;#">'
    )
    assert got.held == 0 and "<img alt=" in got.html and "data-remote-src=&quot;" not in got.html


def test_sanitizing_again_changes_nothing() -> None:
    first = message_html(
        '<p>Hi <a href="https://x.test">x</a></p><img src="https://t.test/a.gif" width="2">'
        '<img src="cid:a"><img src="/x">',
    )
    assert message_html(first.html) == first
    assert clean_html(first.html) == first.html


def test_the_business_own_writing_shows_its_images_as_written() -> None:
    # A help-center article, a reply we send: the images are the business's own.
    assert (
        clean_html('<img src="https://cdn.acme.test/logo.png"><script>x</script>', images="shown")
        == '<img src="https://cdn.acme.test/logo.png">'
    )


def _page(client: TestClient, conversation_id: str) -> str:
    r = client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return client.get(f"/app/conversations/{conversation_id}").text


def test_a_message_stored_under_older_rules_holds_its_images_on_the_page(
    client: TestClient, world: World, database: Database
) -> None:
    opened = world.acme.opened
    with database.session() as db:  # as the old sanitizer stored it
        db.execute(
            update(Message)
            .where(Message.id == opened.message.id)
            .values(html='<p>Hi</p><img src="https://t.test/pixel.gif"><img src="/api/v1/me">')
        )
    page = _page(client, opened.conversation.id)
    assert ' src="https://t.test' not in page and ' src="/api/v1/me"' not in page
    assert '<img data-remote-src="https://t.test/pixel.gif">' in page
    assert "1 remote image not loaded" in page and 'class="show-images"' in page
    csp = client.get(f"/app/conversations/{opened.conversation.id}").headers[
        "content-security-policy"
    ]
    assert "img-src 'self' https: data:;" in csp


def test_an_inbound_message_is_stored_with_its_images_held(
    client: TestClient, world: World
) -> None:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "pixel-1",
            "text": "Hi",
            "html": '<p>Hi</p><img src="https://t.test/pixel.gif"><img src="../settings">',
            "from": {"email": "trent@example.com"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code in (200, 201), r.text
    conv = client.get(
        f"/api/v1/conversations/{r.json()['conversation_id']}", headers=auth(world.bob)
    ).json()
    assert conv["messages"][-1]["html"] == (
        '<p>Hi</p><img data-remote-src="https://t.test/pixel.gif"><img>'
    )
    # The thread holds nothing else: no button where no image waits.
    assert "show-images" not in _page(client, world.acme.opened.conversation.id)


def test_a_reply_we_send_keeps_its_images_for_the_customer(
    client: TestClient, world: World
) -> None:
    conv = world.acme.opened.conversation.id
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "See", "html": '<p>See</p><img src="https://cdn.acme.test/map.png">'},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    assert r.json()["html"] == '<p>See</p><img src="https://cdn.acme.test/map.png">'
    # On the agents' page it is held all the same, as every message is.
    assert '<img data-remote-src="https://cdn.acme.test/map.png">' in _page(client, conv)
