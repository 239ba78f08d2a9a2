"""The agent pages render for a signed-in member, scoped to their workspace, and safely."""

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session

from rapport import search
from rapport.config import Settings
from rapport.db import Base, Database
from rapport.jobs.worker import Worker
from rapport.search import conversation_ids, customer_ids
from tests.conftest import auth, postgresql_only
from tests.customers.test_privacy import merged_twin
from tests.factories import PASSWORD, World


def sign_in(client: TestClient, email: str) -> None:
    r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text


def test_pages_send_a_signed_out_visitor_to_the_login_page(
    client: TestClient, world: World
) -> None:
    conv, customer = world.acme.opened.conversation.id, world.acme.opened.customer.id
    for path in (
        "/",
        "/app/inbox",
        f"/app/conversations/{conv}",
        "/app/customers",
        "/app/customers/duplicates",
        f"/app/customers/{customer}",
    ):
        r = client.get(path, follow_redirects=False)
        # The sign-in page comes back here (it went to the inbox, whatever the link).
        want = "/login" if path == "/" else f"/login?next={quote(path, safe='')}"
        assert r.status_code == 303 and r.headers["location"] == want
    assert "Sign in to Rapport" in client.get("/login").text


def test_the_inbox_lists_the_workspaces_conversations(client: TestClient, world: World) -> None:
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox?view=all")
    assert page.status_code == 200
    assert world.acme.opened.conversation.id in page.text
    assert world.globex.opened.conversation.id not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_an_inbox_list_filtered_by_a_team_deleted_since_says_so(
    client: TestClient, world: World
) -> None:
    # A saved view naming one opened an empty list, as if there were simply nothing.
    team = client.post("/api/v1/teams", json={"name": "Night"}, headers=auth(world.alice)).json()
    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all", "team_id": team["id"]}).text
    assert "No open conversations here." in page and "does not exist" not in page
    assert (
        client.delete(f"/api/v1/teams/{team['id']}", headers=auth(world.alice)).status_code == 204
    )
    said = "The {} this list is filtered by does not exist (any more): nothing is in it."
    page = client.get("/app/inbox", params={"view": "all", "team_id": team["id"]}).text
    assert said.format("team") in page
    # Nor is another workspace's inbox one of this one's.
    other = world.globex.inbox.id  # type: ignore[union-attr]
    page = client.get("/app/inbox", params={"view": "all", "inbox_id": other}).text
    assert said.format("inbox") in page


def test_a_conversation_of_another_workspace_is_not_found(client: TestClient, world: World) -> None:
    sign_in(client, "bob@acme.test")
    r = client.get(f"/app/conversations/{world.globex.opened.conversation.id}")
    assert r.status_code == 404


def test_the_customers_page_lists_and_finds_the_workspaces_customers_only(
    client: TestClient, world: World
) -> None:
    # Agents had no list of customers, nor a page for one: only the panel of a conversation.
    for n in range(3):
        client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={
                "external_id": f"c{n}",
                "text": "hello",
                "from": {"name": f"Person {n} <b>x</b>", "email": f"p{n}@example.com"},
            },
            headers=auth(world.bob),
        )
    sign_in(client, "bob@acme.test")
    page = client.get("/app/customers").text
    assert all(f"Person {n} &lt;b&gt;x&lt;/b&gt;" in page for n in range(3))
    row = page[page.index("Person 0 &lt;b&gt;") :]
    assert '<span class="badge ch-email">email</span>' in row[: row.index("</tr>")]
    assert world.globex.opened.customer.id not in page
    found = client.get("/app/customers", params={"q": "p1@example.com"}).text
    assert "Person 1" in found and "Person 0" not in found and "Person 2" not in found
    assert "No customer matches." in client.get("/app/customers", params={"q": "zzzz"}).text


