"""The public help center: published articles only, readable by people and crawlers."""

import re
from xml.etree import ElementTree

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World
from tests.kb.conftest import make_article


def _center(client: TestClient, token: str) -> str:
    slug: str = client.get("/api/v1/kb/settings", headers=auth(token)).json()["slug"]
    return slug


def _setup(client: TestClient, world: World) -> tuple[str, dict[str, str], dict[str, str]]:
    col = client.post(
        "/api/v1/kb/collections",
        json={"title": "Shipping", "description": "Getting your parcel"},
        headers=auth(world.bob),
    ).json()
    published = make_article(
        client,
        world.bob,
        title="Where is my parcel?",
        body="Track it from **My orders**. Parcels arrive in 3 to 5 days.",
        collection_id=col["id"],
    )
    make_article(
        client,
        world.bob,
        title="Unreleased pricing",
        body="Secret draft.",
        collection_id=col["id"],
        publish=False,
    )
    return _center(client, world.bob), col, published


def test_home_collection_and_article_render_published_articles(
    client: TestClient, world: World
) -> None:
    slug, col, article = _setup(client, world)
    home = client.get(f"/help/{slug}/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in home.text and "<h1>How can we help?</h1>" in home.text
    assert "Shipping" in home.text and "Where is my parcel?" in home.text
    assert "Unreleased pricing" not in home.text

    page = client.get(f"/help/{slug}/collections/{col['slug']}")
    assert page.status_code == 200 and "Getting your parcel" in page.text
    assert "Where is my parcel?" in page.text and "Unreleased pricing" not in page.text

    page = client.get(f"/help/{slug}/articles/{article['slug']}")
    assert page.status_code == 200
    assert (
        f'<link rel="canonical" href="http://testserver/help/{slug}/articles/where-is-my-parcel">'
        in page.text
    )
    assert '<meta name="description" content="Track it from My orders. Parcels arrive' in page.text
    assert "<strong>My orders</strong>" in page.text
    assert "<script" not in page.text  # no script at all on public pages
    assert 'for="fb-comment"' in page.text and "<legend" in page.text
    got = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.bob)).json()
    assert got["view_count"] == 1


def test_drafts_unknown_articles_and_unknown_help_centers_are_readable_404s(
    client: TestClient, world: World
) -> None:
    slug, _, _ = _setup(client, world)
    for url in (
        f"/help/{slug}/articles/unreleased-pricing",
        f"/help/{slug}/articles/nothing-here",
        f"/help/{slug}/collections/nothing-here",
        "/help/no-such-workspace/",
    ):
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"].startswith("text/html")
        assert "We could not find that page" in r.text
    r = client.get(f"/help/{slug}/search", params={"q": "secret draft pricing"})
    assert "Unreleased pricing" not in r.text


def test_unpublishing_takes_an_article_off_the_help_center(
    client: TestClient, world: World
) -> None:
    slug, _, article = _setup(client, world)
    client.post(f"/api/v1/kb/articles/{article['id']}/unpublish", headers=auth(world.bob))
    assert client.get(f"/help/{slug}/articles/{article['slug']}").status_code == 404


def test_sitemap_lists_published_articles_only(client: TestClient, world: World) -> None:
    slug, _, article = _setup(client, world)
    r = client.get(f"/help/{slug}/sitemap.xml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    root = ElementTree.fromstring(r.content)  # noqa: S314 - our own sitemap, not untrusted
    locs = [e.text for e in root.findall("s:url/s:loc", ns)]
    assert locs == [
        f"http://testserver/help/{slug}/",
        f"http://testserver/help/{slug}/collections/shipping",
        f"http://testserver/help/{slug}/articles/{article['slug']}",
    ]


def test_feedback_is_counted_once_per_reader_and_a_changed_mind_moves_it(
    client: TestClient, world: World
) -> None:
    slug, _, article = _setup(client, world)
    url = f"/help/{slug}/articles/{article['slug']}/feedback"
    r = client.post(url, data={"helpful": "yes"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/help/{slug}/articles/{article['slug']}?thanks=1#feedback"
    assert "Thank you for your feedback" in client.get(r.headers["location"]).text
    client.post(url, data={"helpful": "yes"})
    got = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.bob)).json()
    assert (got["helpful_count"], got["not_helpful_count"]) == (1, 0)
    client.post(url, data={"helpful": "no", "comment": "Tracking link is broken"})
    got = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.bob)).json()
    assert (got["helpful_count"], got["not_helpful_count"]) == (0, 1)
    # Another reader (another browser) counts separately.
    client.post(url, data={"helpful": "yes"}, headers={"user-agent": "another browser"})
    got = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.bob)).json()
    assert (got["helpful_count"], got["not_helpful_count"]) == (1, 1)


def test_a_bot_hammering_feedback_is_rate_limited(client: TestClient, world: World) -> None:
    slug, _, article = _setup(client, world)
    url = f"/help/{slug}/articles/{article['slug']}/feedback"
    codes = [
        client.post(
            url, data={"helpful": "yes"}, headers={"user-agent": f"bot {n}"}, follow_redirects=False
        ).status_code
        for n in range(40)
    ]
    assert codes.count(303) == 30 and codes[-1] == 429
    got = client.get(f"/api/v1/kb/articles/{article['id']}", headers=auth(world.bob)).json()
    assert got["helpful_count"] == 30


def test_feedback_on_a_draft_is_refused(client: TestClient, world: World) -> None:
    slug, _, _ = _setup(client, world)
    r = client.post(f"/help/{slug}/articles/unreleased-pricing/feedback", data={"helpful": "yes"})
    assert r.status_code == 404


def test_locale_from_the_query_or_accept_language_with_a_fallback(
    client: TestClient, world: World
) -> None:
    slug, _, article = _setup(client, world)
    make_article(
        client,
        world.bob,
        title="Où est mon colis ?",
        body="Suivez-le depuis **Mes commandes**.",
        locale="fr",
        translation_of=article["id"],
    )
    path = f"/help/{slug}/articles/{article['slug']}"
    fr = client.get(path, params={"locale": "fr"})
    assert '<html lang="fr">' in fr.text and "Où est mon colis ?" in fr.text
    assert f'href="http://testserver/help/{slug}/articles/ou-est-mon-colis?locale=fr"' in fr.text
    assert 'hreflang="en"' in fr.text
    by_header = client.get(path, headers={"accept-language": "fr-CH, fr;q=0.9, en;q=0.5"})
    assert "Où est mon colis ?" in by_header.text
    fallback = client.get(path, headers={"accept-language": "de-DE"})
    assert '<html lang="en">' in fallback.text and "Where is my parcel?" in fallback.text
    home = client.get(f"/help/{slug}/", params={"locale": "fr"})
    assert "Où est mon colis ?" in home.text and "Where is my parcel?" not in home.text
    sitemap = client.get(f"/help/{slug}/sitemap.xml").text
    assert "ou-est-mon-colis?locale=fr" in sitemap


def test_search_page_finds_by_keywords(client: TestClient, world: World) -> None:
    slug, _, article = _setup(client, world)
    r = client.get(f"/help/{slug}/search", params={"q": "parcels arrive days"})
    assert r.status_code == 200
    titles = re.findall(r'<h2><a href="[^"]+">([^<]+)</a></h2>', r.text)
    assert titles == ["Where is my parcel?"]
    assert "Parcels arrive in 3 to 5 days." in r.text
