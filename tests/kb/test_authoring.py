"""The knowledge base pages of the agent UI: list, editor, scoped and role-aware."""

from fastapi.testclient import TestClient

from tests.factories import World
from tests.kb.conftest import make_article
from tests.web.test_pages import sign_in


def test_the_knowledge_base_page_lists_articles_and_links_the_help_center(
    client: TestClient, world: World
) -> None:
    make_article(client, world.bob, title="Track an order", body="x")
    make_article(client, world.bob, title="Draft about returns", body="y", publish=False)
    make_article(client, world.mallory, title="Globex only", body="z")
    sign_in(client, "bob@acme.test")
    page = client.get("/app/kb")
    assert page.status_code == 200
    assert '<a href="/app/kb">Knowledge base</a>' in page.text
    assert "Track an order" in page.text and "Draft about returns" in page.text
    assert "Globex only" not in page.text
    assert 'href="http://testserver/help/acme/"' in page.text
    assert 'href="/app/kb/articles/new"' in page.text
    drafts = client.get("/app/kb?status=draft").text
    assert "Draft about returns" in drafts and "Track an order" not in drafts


def test_the_editor_shows_markdown_preview_and_publish_state(
    client: TestClient, world: World
) -> None:
    article = make_article(
        client, world.bob, title="Track an order", body="Open **Orders**.", publish=False
    )
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/kb/articles/{article['id']}")
    assert page.status_code == 200
    assert '<textarea id="kb-body" name="body_markdown" rows="18" >Open **Orders**.</textarea>' in (
        page.text
    )
    assert '<div id="kb-preview"><p>Open <strong>Orders</strong>.</p>' in page.text
    assert 'data-kb-action="publish"' in page.text
    assert client.get("/app/kb/articles/new").status_code == 200


def test_another_workspaces_article_is_not_found_in_the_editor(
    client: TestClient, world: World
) -> None:
    article = make_article(client, world.mallory, title="Globex only", body="z")
    sign_in(client, "bob@acme.test")
    assert client.get(f"/app/kb/articles/{article['id']}").status_code == 404


def test_a_viewer_sees_the_editor_read_only(client: TestClient, world: World) -> None:
    article = make_article(client, world.bob, title="Track an order", body="x")
    sign_in(client, "victor@acme.test")
    page = client.get(f"/app/kb/articles/{article['id']}").text
    assert "data-kb-action" not in page and "Save draft" not in page
    assert 'href="/app/kb/articles/new"' not in client.get("/app/kb").text
