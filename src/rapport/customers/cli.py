"""`rapport import customers` and `rapport export customers`."""

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rapport.config import Settings
from rapport.customers import importer
from rapport.db import Database


def _settings() -> Settings:
    """The settings, or a readable refusal of bad ones (the main command's)."""
    from rapport.cli import settings_or_exit  # which registers these commands

    return settings_or_exit()


import_app = typer.Typer(help="Import data.", no_args_is_help=True)
export_app = typer.Typer(help="Export data.", no_args_is_help=True)


def _workspace_id(database: Database, name: str) -> str:
    from rapport.workspaces import service

    with database.session(write=False) as db:
        return service.get_by_name(db, name).id


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    return lines - (0 if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else 1)


@import_app.command("customers")
def import_customers(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSONL.")],
    workspace: Annotated[str, typer.Option(help="Workspace name.")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="FIELD=COLUMN (name, email, phone, external_id), repeatable."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row, write none.")
    ] = False,
) -> None:
    """Import customers; rows match existing ones by email, phone or external id."""
    console = Console(stderr=True)
    try:
        mapping = importer.parse_mapping(map_ or [])
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    database = Database(_settings().database_url)
    try:
        report = _run_import(database, workspace, file, mapping, dry_run, console)
    except importer.UnreadableFile as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    for error in report.errors:
        console.print(f"line {error.line}: {error.reason}")
    verb = "would be" if dry_run else "were"
    typer.echo(
        f"{report.rows} rows: {report.created} customers {verb} created, "
        f"{report.updated} updated, {len(report.errors)} rows with errors"
        + (
            f", {report.to_review} given a handle another customer had only typed "
            "(the pairs are in duplicate review)"
            if report.to_review
            else ""
        )
    )


def _run_import(
    database: Database,
    workspace: str,
    file: Path,
    mapping: dict[str, str],
    dry_run: bool,
    console: Console,
) -> importer.Report:
    workspace_id = _workspace_id(database, workspace)
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("rows", total=_count_lines(file))
        report = importer.import_customers(
            database,
            workspace_id=workspace_id,
            path=file,
            mapping=mapping,
            dry_run=dry_run,
            progress=lambda n: bar.advance(task, n),
        )
    return report


@export_app.command("customers")
def export_customers(
    workspace: Annotated[str, typer.Option(help="Workspace name.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (stdout if not set).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
) -> None:
    """Export the workspace's customers (merged records left out)."""
    database = Database(_settings().database_url)
    try:
        rows = importer.export_rows(database, _workspace_id(database, workspace))
    finally:
        database.dispose()
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        importer.write_rows(out, rows, format_)
    finally:
        if output:
            out.close()
