"""Knowledge base helpers: articles created through the API, as authors would."""

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.web.conftest import browser, live_server  # noqa: F401  (the browser tests' fixtures)


def make_article(
    client: TestClient,
    token: str,
    *,
    title: str,
    body: str,
    publish: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    r = client.post(
        "/api/v1/kb/articles",
        json={"title": title, "body_markdown": body, **extra},
        headers=auth(token),
    )
    assert r.status_code == 201, r.text
    article: dict[str, Any] = r.json()
    if publish:
        r = client.post(f"/api/v1/kb/articles/{article['id']}/publish", headers=auth(token))
        assert r.status_code == 200, r.text
        article = r.json()
    return article
