"""The knowledge base and the public help center."""

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from rapport.assistant import embeddings
from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.worker import Worker
from rapport.kb import public, service
from rapport.kb.models import Article, ArticleStatus
from tests.conftest import auth, record_write_lock, sqlite_only
from tests.factories import World

ARTICLES = [
    (
        "Refunds and returns",
        "You can return any item within 30 days of delivery. Once the parcel is back in our "
        "warehouse, the full amount is credited to your original payment method within five "
        "business days.",
    ),
    (
        "Changing your delivery address",
        "Before an order ships you can change where it goes: open **Orders**, choose the order "
        "and pick *Edit address*. After it ships, the carrier decides.",
    ),
    (
        "Resetting your password",
        "Use *Forgot password* on the sign-in page; the link in the email is valid for 30 minutes.",
    ),
]


@pytest.fixture
def no_ai() -> Iterator[None]:
    embeddings.set_disabled(True)
    yield
    embeddings.set_disabled(False)


def setup_center(client: TestClient, world: World) -> dict[str, str]:
    r = client.put(
        "/api/v1/kb/help-center",
        json={"slug": "acme", "title": "Acme Help", "intro": "Answers, day and night"},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    col = client.post(
        "/api/v1/kb/collections",
        json={"title": "Orders", "description": "Delivery, returns, refunds"},
        headers=auth(world.bob),
    ).json()
    ids = {}
    for title, body in ARTICLES:
        r = client.post(
            "/api/v1/kb/articles",
            json={"title": title, "body": body, "collection_id": col["id"]},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        ids[title] = r.json()["id"]
        published = client.post(
            f"/api/v1/kb/articles/{ids[title]}/publish", headers=auth(world.bob)
        )
        assert published.json()["status"] == "published"
    ids["collection"] = col["id"]
    return ids


def test_agents_write_articles_viewers_read_them(client: TestClient, world: World) -> None:
    r = client.post("/api/v1/kb/articles", json={"title": "x"}, headers=auth(world.victor))
    assert r.status_code == 403
    r = client.post(
        "/api/v1/kb/articles",
        json={"title": "Shipping times", "body": "We ship in **two** days."},
        headers=auth(world.bob),
    )
    assert r.status_code == 201
    article = r.json()
    assert article["status"] == "draft" and article["slug"] == "shipping-times"
    assert "<strong>two</strong>" in article["html"]
    listed = client.get("/api/v1/kb/articles", headers=auth(world.victor)).json()["items"]
    assert [a["id"] for a in listed] == [article["id"]]
    r = client.patch(
        f"/api/v1/kb/articles/{article['id']}",
        json={"body": "We ship in three days."},
        headers=auth(world.bob),
    )
    assert r.json()["html"].strip() == "<p>We ship in three days.</p>"
    french = client.post(
        "/api/v1/kb/articles",
        json={
            "title": "Délais de livraison",
            "body": "Nous expédions en trois jours.",
            "locale": "fr",
            "translation_of": article["id"],
        },
        headers=auth(world.bob),
    ).json()
    assert french["group_id"] == article["group_id"] and french["slug"] == "delais-de-livraison"
    duplicate = client.post(
        "/api/v1/kb/articles", json={"title": "Shipping times"}, headers=auth(world.bob)
    )
    assert duplicate.status_code == 409
    bad = client.post(
        "/api/v1/kb/articles", json={"title": "x", "locale": "english"}, headers=auth(world.bob)
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


def test_markdown_cannot_carry_a_script(client: TestClient, world: World) -> None:
    r = client.post(
        "/api/v1/kb/articles",
        json={
            "title": "Hostile",
            "body": '<script>alert(1)</script>\n\n<img src=x onerror="alert(2)">\n\n'
            "[click](javascript:alert(3))",
        },
        headers=auth(world.bob),
    )
    html = r.json()["html"]
    found = _Elements()
    found.feed(html)
    assert found.tags <= {"p", "a"} and "script" not in found.tags and "img" not in found.tags
    assert not [a for a in found.attributes if a.startswith("on")]
    assert 'href="javascript:' not in html
    assert "&lt;script&gt;" in html  # raw HTML in Markdown is shown as text


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += [k for k, _ in attrs]


def test_the_help_center_renders_for_readers_and_search_engines(
    client: TestClient, world: World
) -> None:
    ids = setup_center(client, world)
    draft = client.post(
        "/api/v1/kb/articles",
        json={"title": "Secret roadmap", "body": "Not yet."},
        headers=auth(world.bob),
    ).json()
    home = client.get("/help/acme/")
    assert home.status_code == 200
    assert "Acme Help" in home.text and "Refunds and returns" in home.text
    assert "Secret roadmap" not in home.text
    assert 'lang="en"' in home.text and "Skip to content" in home.text
    # Its own icon: without one the browser asked for /favicon.ico, a 404 on every visit.
    assert client.get(re.search(r'rel="icon" href="([^"]+)"', home.text)[1]).status_code == 200  # type: ignore[index]
    page = client.get("/help/acme/articles/refunds-and-returns")
    assert page.status_code == 200
    assert '<link rel="canonical" href="http' in page.text
    assert '<meta name="description" content="You can return any item' in page.text
    assert "Was this article helpful?" in page.text
    assert page.headers["content-security-policy"].find("script-src 'none'") >= 0
    assert client.get(f"/help/acme/articles/{draft['slug']}").status_code == 404
    assert client.get("/help/nobody/").status_code == 404
    assert "does not exist" in client.get("/help/nobody/").text
    # A stale or mistyped address under the help center is its own page, with its search:
    # it was problem JSON.
    for stale in ("/help/acme/articles/old-slug/extra", "/help/acme/faq.html", "/help/nobody/x"):
        r = client.get(stale)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), stale
        assert "does not exist" in r.text, stale
    stale_page = client.get("/help/acme/faq.html").text
    assert "This page does not exist" in stale_page and 'action="/help/acme/search"' in stale_page
    assert client.get("/help/acme/feedback").status_code == 404
    col = client.get("/help/acme/collections/orders")
    assert col.status_code == 200 and "Changing your delivery address" in col.text
    sitemap = client.get("/help/acme/sitemap.xml")
    assert sitemap.headers["content-type"].startswith("application/xml")
    assert "/help/acme/articles/refunds-and-returns</loc>" in sitemap.text
    assert "secret-roadmap" not in sitemap.text
    viewed = client.get(
        f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
    ).json()
    assert viewed["views"] == 1


def test_readers_vote_once_each(client: TestClient, world: World) -> None:
    ids = setup_center(client, world)
    url = "/help/acme/articles/refunds-and-returns/feedback"
    first = client.post(url, data={"helpful": "yes"}, follow_redirects=False)
    assert first.status_code == 303 and "thanks=1" in first.headers["location"]
    client.post(url, data={"helpful": "yes"})
    client.post(url, data={"helpful": "no"})  # the same reader changes their mind
    article = client.get(
        f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
    ).json()
    assert (article["helpful"], article["not_helpful"]) == (0, 1)
    assert "Thank you" in client.get("/help/acme/articles/refunds-and-returns?thanks=1").text


def test_search_finds_articles_by_keywords_without_the_extra(
    client: TestClient, world: World, no_ai: None
) -> None:
    setup_center(client, world)
    hits = client.get(
        "/api/v1/kb/search", params={"q": "refund for returned items"}, headers=auth(world.bob)
    ).json()
    assert hits[0]["title"] == "Refunds and returns"
    assert hits[0]["semantic"] is None and hits[0]["confidence"] > 0.5
    assert hits[0]["url"].endswith("/help/acme/articles/refunds-and-returns")
    page = client.get("/help/acme/search", params={"q": "change delivery address"})
    assert "Changing your delivery address" in page.text
    nothing = client.get("/api/v1/kb/search", params={"q": "zebra"}, headers=auth(world.bob))
    assert nothing.json() == []


@pytest.mark.skipif(
    not embeddings.available(), reason="the ai extra is not installed (pip install 'rapport[ai]')"
)
def test_search_finds_an_article_by_a_paraphrase_with_the_extra(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    setup_center(client, world)
    Worker(database, settings).run_until_idle(max_jobs=20)  # the embeddings
    question = "how do I get my money back"  # no word in common with the article
    hits = client.get("/api/v1/kb/search", params={"q": question}, headers=auth(world.bob)).json()
    assert hits[0]["title"] == "Refunds and returns"
    assert hits[0]["semantic"] is not None and hits[0]["semantic"] > 0.3
    page = client.get("/help/acme/search", params={"q": question})
    assert page.text.index("Refunds and returns") < page.text.find("Resetting your password") or (
        "Resetting your password" not in page.text
    )


@sqlite_only
def test_a_public_article_is_rendered_with_no_write_lock_held_and_its_view_counted(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Crawlers fetch every page; each counted its view in a write transaction that also
    # held SQLite's one write lock while the page rendered.
    ids = setup_center(client, world)
    held = record_write_lock(monkeypatch, public, "_page", database)
    for address in ("203.0.113.1", "203.0.113.2"):
        with TestClient(client.app, client=(address, 50000)) as reader:
            assert reader.get("/help/acme/articles/refunds-and-returns").status_code == 200
    assert held == [False, False]
    viewed = client.get(
        f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
    ).json()
    assert viewed["views"] == 2


def test_a_reader_reloading_an_article_counts_one_view_and_writes_nothing_more(
    client: TestClient, world: World, database: Database
) -> None:
    # Each reload was a view more (a loop put any article at the top of "Popular") and a
    # write transaction more.
    ids = setup_center(client, world)
    updates: list[str] = []

    def seen(conn: object, cursor: object, sql: str, *rest: object) -> None:
        if sql.lstrip().upper().startswith("UPDATE"):
            updates.append(sql)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            assert client.get("/help/acme/articles/refunds-and-returns").status_code == 200
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert len(updates) == 1
    viewed = client.get(
        f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
    ).json()
    assert viewed["views"] == 1


@sqlite_only
def test_an_article_is_rendered_before_its_save_takes_the_write_lock(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 200 KB of Markdown take half a second to render: not inside the transaction that
    # saves them, where SQLite's one writer (ingest included) would wait.
    held = record_write_lock(monkeypatch, service, "render", database)
    r = client.post(
        "/api/v1/kb/articles", json={"title": "Lock", "body": "# One"}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    r = client.patch(
        f"/api/v1/kb/articles/{r.json()['id']}", json={"body": "# Two"}, headers=auth(world.bob)
    )
    assert r.status_code == 200 and "Two" in r.json()["html"], r.text
    assert held == [False, False]


def test_a_collection_of_drafts_alone_is_not_public(client: TestClient, world: World) -> None:
    setup_center(client, world)
    col = client.post(
        "/api/v1/kb/collections",
        json={"title": "Spring launch", "description": "Not announced yet"},
        headers=auth(world.bob),
    ).json()
    draft = client.post(
        "/api/v1/kb/articles",
        json={"title": "The new plan", "body": "Coming in May.", "collection_id": col["id"]},
        headers=auth(world.bob),
    )
    assert draft.status_code == 201
    assert "Spring launch" not in client.get("/help/acme/").text
    page = client.get(f"/help/acme/collections/{col['slug']}")
    assert page.status_code == 404 and "Not announced yet" not in page.text
    client.post(f"/api/v1/kb/articles/{draft.json()['id']}/publish", headers=auth(world.bob))
    page = client.get(f"/help/acme/collections/{col['slug']}")
    assert page.status_code == 200 and "The new plan" in page.text


def test_a_reader_given_an_odd_address_gets_a_page_not_problem_json(
    client: TestClient, world: World
) -> None:
    setup_center(client, world)
    for url in (
        "/help/acme/?locale=" + "x" * 40,
        "/help/acme/articles/refunds-and-returns?locale=" + "x" * 40,
        "/help/acme/articles/refunds-and-returns?thanks=yes",
        "/help/acme/collections/orders?locale=" + "x" * 40,
        "/help/acme/search?q=" + "refund " * 100,
    ):
        r = client.get(url, headers={"Accept": "text/html"})
        assert r.status_code == 200, url
        assert r.headers["content-type"].startswith("text/html"), url
    found = client.get("/help/acme/search?q=" + "refund " * 100)
    assert "Refunds and returns" in found.text
    assert "Thank you" in client.get("/help/acme/articles/refunds-and-returns?thanks=yes").text
    assert "Thank you" not in client.get("/help/acme/articles/refunds-and-returns?thanks=0").text


def test_an_article_of_another_workspace_in_the_same_group_is_never_its_translation(
    client: TestClient, world: World, database: Database
) -> None:
    # Translations were looked up by group id alone, in every workspace.
    ids = setup_center(client, world)
    with database.session() as db:
        ours = db.get(Article, ids["Refunds and returns"])
        assert ours is not None
        db.add(
            Article(
                workspace_id=world.globex.workspace.id,
                group_id=ours.group_id,
                locale="fr",
                slug="remboursements-pirates",
                title="Remboursements",
                status=ArticleStatus.published,
            )
        )
    page = client.get("/help/acme/articles/refunds-and-returns").text
    assert "remboursements-pirates" not in page and 'hreflang="fr"' not in page