def test_a_customers_page_shows_every_conversation_of_theirs_on_any_channel(
    client: TestClient, world: World
) -> None:
    first = world.acme.opened
    other = client.post(
        "/api/v1/inboxes", json={"name": "Second", "channel": "api"}, headers=auth(world.alice)
    ).json()
    r = client.post(
        f"/api/v1/inboxes/{other['id']}/messages",
        json={
            "external_id": "elsewhere",
            "text": "From the other app",
            "from": {"email": first.customer.email},
        },  # type: ignore[union-attr]
        headers=auth(world.bob),
    )
    assert r.json()["customer_id"] == first.customer.id
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/customers/{first.customer.id}").text
    # Each row says which inbox it came through (each said the customer's own name).
    for conv, inbox in (
        (first.conversation.id, "Acme API"),
        (r.json()["conversation_id"], "Second"),
    ):
        row = page[page.index(f'<li data-id="{conv}">') :].split("</li>", 1)[0]
        assert f'<span class="who">{inbox}</span>' in row
    assert "From the other app" in page and first.customer.email in page
    assert 'data-customer="' + first.customer.id in page  # the panel
    # Another workspace's customer is not found; a merged one's page is the survivor's.
    theirs = world.globex.opened.customer.id
    assert client.get(f"/app/customers/{theirs}").status_code == 404
    merged = merged_twin(client, world, first.customer.id)
    r = client.get(f"/app/customers/{merged['id']}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/app/customers/{first.customer.id}"


def test_a_page_that_cannot_be_shown_says_why_to_a_browser_as_a_page(
    client: TestClient, world: World
) -> None:
    # A stale link or a filter typed into the address showed a browser raw problem JSON.
    sign_in(client, "bob@acme.test")
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    theirs = world.globex.opened.conversation.id
    r = client.get(f"/app/conversations/{theirs}", headers=browser)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "<h1>Not Found</h1>" in r.text and "conversation not found" in r.text
    assert '<a href="/app/inbox">' in r.text
    r = client.get("/app/customers", params={"q": "<b>" * 200}, headers=browser)
    assert r.status_code == 422 and "q: String should have at most 320 characters" in r.text
    assert "<b>" not in r.text
    r = client.get("/app/inbox", params={"cursor": "nonsense"}, headers=browser)
    assert r.status_code == 422 and "the cursor is not one this API returned" in r.text
    # Scripts and the pages' own calls still get the problem document.
    r = client.get(f"/app/conversations/{theirs}")
    assert r.headers["content-type"] == "application/problem+json"
    r = client.get(f"/api/v1/conversations/{theirs}", headers=browser)
    assert r.headers["content-type"] == "application/problem+json"
    # An address with no page at all (typed, or left from an old version) is a page too;
    # outside the app it sends nobody to the inbox's sign-in.
    for path, said, back in (
        ("/app/reports", "There is no page at this address.", True),
        ("/nope", "There is no page at this address.", False),
        ("/files/x/y.pdf", "file not found", False),  # a customer's expired link
    ):
        r = client.get(path, headers=browser)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
        assert "<h1>Not Found</h1>" in r.text and said in r.text, (path, r.text)
        assert ('<a href="/app/inbox">' in r.text) is back, path
    assert client.get("/webhooks/nope", headers=browser).headers["content-type"] == (
        "application/problem+json"
    )
    # The app's own root goes to the inbox.
    r = client.get("/app", headers=browser, follow_redirects=True)
    assert r.status_code == 200 and r.url.path == "/app/inbox"


def test_one_messages_body_is_drawn_alone_as_its_page_draws_it_in_its_workspace_only(
    client: TestClient, world: World
) -> None:
    # A page took the whole conversation's page to draw one email arriving live.
    def receive(external_id: str, sender: str, html: str) -> dict[str, Any]:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": external_id, "text": "t", "html": html, "from": {"email": sender}},
            headers=auth(world.bob),
        )
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    mail = receive(
        "html-1", "trent@example.com", '<p>It is <b>late</b></p><img src="https://t.example/p.gif">'
    )
    conv, mid = mail["conversation_id"], mail["id"]
    path = f"/app/conversations/{conv}/messages/{mid}/body"
    # Signed out, what the page's script asked answers as the API does: a redirect led its
    # fetch to the whole sign-in page, read as a body that was not there.
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("unauthorized") and "late" not in r.text
    sign_in(client, "bob@acme.test")
    r = client.get(path)
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    page = client.get(f"/app/conversations/{conv}").text
    # The very body the page draws: sanitized, its remote image held, nothing else.
    assert r.text.strip() in page and r.text.startswith('<p class="held-images">')
    assert "<b>late</b>" in r.text and 'data-remote-src="https://t.example/p.gif"' in r.text
    assert "<li" not in r.text and "<html" not in r.text
    # A message of another conversation, of this workspace or another, is not found here.
    other = receive("html-2", "ursula@example.com", "<p>Other</p>")
    assert other["conversation_id"] != conv
    theirs = world.globex.opened
    for c, m in (
        (conv, other["id"]),
        (other["conversation_id"], mid),
        (conv, theirs.message.id),
        (theirs.conversation.id, theirs.message.id),
        (theirs.conversation.id, mid),
    ):
        r = client.get(f"/app/conversations/{c}/messages/{m}/body")
        assert r.status_code == 404, (c, m)
        assert "Other" not in r.text and "Hello Globex" not in r.text


