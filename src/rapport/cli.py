"""The ``rapport`` command."""

import gc
import importlib
import sys
import threading
from typing import TYPE_CHECKING, Annotated, ClassVar

import typer
import typer.main
from pydantic import ValidationError
from typer import _click as click
from typer.core import TyperGroup

from rapport.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class _Lazy(TyperGroup):
    """A command group some of whose commands (``lazy``: name -> module, attribute) are
    imported only when they run or are listed. Each lives beside the code it works with, and
    some load most of the app: imported with the command, the evaluations and the customer
    import and export took ~0.5 s off the start of every other command."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, name = self.lazy[cmd_name]
        found = getattr(importlib.import_module(module), name)
        if isinstance(found, typer.Typer):  # a group of its own
            group = typer.main.get_group(found)
            group.name = cmd_name
            return group
        one = typer.Typer(add_completion=False)
        one.command(cmd_name)(found)
        return typer.main.get_command(one)


class _Evaluations(_Lazy):
    """``rapport eval``: each evaluation lives beside the code it measures."""

    lazy = {
        "emails": ("rapport.channels.email.evaluate", "emails"),
        "replies": ("rapport.channels.email.evaluate", "replies"),
        "intents": ("rapport.assistant.evaluate", "intents"),
        "sentiment": ("rapport.assistant.evaluate", "sentiment"),
        "identity": ("rapport.customers.evaluate", "identity"),
    }


class _Rapport(_Lazy):
    """``rapport``: the customer import and export load most of the app."""

    lazy = {
        "import": ("rapport.customers.cli", "import_app"),
        "export": ("rapport.customers.cli", "export_app"),
    }


app = typer.Typer(
    cls=_Rapport, help="Rapport: one customer, one timeline, one inbox.", no_args_is_help=True
)
workspace_app = typer.Typer(help="Manage workspaces.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
app.add_typer(token_app, name="token")
user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
app.add_typer(user_app, name="user")
jobs_app = typer.Typer(help="See and retry dead-lettered jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
eval_app = typer.Typer(
    cls=_Evaluations,
    help="Measure the real code on public data; each prints a table and a JSON line.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


def settings_or_exit() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        typer.secho(f"configuration error: {messages}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _fail(message: str) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (RAPPORT_DATABASE_URL)."""
    from rapport import migrate as m

    settings = settings_or_exit()
    m.upgrade(settings.database_url)
    typer.echo(f"database at revision {m.head()}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Run the job worker in this process.")] = True,
    root_path: Annotated[
        str,
        typer.Option(
            help="The path prefix a proxy serves Rapport under and strips (e.g. /rapport)."
        ),
    ] = "",
) -> None:
    """Serve the web app and API (and, by default, the job worker)."""
    import uvicorn

    from rapport import logs
    from rapport.app import create_app
    from rapport.assistant import one_compute_thread
    from rapport.guard import WEBSOCKET_MESSAGE_LIMIT

    settings = settings_or_exit()
    settings.worker_in_process = worker
    logs.configure(settings.log_level, settings.log_json)
    one_compute_thread()
    app = create_app(settings)
    # What is loaded by now (the app and its libraries) lives as long as the process:
    # frozen, the garbage collector stops walking it on every full collection, pauses that
    # were most of the ingest tail latency under load (bench/ingest.py p99: ~220 -> ~70 ms).
    gc.collect()
    gc.freeze()
    # The thread that hands batches to the ingest writer process waits for the GIL on every
    # reply; a shorter switch interval gets it there sooner (bench/ingest.py: a few percent).
    sys.setswitchinterval(0.0005)
    uvicorn.run(
        app,
        host=host,
        port=port,
        root_path=root_path.rstrip("/"),
        access_log=False,
        log_config=None,
        ws="websockets-sansio",
        ws_max_size=WEBSOCKET_MESSAGE_LIMIT,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


@app.command("worker")
def run_worker(
    once: Annotated[bool, typer.Option(help="Run the due jobs, then exit.")] = False,
    threads: Annotated[int, typer.Option(min=1, max=64, help="Jobs run at once.")] = 1,
    import_: Annotated[
        list[str] | None, typer.Option("--import", help="Extra modules with @job handlers.")
    ] = None,
) -> None:
    """Run background jobs from the shared jobs table (any number of these may run)."""
    from rapport import bus, cache, logs
    from rapport.assistant import one_compute_thread
    from rapport.db import Database
    from rapport.jobs import registry
    from rapport.jobs.worker import Worker

    settings = settings_or_exit()
    logs.configure(settings.log_level, settings.log_json)
    one_compute_thread()
    bus.set_bus(bus.make_bus(settings.redis_url) if settings.redis_url else bus.LocalBus())
    registry.load_handlers(tuple(import_ or ()))
    database = Database(settings.database_url)
    if once:
        typer.echo(f"{Worker(database, settings).run_until_idle()} jobs run")
        return
    if settings.redis_url:  # what the servers forget, the jobs here must not remember
        cache.RedisForgetting(settings.redis_url).start()
    stop = threading.Event()
    pool = [
        threading.Thread(
            target=Worker(database, settings, name=None).run_forever, args=(stop,), daemon=True
        )
        for _ in range(threads)
    ]
    for t in pool:
        t.start()
    try:
        while any(t.is_alive() for t in pool):
            for t in pool:
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()


def _workspace_id(db: "Session", name: str) -> str:
    from rapport.problems import NotFound
    from rapport.workspaces import service

    try:
        return service.get_by_name(db, name).id
    except NotFound:
        _fail(f"no workspace {name}")
        raise


@jobs_app.command("dead")
def jobs_dead(
    workspace: Annotated[str | None, typer.Option(help="Only this workspace's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
) -> None:
    """List dead-lettered jobs, the latest to die first (with no --workspace, those of
    every workspace and of none)."""
    from rapport.db import Database
    from rapport.jobs import service
    from rapport.workspaces.models import Workspace

    database = Database(settings_or_exit().database_url)
    try:
        with database.session(write=False) as db:
            workspace_id = _workspace_id(db, workspace) if workspace else None
            rows, more = service.list_dead(db, workspace_id=workspace_id, limit=limit)
            names = {
                ws.id: ws.name
                for ws in (db.get(Workspace, r.workspace_id) for r in rows if r.workspace_id)
                if ws is not None
            }
    finally:
        database.dispose()
    if not rows:
        typer.echo("no dead jobs")
        return
    table = [("ID", "NAME", "WORKSPACE", "ATTEMPTS", "DIED (UTC)", "LAST ERROR")]
    for r in rows:
        error = (r.last_error or "").strip().split("\n", 1)[0]
        died = r.finished_at.strftime("%Y-%m-%d %H:%M:%S") if r.finished_at else "-"
        workspace_name = names.get(r.workspace_id, r.workspace_id) if r.workspace_id else "-"
        attempts = f"{r.attempts}/{r.max_attempts}"
        table.append((r.id, r.name, workspace_name, attempts, died, error[:100]))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        padded = (cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True))
        typer.echo("  ".join([*padded, row[5]]))
    if more:
        typer.echo(f"(more dead jobs than these {len(rows)}: raise --limit to see them)")


@jobs_app.command("retry")
def jobs_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Ids of dead jobs.")] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="Every dead job (of --workspace, if given).")
    ] = False,
    workspace: Annotated[
        str | None, typer.Option(help="With --all-dead: only this workspace's jobs.")
    ] = None,
) -> None:
    """Put dead-lettered jobs back in the queue, with all their attempts again."""
    from rapport.db import Database
    from rapport.jobs import service
    from rapport.jobs.models import JobState

    if bool(ids) == all_dead or (workspace and not all_dead):
        typer.secho("name job ids, or --all-dead [--workspace NAME]", fg="red", err=True)
        raise typer.Exit(2)
    database = Database(settings_or_exit().database_url)
    missing: list[str] = []
    kept: list[tuple[str, str]] = []  # (id, why): dead still, their work no longer possible
    try:
        with database.session() as db:
            if all_dead:
                workspace_id = _workspace_id(db, workspace) if workspace else None
                count = service.retry_all_dead(db, workspace_id=workspace_id)
            else:
                count = 0
                for job_id in ids or ():
                    row = service.retry_dead(db, job_id=job_id)
                    if row is None:
                        missing.append(job_id)
                    elif row.state == JobState.dead:
                        kept.append((job_id, row.last_error or ""))
                    else:
                        count += 1
    finally:
        database.dispose()
    typer.echo(f"{count} {'job' if count == 1 else 'jobs'} queued again")
    for job_id in missing:
        typer.secho(f"no dead job {job_id}", fg="red", err=True)
    for job_id, why in kept:
        typer.secho(f"job {job_id} stays dead: {why}", fg="red", err=True)
    if missing or kept:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Create the demo workspace (once) and print a fresh admin login."""
    from rapport import demo as d
    from rapport.db import Database

    settings = settings_or_exit()
    database = Database(settings.database_url)
    email, password, created = d.seed(database, settings)
    typer.echo("")
    typer.secho("  Rapport demo workspace " + ("created" if created else "ready"), bold=True)
    typer.echo(f"  open      {settings.public_url}/   (API docs at {settings.public_url}/docs)")
    typer.echo(f"  help      {settings.public_url}/help/demo/   (the public help center)")
    typer.echo(f"  email     {email}")
    typer.echo(f"  password  {password}")
    typer.echo("")


@workspace_app.command("create")
def workspace_create(
    name: str,
    owner: Annotated[str, typer.Option(help="The owner's email.")],
    password: Annotated[str, typer.Option(help="The owner's password (new users).")],
) -> None:
    """Create a workspace with its owner."""
    from rapport.db import Database
    from rapport.problems import Problem
    from rapport.workspaces import service

    database = Database(settings_or_exit().database_url)
    try:
        with database.session() as db:
            ws, user = service.create(db, name=name, owner_email=owner, owner_password=password)
    except Problem as exc:
        _fail(exc.detail)
    typer.echo(f"workspace {ws.name} ({ws.id}) owned by {user.email}")


@workspace_app.command("invite")
def workspace_invite(
    name: str,
    email: Annotated[str, typer.Option(help="The address to invite.")],
    role: Annotated[str, typer.Option(help="viewer, agent, admin or owner.")] = "agent",
    mail: Annotated[bool, typer.Option(help="Also email the link (needs a mail relay).")] = False,
) -> None:
    """Invite an address to a workspace and print the invitation's link (valid 7 days): for
    installations without a mail relay, or to hand the link over yourself."""
    from rapport.auth.models import Role
    from rapport.crypto import box_for
    from rapport.db import Database
    from rapport.problems import Problem
    from rapport.workspaces import invitations, service

    settings = settings_or_exit()
    if role not in Role.__members__:
        _fail(f"no role {role!r}: viewer, agent, admin or owner")
    database = Database(settings.database_url)
    try:
        with database.session() as db:
            ws = service.get_by_name(db, name)
            _, token = invitations.invite(
                db,
                workspace_id=ws.id,
                email=email,
                role=Role(role),
                name="",
                actor_id=None,
                actor_role=Role.owner,
                box=box_for(settings.secret_key.get_secret_value()),
                mail=mail,
            )
    except Problem as exc:
        _fail(exc.detail)
        return
    sys.stdout.write(invitations.link(settings.public_url, token) + "\n")


@token_app.command("create")
def token_create(
    workspace: Annotated[str, typer.Option(help="Workspace name.")],
    email: Annotated[str, typer.Option(help="The member the token acts as.")],
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
) -> None:
    """Print a new API token for a member (with the member's role)."""
    from rapport.auth import service as auth
    from rapport.db import Database
    from rapport.problems import Problem
    from rapport.workspaces import service

    database = Database(settings_or_exit().database_url)
    try:
        with database.session() as db:
            ws = service.get_by_name(db, workspace)
            user = auth.user_by_email(db, email)
            if user is None:
                _fail(f"no user {email}")
                return
            member = auth.membership(db, user_id=user.id, workspace=ws.id)
            plain, _ = auth.create_token(
                db, user_id=user.id, workspace_id=ws.id, name=name, role=member.role
            )
    except Problem as exc:
        _fail(exc.detail)
        return
    sys.stdout.write(plain + "\n")


@user_app.command("totp-off")
def user_totp_off(
    email: Annotated[str, typer.Argument(help="The account's email address.")],
) -> None:
    """Turn off an account's two-factor authentication, for one whose owner lost phone and
    recovery codes and that is a member of several workspaces (no one workspace's admin
    may reset it): its lock-out is lifted, every session of it ends, each of its
    workspaces audits it, and its address is told."""
    from rapport.auth import service as auth
    from rapport.auth.account import notify_totp_reset
    from rapport.auth.models import User
    from rapport.db import Database, hold
    from rapport.privacy.service import SYSTEM
    from rapport.workspaces import service as workspaces

    database = Database(settings_or_exit().database_url)
    try:
        with database.session() as db:
            user = auth.user_by_email(db, email)
            if user is None:
                _fail(f"no user {email}")
                return
            hold(db, User, user.id)
            if not user.totp_enabled:
                _fail(f"{email} has no two-factor authentication")
                return
            auth.totp_disable(db, user=user)
            # The operator vouches for the owner, as an admin's reset does: a lock-out
            # (their own tries without the phone) would keep them out of what they are
            # let back into.
            auth.forget_failures(user)
            auth.end_all_sessions(db, user_id=user.id)
            auth.audit_everywhere(
                db,
                user_id=user.id,
                actor=SYSTEM,
                action="auth.totp_off",
                target_type="user",
                target_id=user.id,
                data={"by": "operator"},
            )
            workspaces.announce_user(db, user=user)
            notify_totp_reset(db, user=user, by="The server's operator")
    finally:
        database.dispose()
    sys.stdout.write(f"two-factor authentication turned off for {email}\n")


@app.command("smtp")
def smtp_listener(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 2525,
) -> None:
    """Receive email for the email inboxes (mail to their addresses becomes conversations)."""
    import time

    from rapport import logs
    from rapport.channels.email import smtp
    from rapport.db import Database

    settings = settings_or_exit()
    logs.configure(settings.log_level, settings.log_json)
    controller = smtp.start(Database(settings.database_url), settings, host=host, port=port)
    typer.echo(f"SMTP listening on {host}:{port}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


def main() -> None:
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        app()
    except (OperationalError, InterfaceError) as exc:
        # The database is down, unreachable or refuses us: say so in a line, not in a
        # 500-line traceback (the driver's own first line says which).
        said = str(exc.orig or exc).strip()
        reason = said.splitlines()[0] if said else type(exc).__name__
        typer.secho(
            f"cannot use the database (RAPPORT_DATABASE_URL): {reason}",
            fg="red",
            err=True,
        )
        raise SystemExit(1) from None
    except OSError as exc:  # a directory it cannot create, a file it may not read...
        where = f": {exc.filename}" if exc.filename else ""
        typer.secho(f"{exc.strerror or type(exc).__name__}{where}", fg="red", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
