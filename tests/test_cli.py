"""The CLI interfaces outside tools rely on."""

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from rapport.auth.models import ApiToken
from rapport.auth.security import token_hash
from rapport.db import Database

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