def test_the_assign_lists_show_each_agents_presence(client: TestClient, world: World) -> None:
    # Names alone: an agent picking a colleague could not tell who was there to take it.
    r = client.put("/api/v1/presence", json={"availability": "busy"}, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    sign_in(client, "alice@acme.test")
    for path in ("/app/inbox", f"/app/conversations/{world.acme.opened.conversation.id}"):
        page = client.get(path).text
        assert ">Bob · busy</option>" in page, path
        assert ">Alice · offline</option>" in page, path  # no heartbeat of hers yet


def test_a_hostile_message_shows_as_text(client: TestClient, world: World) -> None:
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "xss",
            "text": hostile,
            "html": hostile,
            "from": {"email": "evil@example.com"},
        },
        headers=auth(world.bob),
    )
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/conversations/{r.json()['conversation_id']}").text
    scan = _Scan()
    scan.feed(page)
    # Our own module scripts are the only scripts; no element carries an event handler.
    assert sorted(s or "" for s in scan.scripts) == ["/static/app.js", "/static/panel.js"]
    assert scan.handlers == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the text, shown as text


def test_search_finds_a_conversation_by_the_customers_phone(
    client: TestClient, world: World
) -> None:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "ph", "text": "call me", "from": {"phone": "+14155550142"}},
        headers=auth(world.bob),
    )
    sign_in(client, "bob@acme.test")
    page = client.get("/app/search", params={"q": "(415) 555-0142"}).text
    assert r.json()["conversation_id"] in page


def test_a_conversation_found_shows_whose_it_is_and_what_was_said(
    client: TestClient, world: World
) -> None:
    # Search listed a conversation without a subject as "Conversation · open · date".
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "lost",
            "text": "My parcel never arrived",
            "from": {"name": "Ines Duarte", "email": "ines@example.com"},
        },
        headers=auth(world.bob),
    )
    # A later message that does not have the word: the row shows the one that matched.
    client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "later", "text": "Any news?", "from": {"email": "ines@example.com"}},
        headers=auth(world.bob),
    )
    sign_in(client, "bob@acme.test")
    page = client.get("/app/search", params={"q": "parcel"}).text
    row = page[page.index(f'<li data-id="{r.json()["conversation_id"]}"') :]
    row = row[: row.index("</li>")]
    # Naming the message that matched: the page drops the row once that message is gone.
    match = client.get("/api/v1/search", params={"q": "parcel"}, headers=auth(world.bob)).json()
    assert f'data-match="{match["conversations"][0]["match"]["message_id"]}">' in row
    assert "Ines Duarte" in row and "My <mark>parcel</mark> never arrived" in row and ">api<" in row
    assert "Any news?" not in row
    # Found by the customer's name, not by a message: the latest message, as in the inbox.
    page = client.get("/app/search", params={"q": "Duarte"}).text
    row = page[page.index(f'<li data-id="{r.json()["conversation_id"]}">') :]
    assert "Any news?" in row[: row.index("</li>")]


