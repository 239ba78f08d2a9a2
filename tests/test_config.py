"""Settings refuse unsafe defaults and read secrets from files."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from rapport.config import Settings, sqlalchemy_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RAPPORT_SECRET_KEY",
        "RAPPORT_SECRET_KEY_FILE",
        "RAPPORT_DEMO",
        "RAPPORT_DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("secret", ["", "changeme", "secret", "too-short-but-not-placeholder"])
def test_a_missing_placeholder_or_short_secret_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("RAPPORT_SECRET_KEY", secret)
    with pytest.raises(ValidationError, match="RAPPORT_SECRET_KEY"):
        Settings()


def test_demo_mode_runs_without_a_secret_key() -> None:
    assert Settings(demo=True).secret_key.get_secret_value()


def test_the_secret_key_can_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "key"
    path.write_text("k" * 48 + "\n")
    monkeypatch.setenv("RAPPORT_SECRET_KEY_FILE", str(path))
    assert Settings().secret_key.get_secret_value() == "k" * 48


def test_plain_database_urls_get_the_driver_rapport_uses() -> None:
    assert sqlalchemy_url("sqlite:///var/x.db") == "sqlite+pysqlite:///var/x.db"
    assert sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"


def test_cookies_are_secure_behind_https() -> None:
    assert Settings(demo=True, public_url="https://support.example.com").secure_cookies
    assert not Settings(demo=True, public_url="http://127.0.0.1:8000").secure_cookies


def test_dead_jobs_are_kept_thirty_days_unless_told_and_never_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(demo=True).dead_job_retention_days == 30
    monkeypatch.setenv("RAPPORT_DEAD_JOB_RETENTION_DAYS", "7")
    assert Settings(demo=True).dead_job_retention_days == 7
    monkeypatch.setenv("RAPPORT_DEAD_JOB_RETENTION_DAYS", "0")  # every dead job, unseen
    with pytest.raises(ValidationError, match="dead_job_retention_days"):
        Settings(demo=True)
