"""The knowledge base API: authors write, viewers read, other workspaces see nothing."""

from html.parser import HTMLParser

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World
from tests.kb.conftest import make_article


def test_agent_creates_a_collection_and_a_draft_then_publishes_it(
    client: TestClient, world: World
) -> None:
    r = client.post(
        "/api/v1/kb/collections",
        json={"title": "Orders & Shipping", "description": "Where things are"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    collection = r.json()
    assert collection["slug"] == "orders-shipping" and collection["locale"] == "en"

    r = client.post(
        "/api/v1/kb/articles",
        json={
            "title": "Track your order",
            "body_markdown": "Open **My orders** and pick the order.",
            "collection_id": collection["id"],
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    draft = r.json()
    assert draft["status"] == "draft" and draft["public_url"] == ""
    assert draft["slug"] == "track-your-order"
    assert "<strong>My orders</strong>" in draft["body_html"]

    r = client.post(f"/api/v1/kb/articles/{draft['id']}/publish", headers=auth(world.bob))
    published = r.json()
    assert published["status"] == "published" and published["published_at"]
    center = client.get("/api/v1/kb/settings", headers=auth(world.bob)).json()
    assert (
        published["public_url"]
        == f"http://testserver/help/{center['slug']}/articles/track-your-order"
    )

    r = client.patch(
        f"/api/v1/kb/articles/{draft['id']}",
        json={"body_markdown": "Open *Orders*."},
        headers=auth(world.bob),
    )
    assert r.json()["body_html"] == "<p>Open <em>Orders</em>.</p>\n"
    r = client.post(f"/api/v1/kb/articles/{draft['id']}/unpublish", headers=auth(world.bob))
    assert r.json()["status"] == "draft"


def test_lists_page_with_a_cursor_and_filter_by_status(client: TestClient, world: World) -> None:
    ids = set()
    for n in range(5):
        a = make_article(client, world.alice, title=f"Article {n}", body="x", publish=n % 2 == 0)
        ids.add(a["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/kb/articles", params=params, headers=auth(world.victor)).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and set(seen) == ids
    drafts = client.get(
        "/api/v1/kb/articles", params={"status": "draft"}, headers=auth(world.victor)
    ).json()
    assert len(drafts["items"]) == 2


def test_viewer_reads_but_cannot_write(client: TestClient, world: World) -> None:
    article = make_article(client, world.bob, title="Refunds", body="Ask us.")
    r = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.victor))
    assert r.status_code == 200
    for method, path, body in [
        ("POST", "/api/v1/kb/articles", {"title": "x"}),
        ("POST", "/api/v1/kb/collections", {"title": "x"}),
        ("PATCH", f"/api/v1/kb/articles/{article['id']}", {"title": "y"}),
        ("POST", f"/api/v1/kb/articles/{article['id']}/unpublish", None),
    ]:
        r = client.request(method, path, json=body, headers=auth(world.victor))
        assert r.status_code == 403, (method, path)
        assert r.headers["content-type"] == "application/problem+json"


def test_only_admins_delete_and_change_the_help_center(client: TestClient, world: World) -> None:
    article = make_article(client, world.bob, title="Refunds", body="Ask us.")
    r = client.delete(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.bob))
    assert r.status_code == 403
    r = client.patch("/api/v1/kb/settings", json={"slug": "acme-help"}, headers=auth(world.bob))
    assert r.status_code == 403
    r = client.patch("/api/v1/kb/settings", json={"slug": "acme-help"}, headers=auth(world.alice))
    assert r.json()["url"] == "http://testserver/help/acme-help/"
    r = client.delete(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.alice))
    assert r.status_code == 204
    r = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.alice))
    assert r.status_code == 404


def test_a_help_center_slug_taken_by_another_workspace_is_refused(
    client: TestClient, world: World
) -> None:
    client.patch("/api/v1/kb/settings", json={"slug": "shared"}, headers=auth(world.alice))
    r = client.patch("/api/v1/kb/settings", json={"slug": "shared"}, headers=auth(world.mallory))
    assert r.status_code == 409
    assert r.json()["type"].endswith("/conflict")


