"""Web chat: files both ways through the widget's API, and read receipts for agents."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from rapport.channels import webchat
from rapport.db import Database
from tests.channels.webchat.test_widget import HOST_PAGE, chat, say, start  # noqa: F401
from tests.conftest import auth
from tests.factories import World


def visitor_headers(visitor: str) -> dict[str, str]:
    return {"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor}


def test_a_visitor_sends_a_file_that_agents_and_only_that_visitor_can_open(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
) -> None:
    visitor = start(client, chat, name="Ada")["visitor_token"]
    r = client.post(
        f"/widget/api/{chat['token']}/attachments",
        files={"file": ("receipt.pdf", b"%PDF-1.4 fake receipt", "application/pdf")},
        data={"text": "here is my receipt"},
        headers=visitor_headers(visitor),
    )
    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["text"] == "here is my receipt"
    (attachment,) = sent["attachments"]
    assert attachment["filename"] == "receipt.pdf" and attachment["size"] == 21
    # The agent sees it on the conversation.
    conv = client.get(
        f"/api/v1/conversations/{sent['conversation_id']}", headers=auth(world.bob)
    ).json()
    assert conv["messages"][-1]["text"] == "here is my receipt"
    files = client.get(
        f"/api/v1/conversations/{sent['conversation_id']}/messages/{sent['id']}/attachments",
        headers=auth(world.bob),
    ).json()
    assert [f["filename"] for f in files] == ["receipt.pdf"]
    # The visitor gets it back, as a download; another visitor does not.
    url = f"/widget/api/{chat['token']}/attachments/{attachment['id']}"
    got = client.get(url, headers=visitor_headers(visitor))
    assert got.status_code == 200 and got.content == b"%PDF-1.4 fake receipt"
    assert got.headers["content-disposition"].startswith("attachment;")
    stranger = start(client, chat)["visitor_token"]
    assert client.get(url, headers=visitor_headers(stranger)).status_code == 404
    history = client.get(
        f"/widget/api/{chat['token']}/messages", headers=visitor_headers(visitor)
    ).json()
    assert history[-1]["attachments"][0]["filename"] == "receipt.pdf"


def test_a_visitors_file_name_cannot_pose_as_another_kind_of_file(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
) -> None:
    # U+202E turns the rest of a name around where an agent reads it: "invoice\u202efdp.exe"
    # shows as "invoiceexe.pdf". An agent's own upload was cleaned of it; a visitor's was not.
    visitor = start(client, chat)["visitor_token"]
    names = []
    for name in ("invoice\u202efdp.exe", "..\\..\\boot.ini", "zero\u200bwidth.txt"):
        r = client.post(
            f"/widget/api/{chat['token']}/attachments",
            files={"file": (name, b"MZ not really", "application/pdf")},
            headers=visitor_headers(visitor),
        )
        assert r.status_code == 201, r.text
        names.append(r.json()["attachments"][0]["filename"])
    assert names == ["invoicefdp.exe", "boot.ini", "zerowidth.txt"]


def test_the_history_reads_every_messages_files_in_one_query_however_long_it_is(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
    database: Database,
) -> None:
    # The history read each message's files with a query of its own: a chat of 500
    # messages (the most it shows) cost 500 more round trips each time the widget opened.
    visitor = start(client, chat, name="Ada")["visitor_token"]
    url = f"/widget/api/{chat['token']}/messages"

    def sent(n: int) -> None:
        pdf = b"%PDF-1.4 page " + str(n).encode()
        r = client.post(
            f"/widget/api/{chat['token']}/attachments",
            files={"file": (f"scan-{n}.pdf", pdf, "application/pdf")},
            data={"text": f"scan {n}"},
            headers=visitor_headers(visitor),
        )
        assert r.status_code == 201, r.text
        say(client, chat, visitor, f"and that was {n}")

    def statements() -> tuple[int, int]:
        """The history's statements in all, and those that read attachments."""
        seen: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        event.listen(database.engine, "before_cursor_execute", count)
        try:
            history = client.get(url, headers=visitor_headers(visitor))
        finally:
            event.remove(database.engine, "before_cursor_execute", count)
        assert history.status_code == 200
        files = [a["filename"] for m in history.json() for a in m["attachments"]]
        assert files == [f"scan-{n}.pdf" for n in range(len(history.json()) // 2)]
        return len(seen), sum("FROM attachments" in s for s in seen)

    sent(0)
    client.get(url, headers=visitor_headers(visitor))  # what is cached is cached
    few = statements()
    for n in range(1, 8):
        sent(n)
    many = statements()
    assert few[1] == many[1] == 1
    assert few[0] == many[0]


def test_a_file_too_large_is_refused_with_a_reason(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
) -> None:
    visitor = start(client, chat)["visitor_token"]
    big = b"x" * (webchat.MAX_UPLOAD_BYTES + 1)
    r = client.post(
        f"/widget/api/{chat['token']}/attachments",
        files={"file": ("big.bin", big, "application/octet-stream")},
        headers=visitor_headers(visitor),
    )
    assert r.status_code == 422
    assert "10 MB" in r.json()["detail"]
    history = client.get(
        f"/widget/api/{chat['token']}/messages", headers=visitor_headers(visitor)
    ).json()
    assert history == []


def test_agents_see_when_the_visitor_has_read_their_reply(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
) -> None:
    visitor = start(client, chat)["visitor_token"]
    first = say(client, chat, visitor, "hello?")
    replies = [
        client.post(
            f"/api/v1/conversations/{first['conversation_id']}/messages",
            json={"text": text},
            headers=auth(world.bob),
        ).json()
        for text in ("Hi! One moment.", "Found it: it ships today.")
    ]
    r = client.post(
        f"/widget/api/{chat['token']}/read",
        json={"message_id": replies[0]["id"]},
        headers=visitor_headers(visitor),
    )
    assert r.status_code == 204
    conv = client.get(
        f"/api/v1/conversations/{first['conversation_id']}", headers=auth(world.bob)
    ).json()
    states = {m["text"]: m["status"] for m in conv["messages"] if m["direction"] == "out"}
    assert states["Hi! One moment."] == "read"
    assert states["Found it: it ships today."] != "read"
    other = start(client, chat)["visitor_token"]
    r = client.post(
        f"/widget/api/{chat['token']}/read",
        json={"message_id": replies[1]["id"]},
        headers=visitor_headers(other),
    )
    assert r.status_code == 404


def test_a_visitor_marks_read_only_this_chats_replies(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
) -> None:
    # The same customer's email conversation (another inbox): a widget call could mark
    # its replies "read", which they never were.
    visitor = start(client, chat)["visitor_token"]
    conv = say(client, chat, visitor, "hello?")["conversation_id"]
    customer = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()[
        "customer_id"
    ]
    started = client.post(
        "/api/v1/conversations",
        json={"customer_id": customer, "inbox_id": world.acme.inbox.id, "text": "by email"},
        headers=auth(world.bob),
    )
    assert started.status_code == 201, started.text
    elsewhere = started.json()["messages"][-1]["id"]
    r = client.post(
        f"/widget/api/{chat['token']}/read",
        json={"message_id": elsewhere},
        headers=visitor_headers(visitor),
    )
    assert r.status_code == 404


def test_the_visitor_gets_an_agents_file_live_but_never_a_notes(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
) -> None:
    visitor = start(client, chat, name="Ada")["visitor_token"]
    conv = say(client, chat, visitor, "can I have the manual?")["conversation_id"]

    def uploaded(name: str, data: bytes) -> str:
        r = client.post(
            f"/api/v1/conversations/{conv}/uploads",
            files={"file": (name, data, "application/pdf")},
            headers=auth(world.bob),
        )
        return str(r.json()["id"])

    with client.websocket_connect(f"/widget/ws/{chat['token']}?visitor={visitor}") as ws:
        client.post(
            f"/api/v1/conversations/{conv}/notes",
            json={"text": "internal", "attachment_ids": [uploaded("internal.pdf", b"%PDF no")]},
            headers=auth(world.bob),
        )
        note = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
        note_file = note["messages"][-1]["attachments"][0]["id"]
        client.post(
            f"/api/v1/conversations/{conv}/messages",
            json={"attachment_ids": [uploaded("manual.pdf", b"%PDF-1.4 the manual")]},
            headers=auth(world.bob),
        )
        event = ws.receive_json()
    assert event["type"] == "message.created"
    [shared] = event["payload"]["attachments"]
    assert shared["filename"] == "manual.pdf" and shared["content_type"] == "application/pdf"
    base = f"/widget/api/{chat['token']}/attachments"
    got = client.get(f"{base}/{shared['id']}", headers=visitor_headers(visitor))
    assert got.status_code == 200 and got.content == b"%PDF-1.4 the manual"
    assert client.get(f"{base}/{note_file}", headers=visitor_headers(visitor)).status_code == 404
    history = client.get(
        f"/widget/api/{chat['token']}/messages", headers=visitor_headers(visitor)
    ).json()
    assert [a["filename"] for m in history for a in m["attachments"]] == ["manual.pdf"]


def test_a_visitors_name_cannot_read_as_another_or_forge_a_line(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
) -> None:
    # U+202E makes "Ann<RLO>nimda" read "Annadmin" where agents see the customer's name.
    visitor = start(client, chat, name="Ann\u202enimda\nSupport team")["visitor_token"]
    sent = say(client, chat, visitor, "hello")
    assert sent["sender_name"] == "Ann nimda Support team"
    conv = client.get(
        f"/api/v1/conversations/{sent['conversation_id']}", headers=auth(world.bob)
    ).json()
    customer = client.get(
        f"/api/v1/customers/{conv['customer_id']}", headers=auth(world.bob)
    ).json()
    assert customer["name"] == "Ann nimda Support team"