def test_search_leaves_out_a_conversation_merged_into_another(
    client: TestClient, world: World
) -> None:
    # Found by its customer, it was listed beside the one it was merged into: empty, and
    # its link opened that one.
    def write(ext: str, inbox: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{inbox}/messages",
            json={"external_id": ext, "text": "hello", "from": {"email": "twice@example.com"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    chat = client.post(
        "/api/v1/inboxes", json={"name": "Chat", "channel": "api"}, headers=auth(world.alice)
    ).json()["id"]
    kept, gone = write("one", world.acme.inbox.id), write("two", chat)  # type: ignore[union-attr]

    def found() -> list[str]:
        hits = client.get("/api/v1/search", params={"q": "twice"}, headers=auth(world.bob))
        return [c["id"] for c in hits.json()["conversations"]]

    assert sorted(found()) == sorted([kept, gone])
    r = client.post(
        f"/api/v1/conversations/{kept}/merge", json={"merged_id": gone}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    assert found() == [kept]
    sign_in(client, "bob@acme.test")
    page = client.get("/app/search", params={"q": "twice"}).text
    assert f'data-id="{kept}"' in page and f'data-id="{gone}"' not in page


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.handlers: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))
        self.handlers += [(tag, k) for k, _ in attrs if k.startswith("on")]


def test_full_text_search_finds_words_of_a_message(client: TestClient, world: World) -> None:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "fts",
            "text": "The espresso machine leaks water",
            "from": {"email": "fts@example.com"},
        },
        headers=auth(world.bob),
    )
    conv = r.json()["conversation_id"]
    for q in ("espresso", "leak machine", "ESPRESSO"):
        hits = client.get("/api/v1/search", params={"q": q}, headers=auth(world.bob)).json()
        assert conv in [c["id"] for c in hits["conversations"]], q
    assert client.get(
        "/api/v1/search", params={"q": "espresso"}, headers=auth(world.mallory)
    ).json() == {
        "customers": [],
        "conversations": [],
    }
    odd = client.get("/api/v1/search", params={"q": 'espresso" OR *'}, headers=auth(world.bob))
    assert odd.status_code == 200


def test_search_results_show_the_words_that_matched_in_context(
    client: TestClient, world: World
) -> None:
    # Results showed the first 140 characters of the matching message, nothing marked: a
    # match further in was not on screen at all.
    said = (
        "Hi there. " * 20
        + "My <b>espresso</b> machine leaks water since Monday & the café said to write. "
        + "Thanks! " * 10
    )
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "snippet", "text": said, "from": {"email": "snip@example.com"}},
        headers=auth(world.bob),
    )
    conv = r.json()["conversation_id"]
    (hit,) = client.get(
        "/api/v1/search", params={"q": "LEAK cafe"}, headers=auth(world.bob)
    ).json()["conversations"]
    snippet = hit["match"]["snippet"]
    assert hit["id"] == conv and snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= 142 and "…there. My <b>espresso</b>" in snippet
    assert [snippet[a:b] for a, b in hit["match"]["highlights"]] == ["leaks", "café"]
    page = client.get("/app/search", params={"q": "LEAK cafe"}, headers=auth(world.bob))
    assert page.status_code == 200
    row = page.text.split(f'data-id="{conv}"')[1].split("</li>")[0]
    assert "My &lt;b&gt;espresso&lt;/b&gt; machine <mark>leaks</mark> water" in row
    assert "the <mark>café</mark> said" in row
    # Found by the customer alone, a conversation has no match and shows its latest line.
    by_customer = client.get(
        "/api/v1/search", params={"q": "snip@example.com"}, headers=auth(world.bob)
    ).json()["conversations"]
    assert [c["match"] for c in by_customer if c["id"] == conv] == [None]
    # The customers found are listed as the Customers page lists them, channels and all.
    page = client.get("/app/search", params={"q": "snip@example.com"}, headers=auth(world.bob))
    hits = page.text.split('id="customer-hits"')[1].split("</table>")[0]
    assert f'href="/app/customers/{r.json()["customer_id"]}"' in hits
    assert "snip@example.com" in hits and '<span class="badge ch-email">email</span>' in hits


