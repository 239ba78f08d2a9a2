"""The public help center as a deployment serves it: its limits shared by every process,
and a sitemap that search engines take however many articles there are."""

import re
import subprocess
import sys
import uuid
from xml.etree import ElementTree

import pytest
from fastapi.testclient import TestClient

from rapport import bus
from rapport.app import create_app
from rapport.config import Settings
from rapport.db import Database
from rapport.kb import public
from tests.conftest import REDIS_URL, auth
from tests.factories import Window, World
from tests.kb.test_kb import setup_center

ARTICLE = "/help/acme/articles/refunds-and-returns"
NS = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}

# Another `rapport serve` process on the same database and Redis: one reader (``address``)
# reads the article once and votes as often as the budget allows.
_OTHER_PROCESS = """
import sys
from fastapi.testclient import TestClient
from rapport import bus
from rapport.app import create_app
from rapport.config import Settings

url, redis_url, secret, address, votes = sys.argv[1:]
settings = Settings(
    database_url=url, redis_url=redis_url, secret_key=secret, worker_in_process=False,
    public_url="http://testserver", log_json=False,
)
with TestClient(create_app(settings), client=(address, 50000)) as reader:
    assert reader.get("/help/acme/articles/refunds-and-returns").status_code == 200
    for _ in range(int(votes)):
        r = reader.post(
            "/help/acme/articles/refunds-and-returns/feedback",
            data={"helpful": "yes"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
bus.set_bus(bus.LocalBus())
"""


@pytest.mark.redis
def test_with_redis_two_processes_share_one_readers_view_and_vote_budget(
    settings: Settings, database: Database, world: World
) -> None:
    # Each process counted in its own memory: behind a balancer a reader's reload counted a
    # view at every process, and an address had the vote budget once per process.
    if not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    app = create_app(settings.model_copy(update={"redis_url": REDIS_URL}), database=database)
    address = f"reader-{uuid.uuid4().hex}"  # Redis outlives the test: a budget of its own
    try:
        with TestClient(app) as client:
            ids = setup_center(client, world)
            votes = app.state.help_limits.votes.limit
            other = subprocess.run(
                [sys.executable, "-c", _OTHER_PROCESS]
                + [settings.database_url, REDIS_URL, settings.secret_key.get_secret_value()]
                + [address, str(votes)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert other.returncode == 0, other.stderr
            # A client of another address on the same running app: not a second lifespan
            # (``with``), which started a second Redis bus whose listener was left pending
            # when it ended, an unraisable error in whichever test collected it.
            reader = TestClient(app, client=(address, 50000))
            assert reader.get(ARTICLE).status_code == 200
            # The reader changes their mind past the budget the other process spent.
            reader.post(f"{ARTICLE}/feedback", data={"helpful": "no"})
            reader.close()
            article = client.get(
                f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
            ).json()
    finally:
        bus.set_bus(bus.LocalBus())
    assert article["views"] == 1
    assert (article["helpful"], article["not_helpful"]) == (1, 0)


def locs(xml: str, tag: str) -> list[str]:
    root = ElementTree.fromstring(xml)  # noqa: S314 - our own document
    return [e.text or "" for e in root.findall(f"s:{tag}/s:loc", NS)]


def test_a_sitemap_past_the_protocols_limit_is_an_index_of_pages_within_it(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One file held every address however many: past 50,000 search engines refuse it.
    setup_center(client, world)
    one = client.get("/help/acme/sitemap.xml")
    assert one.headers["content-type"].startswith("application/xml")
    everything = locs(one.text, "url")
    assert len(everything) == 4 and "<urlset" in one.text  # the home and three articles
    monkeypatch.setattr(public, "SITEMAP_URLS", 3)  # 50,000 in production
    index = client.get("/help/acme/sitemap.xml")
    assert index.headers["content-type"].startswith("application/xml")
    assert "<sitemapindex" in index.text and "<urlset" not in index.text
    pages = locs(index.text, "sitemap")
    assert pages == [
        "http://testserver/help/acme/sitemap-1.xml",
        "http://testserver/help/acme/sitemap-2.xml",
    ]
    listed = []
    for page in pages:
        r = client.get(re.sub(r"^http://testserver", "", page))
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
        assert len(locs(r.text, "url")) <= 3
        listed += locs(r.text, "url")
    assert sorted(listed) == sorted(everything)  # each address once, none left out
    for beyond in ("/help/acme/sitemap-3.xml", "/help/acme/sitemap-0.xml"):
        assert client.get(beyond).status_code == 404, beyond
    assert client.get("/help/nobody/sitemap-1.xml").status_code == 404


def test_a_reader_searching_without_pause_is_asked_to_wait_and_others_are_not(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Public search ranks every published article for anyone; past the budget an address
    gets the page saying to wait (429, Retry-After), with nothing ranked, while another
    reader's search still answers."""
    setup_center(client, world)
    monkeypatch.setattr(public, "SEARCHES_A_MINUTE", 3)
    client.app.state.help_limits = public.HelpCenterLimits()  # type: ignore[attr-defined]
    ranked: list[str] = []
    real = public.search.search_articles
    monkeypatch.setattr(
        public.search, "search_articles", lambda *a, **k: ranked.append(a[2]) or real(*a, **k)
    )
    window = Window(60)
    for _ in range(3):
        page = client.get("/help/acme/search", params={"q": "refund"})
        assert page.status_code == 200 and "Refunds and returns" in page.text
    busy = client.get("/help/acme/search", params={"q": "refund"})
    wait = busy.headers["retry-after"]
    assert busy.status_code == 429 and window.waits(wait)
    assert "Too many searches" in busy.text and "Refunds and returns" not in busy.text
    assert f"Please wait {wait} seconds and search again" in busy.text  # what Retry-After says
    assert ranked == ["refund"] * 3  # the fourth was not ranked
    # The empty search form costs nothing and is never refused.
    assert client.get("/help/acme/search").status_code == 200
    with TestClient(client.app, client=("203.0.113.9", 50000)) as other:
        page = other.get("/help/acme/search", params={"q": "refund"})
        assert page.status_code == 200 and "Refunds and returns" in page.text


def test_a_readers_votes_on_one_help_center_leave_another_workspaces_budget_whole(
    client: TestClient, world: World
) -> None:
    """The vote and search budgets counted an address across the installation: readers
    behind one office address voting on Globex's help center were refused on Acme's."""
    ids = setup_center(client, world)
    r = client.put(
        "/api/v1/kb/help-center",
        json={"slug": "globex", "title": "Globex Help"},
        headers=auth(world.mallory),
    )
    assert r.status_code == 200, r.text
    theirs = client.post(
        "/api/v1/kb/articles",
        json={"title": "Opening hours", "body": "Nine to five."},
        headers=auth(world.mallory),
    ).json()
    client.post(f"/api/v1/kb/articles/{theirs['id']}/publish", headers=auth(world.mallory))
    limits = public.HelpCenterLimits()
    limits.votes.limit = limits.searches.limit = 2
    client.app.state.help_limits = limits  # type: ignore[attr-defined]
    for _ in range(2):
        client.post("/help/globex/articles/opening-hours/feedback", data={"helpful": "no"})
        assert client.get("/help/globex/search", params={"q": "hours"}).status_code == 200
    assert client.get("/help/globex/search", params={"q": "hours"}).status_code == 429
    client.post(f"{ARTICLE}/feedback", data={"helpful": "yes"})
    article = client.get(
        f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
    ).json()
    assert (article["helpful"], article["not_helpful"]) == (1, 0)
    assert client.get("/help/acme/search", params={"q": "refund"}).status_code == 200
