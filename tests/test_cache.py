"""Per-process caches: what a process forgets is not cached again until its change has had
time to commit, and every process sharing Redis forgets it too."""

import time

import pytest

from rapport import cache
from rapport.auth.deps import PrincipalCache
from tests.conftest import REDIS_URL


def test_a_forgotten_key_is_read_afresh_until_its_change_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache, "HOLD", 0.2)
    rules: cache.TtlCache[str, int] = cache.TtlCache(ttl=60, name="test_rules")
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    assert rules.get("ws", load) == 1 and rules.get("ws", load) == 1  # cached
    rules.forget("ws")
    # The change behind the forget commits a moment later: until the hold ends, each read
    # loads (a value cached now could be the old one for a whole minute).
    assert rules.get("ws", load) == 2 and rules.get("ws", load) == 3
    assert rules.get("other", load) == 4 and rules.get("other", load) == 4  # others unheld
    time.sleep(0.25)
    assert rules.get("ws", load) == 5 and rules.get("ws", load) == 5


def test_principals_are_looked_up_afresh_after_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "HOLD", 0.2)
    principals = PrincipalCache()
    principals.put("token:a", None)
    assert principals.get("token:a") == (True, None)
    principals.forget()
    assert principals.get("token:a") == (False, None)
    principals.put("token:a", None)  # looked up before the change committed: not kept
    assert principals.get("token:a") == (False, None)
    time.sleep(0.25)
    principals.put("token:a", None)
    assert principals.get("token:a") == (True, None)


@pytest.mark.redis
def test_what_one_process_forgets_the_others_hear_over_redis() -> None:
    if not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    rules: cache.TtlCache[str, str] = cache.TtlCache(ttl=60, name="test_heard")
    rules.get("ws", lambda: "old")
    here, there = cache.RedisForgetting(REDIS_URL), cache.RedisForgetting(REDIS_URL)
    here.start()
    there.start()
    try:
        # "there" stands for another process: it publishes, "here" hears and forgets.
        there.publish("test_heard", "ws")
        deadline = time.monotonic() + 5
        while rules.peek("ws") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rules.peek("ws") is None
        assert rules.get("ws", lambda: "new") == "new"
    finally:
        here.stop()
        there.stop()


def test_a_cache_read_per_message_keeps_a_held_key_a_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The ingest writer read a workspace's trained models from the database once per
    # message for seconds after each retraining: nothing loaded while held was kept.
    monkeypatch.setattr(cache, "HOLD", 10.0)  # held throughout
    models: cache.TtlCache[str, int] = cache.TtlCache(ttl=60, name="test_models", held_ttl=0.1)
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    assert models.get("ws", load) == 1
    models.forget("ws")
    assert models.get("ws", load) == 2 and models.get("ws", load) == 2  # kept a moment
    time.sleep(0.15)
    assert models.get("ws", load) == 3  # held still: read again, the change may be in now
    assert models.get("ws", load) == 3
    # Forgotten while it loaded, a value is not kept even for the moment.
    drops = models.drops
    models.forget("ws")
    models.put("ws", 99, loaded_after=drops)
    assert models.found("ws") == (False, None)
