"""The login budgets' refund gives back exactly what its attempt spent."""

import uuid

import pytest

from rapport.auth import ratelimit
from rapport.auth.ratelimit import RateLimiter
from tests.conftest import REDIS_URL


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_refund_takes_back_its_own_attempt_even_after_the_window_turned(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refunded by the clock of the refund, a right password that crossed a window's edge
    # (its argon2 check takes ~90 ms) took back a wrong guess of the next window.
    if store == "redis" and not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    limiter = RateLimiter(limit=3, window=300, redis_url=REDIS_URL if store == "redis" else None)
    key = f"ip:{uuid.uuid4().hex}"
    clock = [300 * 1000 - 0.05]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    right = limiter.take(key)  # a right password, counted first
    assert right is not None
    clock[0] += 0.1  # the window turns (Redis) while its hash is checked
    wrong = [limiter.take(key) for _ in range(2 if store == "memory" else 3)]
    assert all(w is not None for w in wrong)
    assert limiter.take(key) is None  # the budget is spent
    limiter.refund(right)
    if store == "redis":
        assert limiter.take(key) is None  # the new window's guesses stay counted
    else:
        assert limiter.take(key) is not None  # its own moment given back, once
        assert limiter.take(key) is None
    limiter.refund(right)  # twice gives nothing more back
    assert limiter.take(key) is None


def test_keys_sprayed_once_are_forgotten_once_their_window_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each key's old hits went only when that key was used again, so a spray of keys used
    # once (a visitor id, an address, an email each time) was kept for ever, and past the
    # bound every hit copied them all once more.
    limiter = RateLimiter(limit=5, window=60)
    clock = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ratelimit, "_KEYS_KEPT", 1000)
    monkeypatch.setattr(limiter, "_prune_at", 1000)
    for i in range(999):  # with "kept", the bound's 1000 keys
        assert limiter.hit(f"spray:{i}")
    for _ in range(5):
        assert limiter.hit("kept")
    clock[0] += 61
    assert limiter.hit("late")  # one more key past the bound: the stale ones go
    assert set(limiter._hits) == {"late"}
    # Keys still counting are never dropped to make room: "again" stays spent.
    for _ in range(5):
        assert limiter.hit("again")
    for i in range(3000):
        limiter.hit(f"live:{i}")
    assert not limiter.hit("again")
    assert len(limiter._hits) == 3002
    # and the keys are not copied again at every hit once the live ones pass the bound
    assert limiter._prune_at >= 2000