def test_a_translation_joins_its_articles_group(client: TestClient, world: World) -> None:
    en = make_article(client, world.bob, title="Returns", body="Send it back.")
    fr = make_article(
        client,
        world.bob,
        title="Retours",
        body="Renvoyez-le.",
        locale="fr",
        translation_of=en["id"],
    )
    assert fr["group_id"] == en["id"] and fr["locale"] == "fr"
    assert fr["public_url"].endswith("/articles/retours?locale=fr")
    r = client.get(f"/api/v1/kb/articles/{en['id']}/translations", headers=auth(world.victor))
    assert [a["locale"] for a in r.json()] == ["en", "fr"]
    r = client.post(
        "/api/v1/kb/articles",
        json={"title": "Again", "locale": "fr", "translation_of": en["id"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 409


def test_same_title_gets_a_distinct_slug_but_a_given_duplicate_is_refused(
    client: TestClient, world: World
) -> None:
    a = make_article(client, world.bob, title="Password reset", body="a")
    b = make_article(client, world.bob, title="Password reset", body="b")
    assert (a["slug"], b["slug"]) == ("password-reset", "password-reset-2")
    r = client.post(
        "/api/v1/kb/articles",
        json={"title": "x", "slug": "password-reset"},
        headers=auth(world.bob),
    )
    assert r.status_code == 409


def test_markdown_with_script_and_event_handlers_is_sanitized(
    client: TestClient, world: World
) -> None:
    body = (
        "Hello <script>alert(1)</script>\n\n"
        '<img src="x" onerror="alert(1)">\n\n'
        "[click](javascript:alert(1)) ![pic](https://example.com/a.png)"
    )
    article = make_article(client, world.bob, title="Hostile", body=body)
    html = article["body_html"]
    elements = _elements(html)
    assert "script" not in {tag for tag, _ in elements}
    assert not [a for _, attrs in elements for a, _ in attrs if a.startswith("on")]
    assert not [v for _, attrs in elements for _, v in attrs if "javascript" in (v or "")]
    assert ("img", [("src", "https://example.com/a.png"), ("alt", "pic")]) in elements
    # What was markup in the source is shown as text, harmless.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    preview = client.post(
        "/api/v1/kb/preview", json={"body_markdown": body}, headers=auth(world.bob)
    ).json()
    assert preview["body_html"] == html


def test_collection_delete_keeps_its_articles(client: TestClient, world: World) -> None:
    col = client.post(
        "/api/v1/kb/collections", json={"title": "Billing"}, headers=auth(world.alice)
    ).json()
    article = make_article(client, world.bob, title="Invoices", body="x", collection_id=col["id"])
    assert (
        client.delete(f"/api/v1/kb/collections/{col['id']}", headers=auth(world.alice)).status_code
        == 204
    )
    r = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.alice))
    assert r.json()["collection_id"] is None


def test_other_workspace_cannot_use_a_collection_it_does_not_own(
    client: TestClient, world: World
) -> None:
    col = client.post(
        "/api/v1/kb/collections", json={"title": "Billing"}, headers=auth(world.alice)
    ).json()
    r = client.post(
        "/api/v1/kb/articles",
        json={"title": "Sneaky", "collection_id": col["id"]},
        headers=auth(world.mallory),
    )
    assert r.status_code == 404
    make_article(client, world.alice, title="Acme secret plan", body="x")
    assert client.get("/api/v1/kb/articles", headers=auth(world.mallory)).json()["items"] == []
    assert client.get("/api/v1/kb/collections", headers=auth(world.mallory)).json() == []
    r = client.get("/api/v1/kb/search", params={"q": "secret plan"}, headers=auth(world.mallory))
    assert r.json() == []


def _elements(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every element of ``html`` as a browser would parse it, with its attributes."""
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collect().feed(html)
    return found
