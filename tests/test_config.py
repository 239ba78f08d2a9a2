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
        "RAPPORT_FORWARDED_ALLOW_IPS",
        "RAPPORT_FORWARDED_ALLOW_IPS_FILE",
        "FORWARDED_ALLOW_IPS",
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


def test_the_proxies_believed_are_a_rapport_setting_of_addresses_and_networks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings(demo=True).forwarded_allow_ips == "127.0.0.1"
    monkeypatch.setenv("RAPPORT_FORWARDED_ALLOW_IPS", " 10.0.0.0/8, 192.168.1.5,fd00::/8 ")
    assert Settings(demo=True).forwarded_allow_ips == "10.0.0.0/8,192.168.1.5,fd00::/8"
    monkeypatch.setenv("RAPPORT_FORWARDED_ALLOW_IPS", "*")
    assert Settings(demo=True).forwarded_allow_ips == "*"
    monkeypatch.delenv("RAPPORT_FORWARDED_ALLOW_IPS")
    path = tmp_path / "proxies"
    path.write_text("10.1.2.3\n")
    monkeypatch.setenv("RAPPORT_FORWARDED_ALLOW_IPS_FILE", str(path))
    assert Settings(demo=True).forwarded_allow_ips == "10.1.2.3"


def test_uvicorns_own_name_for_the_proxies_is_still_read_unless_rapports_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A deployment that set it before would otherwise believe no proxy of its own: the
    # balancer would be every client's address.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.7")
    assert Settings(demo=True).forwarded_allow_ips == "10.0.0.7"
    monkeypatch.setenv("RAPPORT_FORWARDED_ALLOW_IPS", "10.0.0.8")
    assert Settings(demo=True).forwarded_allow_ips == "10.0.0.8"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        # uvicorn took each of these for a name no client has: the proxy not believed.
        ("10.0.0.5/8", "not '10.0.0.5/8' (the network is 10.0.0.0/8)"),
        ("proxy.internal", "not 'proxy.internal'"),
        ("10.0.0.1;10.0.0.2", "not '10.0.0.1;10.0.0.2'"),
        ("10.0.0.1,*", "not * among others"),
    ],
)
def test_a_malformed_proxy_address_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    monkeypatch.setenv("RAPPORT_FORWARDED_ALLOW_IPS", value)
    with pytest.raises(ValidationError, match="RAPPORT_FORWARDED_ALLOW_IPS") as refused:
        Settings(demo=True)
    assert said in str(refused.value)
