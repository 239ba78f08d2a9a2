"""The login budgets' refund gives back exactly what its attempt spent."""

import math
import time
import uuid

import pytest

from rapport.auth import ratelimit
from rapport.auth.ratelimit import RateLimiter, Refused, Spent
from tests.conftest import REDIS_URL


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_refund_takes_back_its_own_attempt_and_no_later_one(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refunded by the clock of the refund, a right password that crossed a window's edge
    # (its argon2 check takes ~90 ms) took back a wrong guess of the next window.
    if store == "redis" and not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    limiter = RateLimiter(limit=3, window=300, redis_url=REDIS_URL if store == "redis" else None)
    key = f"ip:{uuid.uuid4().hex}"
    clock = [300 * 1000 - 0.05]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    right = limiter.take(key)  # a right password, counted first
    assert isinstance(right, Spent)
    clock[0] += 0.1  # while its hash is checked
    wrong = [limiter.take(key) for _ in range(2)]
    assert all(isinstance(w, Spent) for w in wrong)
    assert isinstance(limiter.take(key), Refused)  # the budget is spent
    limiter.refund(right)
    assert isinstance(limiter.take(key), Spent)  # its own moment given back, once
    assert isinstance(limiter.take(key), Refused)
    limiter.refund(right)  # twice gives nothing more back
    assert isinstance(limiter.take(key), Refused)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_budget_spent_at_a_windows_edge_is_not_spent_again_just_after_it(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis counted in fixed windows: the whole budget at the end of one window and all of
    # it again at the start of the next, twice the limit in a moment. Both stores slide.
    if store == "redis" and not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    limiter = RateLimiter(limit=5, window=1.0, redis_url=REDIS_URL if store == "redis" else None)
    key = f"edge:{uuid.uuid4().hex}"
    clock = [1000.0]
    if store == "memory":
        monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])

    def now() -> float:
        return clock[0] if store == "memory" else time.time()

    def wait_until(moment: float) -> None:
        if store == "memory":
            clock[0] = max(clock[0], moment)
        else:  # Redis counts by its own clock, this machine's: the test sleeps
            time.sleep(max(0.0, moment - time.time()))

    edge = math.floor(now()) + 1  # where a window of one second turned
    if edge - now() < 0.2:
        edge += 1
    wait_until(edge - 0.2)
    assert all(limiter.hit(key) for _ in range(5))
    spent = now()
    wait_until(edge + 0.02)
    assert not any(limiter.hit(key) for _ in range(5))
    wait_until(spent + 1.02)  # the first hits a window old: the budget is back
    assert limiter.hit(key)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_refusal_says_when_the_oldest_hit_leaves_the_window_not_the_whole_window(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retry-After said the window's length (300 s for logins) when the budget came back as
    # soon as the oldest hit counted left it: a client that obeyed waited for nothing.
    if store == "redis" and not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    window = 300 if store == "memory" else 2.0
    limiter = RateLimiter(limit=2, window=window, redis_url=REDIS_URL if store == "redis" else None)
    key = f"wait:{uuid.uuid4().hex}"
    clock = [1000.0]
    if store == "memory":
        monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])

    def wait(seconds: float) -> None:
        if store == "memory":
            clock[0] += seconds
        else:  # Redis counts by its own clock: the test sleeps
            time.sleep(seconds)

    now = ratelimit.time.monotonic  # the test's clock (Redis: the same real time)
    before_first = now()
    assert limiter.hit(key)
    after_first = now()
    wait(window * 0.6)
    assert limiter.hit(key)
    wait(window * 0.2)
    before_take = now()
    refused = limiter.take(key)
    after_take = now()
    assert isinstance(refused, Refused)
    # The first hit leaves the window a window after it was counted, which is between the
    # calls' starts and ends (on a loaded machine the sleeps ran long: timed, not assumed).
    slack = 0.005  # Redis's clock and ours, read a moment apart
    assert window - (after_take - before_first) - slack <= refused.seconds
    assert refused.seconds <= window - (before_take - after_first) + slack
    assert refused.seconds < window * 0.2 + slack  # not the whole window
    assert refused.retry_after == math.ceil(refused.seconds)
    wait(refused.seconds + 0.01)
    assert limiter.hit(key)  # back when it said


def test_a_retry_after_is_whole_seconds_rounded_up_and_never_zero() -> None:
    assert [Refused(s).retry_after for s in (0.0, 0.0004, 1.0, 1.2, 59.99)] == [1, 1, 1, 2, 60]


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