# PostgreSQL's parser keeps each of these whole (or "A-1234" as "a" and "-1234"), where a
# search is split into words: both databases must find them by the words as SQLite does.
@pytest.mark.parametrize(
    ("said", "q"),
    [
        ("please write to kim@example.com today", "kim@example.com"),
        ("please write to kim@example.com today", "example"),
        ("the total was 19.99 dollars", "19.99"),
        ("see https://shop.example/orders/123 for it", "orders"),
        ("see https://shop.example/orders/123 for it", "shop.example/orders"),
        ("upgrade to v1.2.3 now", "v1.2.3"),
        ("version 1.2.3 is out", "1.2.3"),
        ("server 10.0.0.1 is down", "10.0.0.1"),
        ("attached invoice.pdf here", "invoice"),
        ("order number A-1234 is late", "A-1234"),
        ("order number A-1234 is late", "1234"),
        ("my order ab_cd is late", "ab_cd"),
        ("Grüße aus Köln", "köln"),
        # Accents count for nothing, as SQLite's FTS5 (remove_diacritics) has it:
        # PostgreSQL found "Köln" only as typed.
        ("Grüße aus Köln", "KOLN"),
        ("thanks, Jose", "josé"),
        ("the crème brûlée was cold", "creme brulee"),
        ("Señor Núñez called", "nunez senor"),
        ("a co-op in Ærø", "ærø"),
    ],
)
def test_full_text_search_finds_the_words_of_addresses_and_numbers(
    client: TestClient, world: World, said: str, q: str
) -> None:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "words", "text": said, "from": {"email": "zed@other.example"}},
        headers=auth(world.bob),
    )
    hits = client.get("/api/v1/search", params={"q": q}, headers=auth(world.bob)).json()
    assert r.json()["conversation_id"] in [c["id"] for c in hits["conversations"]]
    # What matched is marked in the snippet, word by word, as the index matched it.
    (match,) = [c["match"] for c in hits["conversations"] if c["id"] == r.json()["conversation_id"]]
    assert match["message_id"] == r.json()["id"]
    assert match["snippet"] == said and match["highlights"]
    marked = [said[a:b] for a, b in match["highlights"]]
    wanted = [search._folded(w) for w in re.findall(r"[^\W_]+", q)]
    for word in marked:
        assert any(search._folded(word).startswith(w) for w in wanted), (word, q)


@pytest.mark.parametrize("q", ["ana-2024", "ana", "2024", "shop.example", "Ana Lima ana"])
def test_customer_search_finds_a_customer_by_part_of_the_email(
    client: TestClient, world: World, q: str
) -> None:
    sender = {"email": "ana-2024@shop.example", "name": "Ana Lima"}
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "ana", "text": "hello", "from": sender},
        headers=auth(world.bob),
    )
    found = client.get("/api/v1/customers", params={"q": q}, headers=auth(world.bob)).json()
    assert r.json()["customer_id"] in [c["id"] for c in found["items"]]


@pytest.mark.parametrize(
    ("name", "q"), [("José Núñez", "jose nunez"), ("Jose Nunez", "Núñez"), ("Zoë", "ZOE")]
)
def test_customer_search_ignores_accents_on_either_side(
    client: TestClient, world: World, name: str, q: str
) -> None:
    # SQLite found "José" by "jose" and PostgreSQL did not.
    r = client.post("/api/v1/customers", json={"name": name}, headers=auth(world.bob))
    found = client.get("/api/v1/customers", params={"q": q}, headers=auth(world.bob)).json()
    assert [c["id"] for c in found["items"]] == [r.json()["id"]]


@postgresql_only
def test_search_queries_use_the_full_text_indexes(world: World, database: Database) -> None:
    # The queries must use the very expressions indexed, or every search reads every row.
    ran: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        ran.append((args[2], args[3]))

    plans = {}
    with database.engine.connect() as conn:
        for table, words in (("customers", "name"), ("messages", "text")):
            _fill(conn, table, words, 3000, world.acme.workspace.id)
        conn.execute(text("ANALYZE customers, messages"))
        with Session(conn) as db:
            for index, search in (
                ("ix_messages_fts", conversation_ids),
                ("ix_customers_fts", customer_ids),
            ):
                for q in ("kim@example", "Kím Núñez"):  # accents are ignored
                    event.listen(database.engine, "before_cursor_execute", record)
                    try:
                        search(db, workspace_id=world.acme.workspace.id, q=q)
                    finally:
                        event.remove(database.engine, "before_cursor_execute", record)
                    plans[index, q] = "\n".join(
                        "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", params))
                        for sql, params in ran
                    )
                    ran.clear()
        conn.rollback()
    for (index, _), plan in plans.items():
        assert f"Bitmap Index Scan on {index}" in plan, plan


def _fill(conn: Connection, table: str, words: str, n: int, workspace_id: str) -> None:
    """``n`` copies of a row of ``table`` of the workspace, other words in ``words``. (Of
    whichever row came first, the copies went to another workspace now and then, and the
    searched one, left with a few rows, was rightly read without the full-text index.)"""
    cols = [c.name for c in Base.metadata.tables[table].columns]
    made = {"id": "md5(random()::text || g)", words: "'filler number ' || g", "external_id": "NULL"}
    conn.execute(
        text(
            f"INSERT INTO {table} ({', '.join(cols)}) "  # noqa: S608 - constant SQL
            f"SELECT {', '.join(made.get(c, c) for c in cols)} "
            f"FROM (SELECT * FROM {table} WHERE workspace_id = :ws LIMIT 1) one, "
            f"generate_series(1, {n}) g"
        ),
        {"ws": workspace_id},
    )


