"""What fuzzing the REST API v1 found (schemathesis and by hand): requests answered with a
500, or no problem document, where a clear 4xx problem document (or the work) was due."""

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World

PROBLEM = "application/problem+json"


def problem(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert {"type", "title", "status", "detail"} <= body.keys()


def test_events_poll_cursor_beyond_64_bits_is_a_422_not_a_500(
    client: TestClient, world: World
) -> None:
    # `after` is `int, ge=0` with no upper bound: 2**63 reaches SQLite's binding and
    # raises OverflowError (realtime/service.py `since`).
    r = client.get("/api/v1/events", params={"after": 2**63}, headers=auth(world.bob))
    problem(r, 422)


def test_training_on_examples_with_no_words_trains_on_their_characters(
    client: TestClient, world: World
) -> None:
    admin = auth(world.alice)
    for name, example in (("bangs", "!!!"), ("queries", "???")):
        r = client.post(
            "/api/v1/bot/intents",
            json={"name": name, "reply": "r", "examples": [example]},
            headers=admin,
        )
        assert r.status_code == 201, r.text  # accepted...
    # ...and then the classifier could not be fitted: sklearn's "empty vocabulary" escaped
    # (a 500 here, and every bot_train job dead-lettered).
    r = client.post("/api/v1/bot/train", headers=admin)
    assert r.status_code == 200 and r.json()["examples"] == 2, r.text


def test_import_jsonl_line_with_a_huge_integer_is_a_row_error_not_a_500(
    client: TestClient, world: World
) -> None:
    # Python's json refuses integers past 4300 digits with a plain ValueError, which
    # importer.read_rows does not catch (it catches JSONDecodeError and RecursionError).
    body = (
        b'{"email": "kept@example.com", "name": "Kept"}\n'
        b'{"email": "big@example.com", "name": ' + b"9" * 5000 + b"}\n"
    )
    r = client.post(
        "/api/v1/customer-files/import",
        params={"format": "jsonl"},
        content=body,
        headers={**auth(world.alice), "content-type": "application/x-ndjson"},
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["created"] == 1
    assert [e["line"] for e in report["errors"]] == [2]


def test_training_on_two_one_word_intents_is_not_a_500(client: TestClient, world: World) -> None:
    # Not hostile input at all: an admin's first two intents with one greeting each.
    # TfidfVectorizer prunes every term ("After pruning, no terms remain").
    admin = auth(world.alice)
    for name, example in (("greeting", "hi"), ("thanks", "ok")):
        r = client.post(
            "/api/v1/bot/intents",
            json={"name": name, "reply": "r", "examples": [example]},
            headers=admin,
        )
        assert r.status_code == 201, r.text
    r = client.post("/api/v1/bot/train", headers=admin)
    assert r.status_code < 500, r.text


def test_method_not_allowed_says_which_methods_are(client: TestClient, world: World) -> None:
    # RFC 9110 15.5.6: a 405 MUST carry Allow. Starlette's HTTPException has it; the
    # problem handler (problems.py _http) drops exc.headers.
    r = client.put("/api/v1/teams", json={}, headers=auth(world.alice))
    problem(r, 405)
    assert "allow" in r.headers, dict(r.headers)


def test_stream_last_event_id_beyond_64_bits_is_treated_as_garbage(
    client: TestClient, world: World
) -> None:
    # Same root cause as the poll: realtime/views.py reads `last_event_id` with a bare
    # int(), so 2**70 reaches SQLite and the socket dies (OverflowError, no close frame).
    # A non-number ("abc") is ignored and answered with "hello"; so should this be.
    url = f"/api/v1/stream?last_event_id={2**70}"
    with client.websocket_connect(url, headers=auth(world.bob)) as ws:
        first = ws.receive_json()
    assert first["type"] in ("hello", "reset"), first


def test_an_address_with_no_domain_is_refused_not_stored_as_a_handle(
    client: TestClient, world: World
) -> None:
    # identity.normalize_email checks "." in the domain before stripping the dots, so
    # "kim@...." passes and is stored as the customer "kim@" (and "kim@.x" as "kim@x"):
    # garbage accepted, every later reply to it undeliverable.
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    for address in ("kim@....", "kim@.x"):
        r = client.post(
            f"/api/v1/inboxes/{inbox_id}/messages",
            json={"text": "hello", "from": {"email": address}},
            headers=auth(world.bob),
        )
        problem(r, 422)


def test_an_empty_telegram_handle_is_refused(client: TestClient, world: World) -> None:
    # identity._normalized: the telegram branch strips "@" and whitespace but, unlike the
    # generic branch, never refuses an empty result: "@" is stored as the handle "".
    customer_id = world.acme.opened.customer.id
    r = client.post(
        f"/api/v1/customers/{customer_id}/identities",
        json={"kind": "telegram", "value": "@"},
        headers=auth(world.alice),
    )
    problem(r, 422)


def test_an_unknown_default_region_is_refused_not_left_to_break_phone_numbers(
    client: TestClient, world: World
) -> None:
    # update_settings checked that default_region was a str, nothing more: "us", "XX", ""
    # were stored, and from then on every national number was refused.
    admin = auth(world.alice)
    for wrong in ("XX", "", "USA", "001"):
        r = client.patch(
            "/api/v1/workspace", json={"settings": {"default_region": wrong}}, headers=admin
        )
        problem(r, 422)
    r = client.patch(
        "/api/v1/workspace", json={"settings": {"default_region": "gb"}}, headers=admin
    )
    assert r.status_code == 200 and r.json()["settings"]["default_region"] == "GB"
    sent = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"text": "hello", "from": {"phone": "020 7946 0958"}},
        headers=auth(world.bob),
    )
    assert sent.status_code == 201, sent.text


def test_downloading_an_attachment_with_a_non_latin_name_is_not_a_500(
    client: TestClient, world: World
) -> None:
    # conversations/views.py download_attachment keeps `ch.isalnum()` characters for "a
    # plain ASCII name", but isalnum() is true for 中, so the Content-Disposition header
    # cannot be encoded (latin-1) and the download of a stored file fails.
    import base64

    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    sent = client.post(
        f"/api/v1/inboxes/{inbox_id}/messages",
        json={
            "text": "see file",
            "attachments": [
                {"filename": "报告.txt", "data_base64": base64.b64encode(b"hi").decode()}
            ],
            "from": {"email": "kim@example.com"},
        },
        headers=auth(world.bob),
    )
    assert sent.status_code == 201, sent.text
    conv, msg = sent.json()["conversation_id"], sent.json()["id"]
    base = f"/api/v1/conversations/{conv}/messages/{msg}/attachments"
    (att,) = client.get(base, headers=auth(world.bob)).json()
    r = client.get(f"{base}/{att['id']}", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    assert r.content == b"hi"


def test_attachment_download_is_documented_as_bytes_not_json(client: TestClient) -> None:
    # schemathesis ST105: the route answers application/octet-stream, the schema says
    # application/json (FastAPI's default for a route without response_class/responses),
    # so a generated client JSON-decodes a file. Same for GET /widget/api/{token}/attachments/{id}.
    schema = client.get("/openapi.json").json()
    path = (
        "/api/v1/conversations/{conversation_id}/messages/{message_id}/attachments/{attachment_id}"
    )
    content = schema["paths"][path]["get"]["responses"]["200"]["content"]
    assert "application/json" not in content, content
