"""The tests' own factories."""

from functools import cache

import pytest
from py3langid.langid import LanguageIdentifier

from rapport.assistant import triage
from rapport.config import Settings
from rapport.db import Database
from tests.conftest import record_write_lock, sqlite_only
from tests.factories import build_world


@sqlite_only
def test_the_world_is_built_with_no_write_lock_held_while_triage_loads(
    monkeypatch: pytest.MonkeyPatch, database: Database, settings: Settings
) -> None:
    # A fresh cache: the language model loads again, as in a process's first test.
    monkeypatch.setattr(triage, "_language_model", cache(triage._language_model.__wrapped__))
    loading = record_write_lock(monkeypatch, LanguageIdentifier, "from_modelpath", database)
    build_world(database, settings)
    assert loading == [False]
