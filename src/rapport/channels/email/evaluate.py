"""``rapport eval emails DIR`` and ``rapport eval replies FILE``: the real email code, real mail."""

import json
import re
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rapport.channels.email.parse import parse as parse_email
from rapport.channels.email.replies import strip_html, strip_text, visible_reply

console = Console()


def emails(
    directory: Annotated[
        Path, typer.Argument(help="A folder of .eml files (searched recursively).")
    ],
) -> None:
    """Store every .eml under DIR through the real email ingest path, into a temporary
    database; count stored, failed and empty bodies."""
    from rapport import migrate
    from rapport.auth.models import Role  # noqa: F401  (models must be importable)
    from rapport.channels.email import ingest_email
    from rapport.channels.models import Inbox
    from rapport.config import Settings
    from rapport.db import Database
    from rapport.workspaces.models import Workspace

    files = sorted(p for p in directory.rglob("*.eml") if p.is_file())
    if not files:
        raise typer.BadParameter(f"no .eml files under {directory}")
    with tempfile.TemporaryDirectory(prefix="rapport-eval-emails-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'eval.db'}"
        migrate.upgrade(url)
        settings = Settings(database_url=url, demo=True, attachments_dir=Path(tmp) / "att")
        database = Database(url)
        stored = failed = empty = 0
        rows = []
        for path in files:
            raw = path.read_bytes()
            try:
                with database.session() as db:
                    # A workspace per file: fixtures reuse Message-IDs (senders and dates
                    # too), which one workspace would rightly store once, even in two
                    # inboxes (one mail to two of its addresses).
                    workspace = Workspace(name=str(path.relative_to(directory)))
                    db.add(workspace)
                    db.flush()
                    inbox = Inbox(
                        workspace_id=workspace.id,
                        name=path.name,
                        channel="email",
                        settings={"address": "support@example.com"},
                    )
                    db.add(inbox)
                    db.flush()
                    result = ingest_email(db, raw, inbox_id=inbox.id, settings=settings)
                stored += 1
                body = (result.message.text or "").strip() or (result.message.html or "").strip()
                if not body and not result.attachments:
                    empty += 1
                    rows.append((str(path.relative_to(directory)), "stored, empty body"))
            except Exception as exc:  # the point of the evaluation is to find these
                failed += 1
                rows.append(
                    (str(path.relative_to(directory)), f"FAILED: {type(exc).__name__}: {exc}"[:120])
                )
        database.dispose()
    table = Table(title=f"Email ingest on {directory}")
    table.add_column("files", justify="right")
    table.add_column("stored", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("empty body", justify="right")
    table.add_row(str(len(files)), str(stored), str(failed), str(empty))
    console.print(table)
    for name, what in rows:
        console.print(f"  {name}: {what}")
    figures = {"files": len(files), "stored": stored, "failed": failed, "empty_body": empty}
    print(json.dumps(figures))  # noqa: T201 - the figures line is the point


def _same(got: str, want: str, how: str) -> bool:
    if how == "nospace":
        return re.sub(r"\s+", "", got) == re.sub(r"\s+", "", want)
    return " ".join(got.split()) == " ".join(want.split())


def replies(cases: Annotated[Path, typer.Argument(help="A cases.jsonl file.")]) -> None:
    """Score the real reply stripping on a cases file; print the misses."""
    total = exact = 0
    misses = []
    for line in cases.read_text().splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        total += 1
        if case["format"] == "text":
            got = strip_text(case["input"])
        elif case["format"] == "html":
            got = strip_html(case["input"])
        else:
            parsed = parse_email(case["input"].encode("utf-8", errors="surrogateescape"))
            got = visible_reply(parsed.text, parsed.html)
        if _same(got, case["expected"], case.get("compare", "collapse")):
            exact += 1
        else:
            misses.append((case["id"], case["expected"], got))
    table = Table(title=f"Reply stripping on {cases}")
    for col in ("cases", "exact", "rate"):
        table.add_column(col, justify="right")
    rate = exact / total if total else 0.0
    table.add_row(str(total), str(exact), f"{rate:.3f}")
    console.print(table)
    for case_id, want, got in misses:
        console.print(
            f"[red]miss[/red] {case_id}\n  expected: {want[:160]!r}\n  got:      {got[:160]!r}"
        )
    print(json.dumps({"cases": total, "exact": exact, "rate": round(rate, 4)}))  # noqa: T201