def test_the_settings_page_shows_the_widget_snippet_to_admins_only(
    client: TestClient, world: World
) -> None:
    chat = client.post(
        "/api/v1/inboxes",
        json={"name": "Site chat", "channel": "webchat"},
        headers=auth(world.alice),
    ).json()
    sign_in(client, "bob@acme.test")
    assert client.get("/app/settings").status_code == 403
    client.cookies.clear()
    sign_in(client, "alice@acme.test")
    page = client.get("/app/settings").text
    assert f'data-token="{chat["public_token"]}"' in page and "/widget.js" in page
    assert "Require two-factor authentication" in page


def test_every_member_reaches_their_own_account_page_viewers_too(
    client: TestClient, world: World
) -> None:
    # Settings are for admins, and held the only way to one's own two-factor and sign-out.
    assert client.get("/app/account", follow_redirects=False).headers["location"] == (
        "/login?next=%2Fapp%2Faccount"
    )
    sign_in(client, "victor@acme.test")
    inbox = client.get("/app/inbox").text
    assert 'href="/app/account"' in inbox and 'href="/app/settings"' not in inbox
    page = client.get("/app/account")
    assert page.status_code == 200
    for form in ('id="account-name"', 'id="account-password"', 'id="enrol-2fa"'):
        assert form in page.text
    assert 'value="Victor"' in page.text and "victor@acme.test" in page.text


def test_notifications_are_counted_on_every_page_and_listed_on_their_own(
    client: TestClient, world: World
) -> None:
    # The badge counted only what arrived while a page was open, and the next page forgot
    # it: a mention made while an agent was elsewhere was never shown to them.
    conv = world.acme.opened.conversation.id
    assert client.get("/app/notifications", follow_redirects=False).headers["location"] == (
        "/login?next=%2Fapp%2Fnotifications"
    )
    sign_in(client, "bob@acme.test")
    page = client.get("/app/notifications").text
    assert "No notifications yet." in page and 'id="notif-badge"' in page
    assert re.search(r'id="notif-badge"[^>]* hidden>0<', page)
    client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "@bob the <b>courier</b> called"},
        headers=auth(world.alice),
    )
    for path in ("/app/inbox", "/app/customers", "/app/notifications"):
        html = client.get(path).text
        assert re.search(r'id="notif-badge"[^>]*>1</span>', html), path
    page = client.get("/app/notifications").text
    assert f'href="/app/conversations/{conv}#m-' in page
    assert '<li class="notification unread"' in page
    assert "&lt;b&gt;courier&lt;/b&gt;" in page  # the note's text, never its markup
    # Who wrote it and whom it concerns (the note's text alone said neither).
    customer = world.acme.opened.customer
    called = customer.name or customer.email
    assert '<strong class="by">Alice</strong>' in page
    assert f'<span class="about">about {called}:</span>' in page
    client.post("/api/v1/notifications/read", json={}, headers=auth(world.bob))
    page = client.get("/app/notifications").text
    assert '<li class="notification unread"' not in page and "courier" in page
    assert 'id="notifications-all-read" disabled' in page


