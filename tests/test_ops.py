"""Operations: health, readiness, metrics, problem documents, logs without personal data."""

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from rapport.config import Settings
from rapport.db import Database
from tests.conftest import auth
from tests.factories import World


def test_readiness_fails_when_the_schema_is_behind(client: TestClient, database: Database) -> None:
    assert client.get("/readyz").status_code == 200
    with database.engine.begin() as conn:
        current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
    finally:  # the PostgreSQL database outlives this test
        with database.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": current})


def test_metrics_count_requests_by_route_template(client: TestClient, world: World) -> None:
    conv = world.acme.opened.conversation.id
    client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob))
    body = client.get("/metrics").text
    assert 'route="/api/v1/conversations/{conversation_id}"' in body
    assert world.acme.opened.conversation.id not in body
    assert "rapport_ingest_messages_total" in body


def test_unknown_paths_and_methods_are_problem_documents(client: TestClient) -> None:
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = client.put("/healthz")
    assert r.status_code == 405 and r.json()["type"].endswith("/method-not-allowed")


def test_a_defect_answers_a_problem_document_and_logs_its_traceback(
    app,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    from rapport import logs

    bug = "a bug of ours"

    def broken() -> None:
        raise ZeroDivisionError(bug)

    app.add_api_route("/api/v1/broken", broken)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("INFO", json=True)  # to this test's captured stderr, until it ends
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.get("/api/v1/broken")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "something went wrong on our side"  # nothing of the bug
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    (said,) = [line for line in lines if line.get("event") == "http.unhandled"]
    assert said["path"] == "/api/v1/broken" and said["error"] == "ZeroDivisionError"
    (traceback,) = [line["exception"] for line in lines if "exception" in line]
    assert "in broken" in traceback and traceback.endswith("\nZeroDivisionError")
    assert bug not in traceback  # what an exception says may quote a customer


def test_a_logged_traceback_has_its_frames_and_classes_but_not_what_they_said(
    database: Database, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A traceback's last line was the exception's text: a job's hook refused by a mail
    # server logged the customer's address, a wrapped error the number its cause quoted.
    import tests.jobs.handlers  # noqa: F401  (registers the test jobs)
    from rapport import logs
    from rapport.jobs.service import enqueue
    from rapport.jobs.worker import Worker

    address, phone = "zoe@example.com", "+14155550100"
    with database.session() as db:
        job = enqueue(
            db,
            name="test.doomed",
            args={"path": str(tmp_path / "deaths"), "hook_fails": address},
            max_attempts=1,
        )
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("INFO", json=True)  # to this test's captured stderr, until it ends
    try:
        Worker(database, settings).run_until_idle()
        try:
            try:
                raise LookupError(phone)
            except LookupError as exc:
                raise ValueError(address) from exc
        except ValueError:
            logging.getLogger("rapport.test").exception("wrapped", extra={"event": "t.wrapped"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    lines = {line["event"]: line for line in map(json.loads, err.splitlines()) if line}
    assert address not in err and phone not in err
    hook = lines["job.on_dead_failed"]
    assert hook["job_id"] == job.id
    assert "in _write_death" in hook["exception"] and hook["exception"].endswith("\nRuntimeError")
    wrapped = lines["t.wrapped"]["exception"].splitlines()
    assert wrapped[0] == "Traceback (most recent call last):" and wrapped[-1] == "ValueError"
    assert "LookupError" in wrapped and any("direct cause" in line for line in wrapped)


@pytest.mark.parametrize("json_lines", [True, False])
def test_a_traceback_on_the_console_leaves_out_what_the_exception_said_as_json_does(
    capsys: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    # With RAPPORT_LOG_JSON=false the console renderer printed its own traceback, whose
    # last line was the exception's text: here a customer's address.
    from rapport import logs

    address = "zoe@example.com"

    def deliver() -> None:
        raise ConnectionRefusedError(f"550 mailbox {address} unavailable")

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("INFO", json=json_lines)  # to this test's captured stderr, until it ends
    try:
        try:
            deliver()
        except ConnectionRefusedError:
            logging.getLogger("rapport.test").exception("refused", extra={"event": "t.refused"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "t.refused" in err and "in deliver" in err and "ConnectionRefusedError" in err
    assert address not in err


def test_logs_at_info_carry_no_message_body_or_contact_details(
    client: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "log-1",
            "text": "my card number is 4111-zz",
            "from": {"email": "private@example.com", "phone": "+14155550100"},
        },
        headers=auth(world.bob),
    )
    conv = world.acme.opened.conversation.id
    client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "secret reply"},
        headers=auth(world.bob),
    )
    from rapport.jobs.worker import Worker

    Worker(client.app.state.database, client.app.state.settings).run_until_idle()  # type: ignore[attr-defined]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    # Not digits alone: ids are hex, and one can hold any four digits.
    for secret in ("4111-zz", "private@example.com", "+14155550100", "secret reply"):
        assert secret not in logged


def test_the_openapi_schema_says_errors_are_problem_documents(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    problem = {"$ref": "#/components/schemas/Problem"}
    assert schema["components"]["schemas"]["Problem"]["required"][:2] == ["type", "title"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method} {path}"
            default = responses["default"]["content"]
            assert default == {"application/problem+json": {"schema": problem}}, where
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    assert response["content"] == default, f"{where} {status}"
    # What a route says of its own errors is kept (its 422 read "the request is not valid").
    start = schema["paths"]["/api/v1/conversations"]["post"]["responses"]
    assert start["422"]["description"].startswith("The inbox cannot reach the customer")
    retired = schema["paths"]["/api/v1/webhooks/{webhook_id}"]["delete"]["responses"]
    assert retired["409"]["description"] == "an automation rule still sends to it"
    export = schema["paths"]["/api/v1/customer-files/export"]["get"]["responses"]["200"]
    assert set(export["content"]) == {"text/csv", "application/x-ndjson"}
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_the_openapi_schema_declares_the_bodies_and_headers_routes_read_themselves(
    client: TestClient,
) -> None:
    schema = client.get("/openapi.json").json()
    models = schema["components"]["schemas"]

    def refs(node: object) -> set[str]:
        if isinstance(node, dict):
            found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
            return found.union(*(refs(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node))
        return set()

    assert all(r.removeprefix("#/components/schemas/") in models for r in refs(schema))
    batch = schema["paths"]["/api/v1/events/batch"]["post"]["requestBody"]["content"]
    assert "batch" in batch["application/json"]["schema"]["properties"]
    track = schema["paths"]["/api/v1/events/track"]["post"]["requestBody"]["content"]
    assert "userId" in track["application/json"]["schema"]["properties"]
    upload = schema["paths"]["/api/v1/customer-files/import"]["post"]["requestBody"]["content"]
    assert set(upload) == {"text/csv", "application/x-ndjson"}
    say = schema["paths"]["/widget/api/{token}/messages"]["post"]["parameters"]
    headers = [(p["name"], p["required"]) for p in say if p["in"] == "header"]
    assert headers == [("X-Rapport-Visitor", True)]


def test_a_deadlock_or_a_lock_not_had_in_time_is_a_503_to_try_again(app) -> None:  # type: ignore[no-untyped-def]
    """Seen on PostgreSQL: a team deleted while conversations were assigned to it. Nothing
    was changed; the client is told to send it again, not that Rapport is broken."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import OperationalError

    causes = {
        "deadlock": psycopg.errors.DeadlockDetected("deadlock detected"),
        "serialization": psycopg.errors.SerializationFailure("could not serialize"),
        "locked": sqlite3.OperationalError("database is locked"),
        "other": sqlite3.OperationalError("no such table: nowhere"),
    }

    def failing(cause: str) -> None:
        raise OperationalError("UPDATE conversations ...", {}, causes[cause])

    app.add_api_route("/api/v1/failing/{cause}", failing)
    with TestClient(app, raise_server_exceptions=False) as client:
        for cause in ("deadlock", "serialization", "locked"):
            r = client.get(f"/api/v1/failing/{cause}")
            assert (r.status_code, r.headers["retry-after"]) == (503, "1"), cause
            assert r.headers["content-type"] == "application/problem+json"
        assert client.get("/api/v1/failing/other").status_code == 500  # a defect of ours
