"""Unpublished changes: "Save draft" on a published article keeps the published version
live for readers, the help center's search and the bot, until the changes are published
(or discarded). An unpublished article is its own draft, changed as it always was."""

from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.config import Settings
from rapport.db import Database
from rapport.privacy.models import AuditLog
from tests.bot.test_bot import ask, bot_messages, set_up_bot, thread, work
from tests.conftest import auth
from tests.factories import World
from tests.web.test_pages import sign_in

LIVE = "within 30 days of delivery"
EDIT = (
    "You can return any item within 60 days of delivery for a full refund or an exchange "
    "voucher. The refund reaches your original payment method within five business days."
    "\n\n<script>alert(1)</script>"
)


def published(client: TestClient, world: World, title: str, body: str) -> dict:  # type: ignore[type-arg]
    article = client.post(
        "/api/v1/kb/articles", json={"title": title, "body": body}, headers=auth(world.bob)
    ).json()
    r = client.post(f"/api/v1/kb/articles/{article['id']}/publish", headers=auth(world.bob))
    assert r.json()["status"] == "published", r.text
    return r.json()  # type: ignore[no-any-return]


def save_draft(client: TestClient, world: World, article_id: str, **fields: str) -> dict:  # type: ignore[type-arg]
    r = client.put(f"/api/v1/kb/articles/{article_id}/draft", json=fields, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def read(client: TestClient, slug: str) -> str:
    """An article's page on the help center, from its title to the end of its text."""
    page = client.get(f"/help/acme/articles/{slug}").text
    return page.split("<h1>", 1)[1].split("</main>", 1)[0]


def results(client: TestClient, q: str) -> str:
    """The help center's search results for ``q``, without the page around them."""
    page = client.get("/help/acme/search", params={"q": q}).text
    return page.split("</h1>", 1)[1].split("</main>", 1)[0]


def bot_answer(
    client: TestClient, world: World, database: Database, settings: Settings, n: int
) -> str:
    conv_id = ask(
        client, world, f"refund-{n}", "Can I return an item for a refund?", f"kim{n}@example.com"
    )
    work(database, settings)
    (answer,) = bot_messages(thread(client, world, conv_id))
    assert answer["meta"]["bot"]["source"] == "article", answer
    return str(answer["text"])


def test_a_published_articles_draft_reaches_no_reader_search_or_bot_until_published(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ids = set_up_bot(client, world, world.acme.inbox.id)  # type: ignore[union-attr]
    article_id = ids["article"]
    assert LIVE in bot_answer(client, world, database, settings, 1)

    saved = save_draft(client, world, article_id, title="Refunds, returns and exchanges", body=EDIT)
    assert saved["status"] == "published" and saved["title"] == "Refunds and returns"
    assert LIVE in saved["body"] and "voucher" not in saved["html"]
    draft = saved["draft"]
    assert draft["title"] == "Refunds, returns and exchanges" and draft["body"] == EDIT
    assert "exchange voucher" in draft["html"] and "<script>" not in draft["html"]
    assert "&lt;script&gt;" in draft["html"]  # sanitized as an article's body is
    fetched = client.get(f"/api/v1/kb/articles/{article_id}", headers=auth(world.victor)).json()
    assert fetched["draft"] == draft and fetched["body"] == saved["body"]
    listed = client.get("/api/v1/kb/articles", headers=auth(world.bob)).json()["items"]
    assert [a["draft"]["title"] for a in listed] == ["Refunds, returns and exchanges"]

    # Readers: the article's page, the home page, the help center's search.
    page = client.get("/help/acme/articles/refunds-and-returns").text
    assert LIVE in page and "60 days" not in page and "voucher" not in page
    home = client.get("/help/acme/").text
    assert "Refunds and returns" in home and "exchanges" not in home
    found = results(client, "refund exchange voucher")
    assert "Refunds and returns" in found and LIVE in found
    assert "voucher" not in found and "exchanges" not in found
    # Agents' search (what the assistant suggests) and the bot.
    hits = client.get(
        "/api/v1/kb/search", params={"q": "refund exchange voucher"}, headers=auth(world.bob)
    ).json()
    assert [h["title"] for h in hits] == ["Refunds and returns"]
    assert "voucher" not in hits[0]["excerpt"]
    answer = bot_answer(client, world, database, settings, 2)
    assert LIVE in answer and "voucher" not in answer

    r = client.post(f"/api/v1/kb/articles/{article_id}/publish", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    live = r.json()
    assert live["draft"] is None and live["status"] == "published"
    assert live["title"] == "Refunds, returns and exchanges" and live["body"] == EDIT
    assert live["published_at"] == saved["published_at"]  # first published, as before
    # Its description was the start of its first text, and is the start of this one now
    # (it stayed the first, so search engines and results described the old refund rules).
    assert live["description"].startswith("You can return any item within 60 days")
    whole = client.get("/help/acme/articles/refunds-and-returns").text
    assert '<meta name="description" content="You can return any item within 60 days' in whole
    page = read(client, "refunds-and-returns")
    assert "60 days" in page and "exchange voucher" in page and LIVE not in page
    found = results(client, "refund exchange voucher")
    assert "Refunds, returns and exchanges" in found and "exchange voucher" in found
    answer = bot_answer(client, world, database, settings, 3)
    assert "60 days" in answer and LIVE not in answer
    assert (
        client.get(f"/api/v1/kb/articles/{article_id}", headers=auth(world.bob)).json()["draft"]
        is None
    )


def test_a_discarded_draft_leaves_the_published_version_as_it_was(
    client: TestClient, world: World, database: Database
) -> None:
    client.put("/api/v1/kb/help-center", json={"slug": "acme"}, headers=auth(world.alice))
    article = published(client, world, "Opening hours", "We are open 9 to 5.")
    save_draft(client, world, article["id"], body="We are open 8 to 8.")
    r = client.delete(f"/api/v1/kb/articles/{article['id']}/draft", headers=auth(world.bob))
    assert r.status_code == 204
    after = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.bob)).json()
    assert after["draft"] is None and after["status"] == "published"
    assert after["body"] == "We are open 9 to 5." and after["updated_at"] == article["updated_at"]
    assert "9 to 5" in client.get("/help/acme/articles/opening-hours").text
    # Nothing left to discard: nothing to do; publishing publishes what is live.
    again = client.delete(f"/api/v1/kb/articles/{article['id']}/draft", headers=auth(world.bob))
    assert again.status_code == 204
    r = client.post(f"/api/v1/kb/articles/{article['id']}/publish", headers=auth(world.bob))
    assert r.json()["body"] == "We are open 9 to 5."
    with database.session(write=False) as db:
        actions = list(
            db.scalars(select(AuditLog.action).where(AuditLog.target_id == article["id"]))
        )
    assert actions.count("kb.discard_draft") == 1


def test_save_draft_on_an_unpublished_article_changes_it_as_before(
    client: TestClient, world: World
) -> None:
    article = client.post(
        "/api/v1/kb/articles",
        json={"title": "Gift cards", "body": "Soon."},
        headers=auth(world.bob),
    ).json()
    saved = save_draft(client, world, article["id"], title="Gift cards", body="Buy **one**.")
    assert saved["status"] == "draft" and saved["draft"] is None
    assert saved["body"] == "Buy **one**." and "<strong>one</strong>" in saved["html"]
    patched = client.patch(
        f"/api/v1/kb/articles/{article['id']}", json={"body": "Buy two."}, headers=auth(world.bob)
    ).json()
    assert patched["body"] == "Buy two." and patched["draft"] is None
    r = client.post(f"/api/v1/kb/articles/{article['id']}/publish", headers=auth(world.bob))
    assert r.json()["status"] == "published" and r.json()["body"] == "Buy two."


def test_patch_still_changes_a_published_article_at_once(client: TestClient, world: World) -> None:
    # The API's PATCH keeps its meaning for the clients that sync articles through it.
    client.put("/api/v1/kb/help-center", json={"slug": "acme"}, headers=auth(world.alice))
    article = published(client, world, "Opening hours", "We are open 9 to 5.")
    r = client.patch(
        f"/api/v1/kb/articles/{article['id']}",
        json={"body": "Open 8 to 8."},
        headers=auth(world.bob),
    )
    assert r.json()["draft"] is None
    assert "8 to 8" in client.get("/help/acme/articles/opening-hours").text


def test_a_patch_made_live_while_a_draft_waits_is_not_undone_by_publishing_it(
    client: TestClient, world: World
) -> None:
    # The first draft copied every live field, and publishing copied them all back: a title
    # an API client fixed in the meantime went back to the old one.
    client.put("/api/v1/kb/help-center", json={"slug": "acme"}, headers=auth(world.alice))
    article = published(client, world, "Opening hours", "We are open 9 to 5.")
    save_draft(client, world, article["id"], body="We are open 8 to 8.")
    r = client.patch(
        f"/api/v1/kb/articles/{article['id']}",
        json={"title": "Opening times", "body": "We are open 9 to 6."},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    # The draft keeps its own change (the body) and takes the one it had not made.
    assert r.json()["draft"]["title"] == "Opening times"
    assert r.json()["draft"]["body"] == "We are open 8 to 8."
    done = client.post(f"/api/v1/kb/articles/{article['id']}/publish", headers=auth(world.bob))
    assert (done.json()["title"], done.json()["body"]) == ("Opening times", "We are open 8 to 8.")


def test_a_draft_is_checked_as_an_article_is(client: TestClient, world: World) -> None:
    article = published(client, world, "Opening hours", "We are open 9 to 5.")
    other = published(client, world, "Holidays", "Closed on the 25th.")
    url = f"/api/v1/kb/articles/{article['id']}/draft"
    for fields, status in [
        ({"title": "  "}, 422),
        ({"slug": "Not a slug"}, 422),
        ({"slug": other["slug"]}, 409),
        ({"collection_id": "0" * 32}, 404),
    ]:
        r = client.put(url, json=fields, headers=auth(world.bob))
        assert r.status_code == status, (fields, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert client.put(url, json={"body": "x"}, headers=auth(world.victor)).status_code == 403
    # Another workspace's member finds no such article, and changes nothing.
    for method in ("PUT", "DELETE"):
        r = client.request(method, url, json={"body": "pwned"}, headers=auth(world.mallory))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    # Saved back to what is live: nothing is unpublished.
    save_draft(client, world, article["id"], body="We are open 8 to 8.")
    same = save_draft(client, world, article["id"], body="We are open 9 to 5.")
    assert same["draft"] is None


def test_unpublishing_keeps_the_unpublished_changes_as_the_article(
    client: TestClient, world: World
) -> None:
    article = published(client, world, "Opening hours", "We are open 9 to 5.")
    save_draft(client, world, article["id"], title="Hours", slug="hours", body="Open 8 to 8.")
    r = client.post(f"/api/v1/kb/articles/{article['id']}/unpublish", headers=auth(world.bob))
    row = r.json()
    assert row["status"] == "draft" and row["draft"] is None
    assert (row["title"], row["slug"], row["body"]) == ("Hours", "hours", "Open 8 to 8.")


def test_the_editor_shows_the_unpublished_changes_with_a_note(
    client: TestClient, world: World
) -> None:
    article = published(client, world, "Opening hours", "We are open 9 to 5.")
    sign_in(client, "bob@acme.test")
    editor = client.get(f"/app/kb/articles/{article['id']}").text
    assert "unpublished changes" not in editor and 'data-kb-action="discard"' not in editor
    save_draft(client, world, article["id"], body="We are open **8 to 8**.")
    editor = client.get(f"/app/kb/articles/{article['id']}").text
    assert "This article has unpublished changes" in editor
    assert ">We are open **8 to 8**.</textarea>" in editor
    assert '<div id="kb-preview"><p>We are open <strong>8 to 8</strong>.</p>' in editor
    assert 'data-kb-action="publish"' in editor and 'data-kb-action="discard"' in editor
    assert "unpublished changes" in client.get("/app/kb").text
    sign_in(client, "victor@acme.test")
    read_only = client.get(f"/app/kb/articles/{article['id']}").text
    assert "This article has unpublished changes" in read_only and "data-kb-action" not in read_only


def test_a_description_written_for_an_article_is_kept_when_its_text_changes(
    client: TestClient, world: World
) -> None:
    client.put("/api/v1/kb/help-center", json={"slug": "acme"}, headers=auth(world.alice))
    article = published(client, world, "Opening hours", "We are open 9 to 5.")
    assert article["description"] == "We are open 9 to 5."  # none given: its text's start
    url = f"/api/v1/kb/articles/{article['id']}"
    changed = client.patch(url, json={"body": "We are open 8 to 8."}, headers=auth(world.bob))
    assert changed.json()["description"] == "We are open 8 to 8."
    written = client.patch(
        url, json={"description": "When to reach us"}, headers=auth(world.bob)
    ).json()
    assert written["description"] == "When to reach us"
    save_draft(client, world, article["id"], body="We are open around the clock.")
    client.post(f"{url}/publish", headers=auth(world.bob)).raise_for_status()
    again = client.patch(url, json={"body": "Open 24/7."}, headers=auth(world.bob)).json()
    assert again["body"] == "Open 24/7." and again["description"] == "When to reach us"
    # Cleared, it is the text's start again.
    cleared = client.patch(url, json={"description": ""}, headers=auth(world.bob)).json()
    assert cleared["description"] == "Open 24/7."