def test_the_settings_page_shows_why_a_rule_was_skipped(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    rule = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "Greet",
            "event": "conversation.created",
            "actions": [{"type": "add_note", "value": "{{ customer.nickname.first }}"}],
        },
        headers=auth(world.alice),
    ).json()
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"text": "hi", "from": {"email": "new@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle(max_jobs=50)
    sign_in(client, "alice@acme.test")
    page = client.get("/app/settings").text
    row = page[page.index(f'data-id="{rule["id"]}"') :]
    assert "Skipped <time datetime=" in row[: row.index("</tr>")]  # on the reader's clock
    assert "UTC" not in row[: row.index("</tr>")]
    assert "template error: " in row[: row.index("</tr>")]


def test_each_listed_conversation_says_who_has_it(client: TestClient, world: World) -> None:
    # The inbox's rows said nothing of their assignee: "All" could not be read at a glance.
    conv = world.acme.opened.conversation.id
    sign_in(client, "bob@acme.test")
    row = client.get("/app/inbox?view=all").text.split(f'data-id="{conv}"', 1)[1].split("</li>")[0]
    assert '<span class="assignee none" title="Assigned to">Unassigned</span>' in row
    client.post(
        f"/api/v1/conversations/{conv}/assign",
        json={"assignee_id": world.acme.users["alice"].id},
        headers=auth(world.bob),
    )
    row = client.get("/app/inbox?view=all").text.split(f'data-id="{conv}"', 1)[1].split("</li>")[0]
    assert '<span class="assignee" title="Assigned to">Alice</span>' in row


def test_the_settings_pages_menu_reaches_every_section(client: TestClient, world: World) -> None:
    sign_in(client, "alice@acme.test")
    page = client.get("/app/settings").text
    menu = page[page.index('<nav class="settings-menu"') :]
    menu = menu[: menu.index("</nav>")]
    targets = re.findall(r'href="#([\w-]+)"', menu)
    sections = re.findall(r'<section id="([\w-]+)"', page)
    assert targets == sections  # each section once, in the page's order
    assert len(sections) == page.count("<section")  # none left out of the menu


def test_a_viewer_reads_a_conversation_with_its_controls_switched_off(
    client: TestClient, world: World
) -> None:
    # A viewer was offered the agent, team, priority, status, labels and the composer,
    # each refused once used (a priority select then showed what was not saved), and a
    # presence the API refuses them (403 every minute).
    conv = world.acme.opened.conversation.id
    sign_in(client, "victor@acme.test")
    page = client.get(f"/app/conversations/{conv}").text
    for control in ('id="assign"', 'id="team"', 'id="priority"', 'id="resolve"'):
        tag = page[page.index(control) :]
        assert " disabled" in tag[: tag.index(">")], control
    for form in ('id="status-form"', 'id="label-form"', 'id="composer"'):
        opened = page[page.index(form) :]
        assert opened[opened.index(">") :].startswith('><fieldset class="plain" disabled>'), form
    assert "replying, notes and changes need the agent role" in page
    assert 'id="presence"' not in page
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/conversations/{conv}").text
    assert 'fieldset class="plain" >' in page and " disabled" not in page.split("<main>")[1]
    assert 'id="presence"' in page


def test_the_customers_page_finds_customers_by_a_custom_attribute(
    client: TestClient, world: World
) -> None:
    for email, plan in (("pro@example.com", ["Pro", "Legacy"]), ("free@example.com", "Free")):
        r = client.post(
            "/api/v1/customers",
            json={"email": email, "attributes": {"plan": plan}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
    for key, kind, options in (("plan", "list", ["Free", "Pro"]), ("seats", "number", [])):
        client.post(
            "/api/v1/attribute-definitions",
            json={"key": key, "label": key.title(), "type": kind, "options": options},
            headers=auth(world.alice),
        ).raise_for_status()
    pro = client.get("/api/v1/customers", params={"q": "pro@example.com"}, headers=auth(world.bob))
    client.put(
        f"/api/v1/customers/{pro.json()['items'][0]['id']}/tags",
        json={"tags": ["vip", "gold-tier"]},
        headers=auth(world.bob),
    ).raise_for_status()
    sign_in(client, "bob@acme.test")
    page = client.get("/app/customers", params={"attr": "plan", "value": "Pro"}).text
    assert "pro@example.com" in page and "free@example.com" not in page
    # Each row's tags, each a link to the customers carrying it.
    assert '<a class="tag" href="/app/customers?tag=gold-tier">gold-tier</a>' in page
    assert '<a class="tag" href="/app/customers?tag=vip">vip</a>' in page
    assert (
        '<option value="plan" data-type="list" data-options="Free\nPro" selected>Plan</option>'
        in page
    )
    assert 'name="value" value="Pro"' in page
    # A value outside the type is said, and nothing listed.
    refused = client.get("/app/customers", params={"attr": "seats", "value": "many"}).text
    assert 'role="alert">seats is a number, not &#39;many&#39;</p>' in refused
    assert "No customer matches." in refused
    # A key no definition names (an import's column), from the address: kept in the form.
    source = client.get("/app/customers", params={"attr": "source", "value": "fair"}).text
    assert '<option value="source" selected>source</option>' in source
    assert "No customer matches." in source
    # No attribute chosen: the value is not a filter.
    both = client.get("/app/customers", params={"attr": "", "value": "Pro"}).text
    assert "pro@example.com" in both and "free@example.com" in both
