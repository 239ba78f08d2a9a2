"""The CLI interfaces outside tools rely on."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from rapport.auth.models import ApiToken, User
from rapport.auth.security import token_hash
from rapport.cli import app as cli_app
from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.models import Job, JobState
from tests.factories import World, dead_job

RAPPORT = [sys.executable, "-m", "rapport.cli"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAPPORT, *args], env=env, capture_output=True, text=True, timeout=120)


def test_migrate_workspace_token_and_demo_from_a_fresh_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {
        **os.environ,
        "RAPPORT_DATABASE_URL": url,
        "RAPPORT_SECRET_KEY": "cli-test-secret-0123456789abcdefghijkl",
        "RAPPORT_ATTACHMENTS_DIR": str(tmp_path / "att"),
        "RAPPORT_DEMO": "0",
    }
    assert run(["migrate"], env).returncode == 0
    made = run(
        [
            "workspace",
            "create",
            "Initech",
            "--owner",
            "peter@initech.test",
            "--password",
            "a long password",
        ],
        env,
    )
    assert made.returncode == 0, made.stderr
    again = run(
        [
            "workspace",
            "create",
            "Initech",
            "--owner",
            "peter@initech.test",
            "--password",
            "a long password",
        ],
        env,
    )
    assert again.returncode == 1 and "exists" in again.stderr
    token = run(["token", "create", "--workspace", "Initech", "--email", "peter@initech.test"], env)
    assert token.returncode == 0, token.stderr
    plain = token.stdout.strip()
    assert token.stdout == plain + "\n" and plain.startswith("rpt_")
    database = Database(url)
    with database.session(write=False) as db:
        assert (
            db.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(plain))) is not None
        )
    database.dispose()
    demo = run(["demo"], env)
    assert demo.returncode == 0, demo.stderr
    assert "admin@demo.rapport.test" in demo.stdout and "password" in demo.stdout


def test_an_unsafe_secret_key_is_a_readable_error(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RAPPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "RAPPORT_SECRET_KEY": "changeme",
        "RAPPORT_DEMO": "0",
    }
    r = run(["migrate"], env)
    assert r.returncode == 2
    assert "configuration error" in r.stderr and "RAPPORT_SECRET_KEY" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("url", "code", "said"),
    [
        # Nothing listens on port 1: a driver's traceback of 500 lines said so before.
        (
            "postgresql://rapport@127.0.0.1:1/rapport",
            1,
            "cannot use the database (RAPPORT_DATABASE_URL): connection failed:",
        ),
        # A database Rapport does not run on: a missing driver's ImportError before.
        (
            "mysql://rapport@127.0.0.1/rapport",
            2,
            "configuration error: RAPPORT_DATABASE_URL takes sqlite:///PATH or "
            "postgresql://USER@HOST/DB, not mysql://",
        ),
        ("rapport:S3cret@db/rapport", 2, "not a value without a scheme"),  # never quoted
        # A directory it cannot create.
        ("sqlite:////proc/rapport/x.db", 1, "No such file or directory: /proc/rapport"),
    ],
)
def test_a_database_it_cannot_use_is_a_readable_error(url: str, code: int, said: str) -> None:
    env = {**os.environ, "RAPPORT_DATABASE_URL": url, "RAPPORT_DEMO": "1"}
    r = run(["migrate"], env)
    assert r.returncode == code, r.stderr
    assert said in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 2
    assert "S3cret" not in r.stderr


def test_dead_jobs_are_listed_and_queued_again_from_the_command_line(
    database: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dead-lettered job could be neither seen nor retried but with SQL: retry_dead() was
    # called from tests only.
    monkeypatch.setenv("RAPPORT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RAPPORT_SECRET_KEY", settings.secret_key.get_secret_value())
    acme = dead_job(
        database,
        workspace_id=world.acme.workspace.id,
        error="DeliveryError: provider 503\nTraceback line",
    )
    globex = dead_job(database, workspace_id=world.globex.workspace.id, seconds_ago=60)
    system = dead_job(database, workspace_id=None, name="sla_check", seconds_ago=120)
    runner = CliRunner()

    def jobs(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli_app, ["jobs", *args])
        return result.exit_code, result.output

    code, out = jobs("dead")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "ID", "NAME", "WORKSPACE", "ATTEMPTS", "DIED", "(UTC)", "LAST", "ERROR"
    ]  # fmt: skip
    assert [line.split()[:4] for line in lines[1:]] == [
        [acme, "webhook_deliver", "Acme", "8/8"],
        [globex, "webhook_deliver", "Globex", "8/8"],
        [system, "sla_check", "-", "8/8"],
    ]
    assert lines[1].endswith("DeliveryError: provider 503")  # the error's first line
    code, out = jobs("dead", "--workspace", "Acme", "--limit", "1")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["ID", acme]
    assert jobs("dead", "--workspace", "Initech") == (1, "no workspace Initech\n")
    assert jobs("retry")[0] == 2 and jobs("retry", acme, "--all-dead")[0] == 2
    # One dead job queued again; an id that is no dead job is named, and the exit is 1.
    code, out = jobs("retry", acme, "0" * 32)
    assert code == 1 and out == f"1 job queued again\nno dead job {'0' * 32}\n"
    code, out = jobs("retry", "--all-dead", "--workspace", "Globex")
    assert code == 0 and out == "1 job queued again\n"
    with database.session(write=False) as db:
        states = {j.id: (j.state, j.attempts) for j in db.scalars(select(Job))}
    assert states[acme] == states[globex] == (JobState.queued, 0)
    assert states[system] == (JobState.dead, 8)
    assert jobs("retry", "--all-dead") == (0, "1 job queued again\n")
    assert jobs("dead") == (0, "no dead jobs\n")


def test_turning_off_two_factor_from_the_command_line_lifts_the_lock_out(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Locked out by his own tries without his phone, bob stayed locked after the operator
    # turned his second factor off (an admin's reset lifted it).
    from tests.auth.test_login import _enrol, login

    _enrol(client, world.bob)
    outside = TestClient(client.app, base_url=str(client.base_url))
    for _ in range(10):
        assert login(outside, "bob@acme.test", "wrong password!").status_code == 401
    assert login(outside, "bob@acme.test").status_code == 429
    monkeypatch.setenv("RAPPORT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RAPPORT_SECRET_KEY", settings.secret_key.get_secret_value())
    result = CliRunner().invoke(cli_app, ["user", "totp-off", "bob@acme.test"])
    assert result.exit_code == 0, result.output
    r = login(outside, "bob@acme.test")
    assert r.status_code == 200 and r.json()["mfa_required"] is False
    with database.session(write=False) as db:
        bob = db.get(User, world.acme.users["bob"].id)
        assert bob is not None and (bob.failed_logins, bob.locked_until) == (0, None)


def test_serve_believes_the_proxies_of_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # It read uvicorn's FORWARDED_ALLOW_IPS itself, unvalidated, beside the RAPPORT_ settings.
    import gc

    import uvicorn

    import rapport.app
    import rapport.assistant
    import rapport.logs

    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw))
    # What serve does to its own process, left out of the test's.
    monkeypatch.setattr(rapport.app, "create_app", lambda settings: object())
    monkeypatch.setattr(rapport.assistant, "one_compute_thread", lambda: None)
    monkeypatch.setattr(rapport.logs, "configure", lambda *a: None)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    monkeypatch.setattr(sys, "setswitchinterval", lambda interval: None)
    env = {
        "RAPPORT_DEMO": "1",
        "RAPPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "RAPPORT_FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.168.1.5",
    }
    r = CliRunner().invoke(cli_app, ["serve"], env=env)
    assert r.exit_code == 0, r.output
    assert started["forwarded_allow_ips"] == "10.0.0.0/8,192.168.1.5"
    assert started["proxy_headers"] is True


def test_a_malformed_proxy_address_stops_serve_with_a_readable_error(tmp_path: Path) -> None:
    env = {
        "RAPPORT_DEMO": "1",
        "RAPPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "RAPPORT_FORWARDED_ALLOW_IPS": "10.0.0.1/8",
    }
    r = CliRunner().invoke(cli_app, ["serve", "--port", "1"], env=env)
    assert r.exit_code == 2 and r.exception is not None, r.output
    assert "configuration error: RAPPORT_FORWARDED_ALLOW_IPS takes" in r.stderr
    assert "(the network is 10.0.0.0/8)" in r.stderr


def test_commands_that_load_most_of_the_app_are_imported_only_to_run() -> None:
    # The evaluations and the customer import and export each pull in most of the app; every
    # other command (serve, migrate, token create, ...) started ~0.5 s later for them.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, rapport.cli; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    heavy = ("rapport.channels.email", "rapport.customers.importer", "rapport.customers.cli")
    assert not [m for m in heavy if m in loaded]

    runner = CliRunner()
    listed = runner.invoke(cli_app, ["eval", "--help"], terminal_width=200)
    assert listed.exit_code == 0
    for name in ("emails", "replies", "intents", "sentiment", "identity"):
        assert name in listed.output
    helped = runner.invoke(cli_app, ["import", "customers", "--help"], terminal_width=200)
    assert helped.exit_code == 0
    assert "import customers [OPTIONS]" in helped.output
    assert runner.invoke(cli_app, ["eval", "nonesuch"]).exit_code == 2
    assert "customers" in runner.invoke(cli_app, ["export", "--help"]).output
