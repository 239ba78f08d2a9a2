"""Login rate limiting: a sliding window per key, in memory or in Redis when configured."""

import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from rapport.problems import TooMany, wait_text

# One hit of a key's sliding window in Redis, in one step: its hits are a sorted set scored
# by their moment, those older than the window dropped, and this one added only if fewer
# than the limit are left (counted in fixed windows, a budget was spent twice around a
# window's edge: all of it at the end of one and again at the start of the next). The
# moment is Redis's clock, the one every process sharing the budget agrees on. KEYS[1]: the
# key's set; ARGV: the limit, the window in microseconds, a member naming this hit. Returns
# {1, 0} when the hit was counted, else {0, microseconds until the oldest hit counted leaves
# the window}: the moment the next one would be, worked out by the same clock.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
  if oldest == nil then return {0, window} end
  return {0, tonumber(oldest) + window - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return {1, 0}
"""

# Keys held in memory before those whose window has passed are forgotten.
_KEYS_KEPT = 100_000


@dataclass(frozen=True)
class Spent:
    """One attempt counted: its key, and which (its moment in this process's window, or the
    member it added to the key's set in Redis)."""

    key: str
    at: float
    member: str | None


@dataclass(frozen=True)
class Refused:
    """A hit over the limit: ``seconds`` until the key's oldest hit counted leaves the
    window, giving back room for the next (not the whole window: the budget slides)."""

    seconds: float

    @property
    def retry_after(self) -> int:
        """The wait as a Retry-After header says it: whole seconds, rounded up, at least 1."""
        return max(1, math.ceil(self.seconds))

    def say(self, what: str) -> str:
        """``what`` was refused, and when to try again, as Retry-After says it: a budget
        slides, so that may be seconds, not "a few minutes"."""
        return f"{what}: try again in {wait_text(self.retry_after)}"


class RateLimiter:
    """At most ``limit`` hits per ``window`` seconds for each key."""

    def __init__(self, *, limit: int, window: float, redis_url: str | None = None) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._prune_at = _KEYS_KEPT
        self._lock = threading.Lock()
        self._redis: Any = None
        if redis_url:
            import redis

            # A Redis that stops answering costs a login a second, never hangs it.
            self._redis = redis.Redis.from_url(
                redis_url, socket_timeout=1, socket_connect_timeout=1
            )
            self._hit = self._redis.register_script(_HIT)

    def hit(self, key: str) -> bool:
        """Count one attempt; False when the key is over its limit."""
        return isinstance(self.take(key), Spent)

    def spend(self, key: str, detail: str) -> Spent:
        """Count one attempt; over the limit, 429 with a Retry-After of when the next would
        count, and ``detail`` ("too many login attempts") saying that wait after it."""
        taken = self.take(key)
        if isinstance(taken, Refused):
            raise TooMany(taken.say(detail), seconds=taken.retry_after)
        return taken

    def take(self, key: str) -> Spent | Refused:
        """Count one attempt and return what it spent (for ``refund``); when the key is
        over its limit, how long until it is not."""
        if self._redis is not None:
            try:
                return self._take_redis(key)
            except Exception:  # noqa: S110 - Redis down: fall back to this process's own count
                pass
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return Refused(q[0] + self.window - now if q else self.window)
            q.append(now)
            if len(self._hits) > self._prune_at:
                self._prune(now)
            return Spent(key, now, None)

    def _prune(self, now: float) -> None:
        """Forget the keys with no hit left in the window (a spray of keys, each used once,
        kept every one of them: a key's old hits only went when it was used again). Keys
        still counting are kept, however many: dropping one would give its budget back to
        whoever sprayed the others. The next pruning waits until the keys kept have
        doubled, so a window full of live keys is not copied again at every hit."""
        self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
        self._prune_at = max(_KEYS_KEPT, 2 * len(self._hits))

    def _take_redis(self, key: str) -> Spent | Refused:
        member = secrets.token_hex(8)
        window = max(1, round(self.window * 1_000_000))
        taken, wait = self._hit(keys=[_redis_key(key)], args=[self.limit, window, member])
        return Spent(key, 0.0, member) if int(taken) else Refused(int(wait) / 1_000_000)

    def refund(self, spent: Spent) -> None:
        """Take back exactly what ``take`` spent (its own moment, never a later attempt's):
        it turned out not to be an attempt to limit (a password that was right)."""
        if spent.member is not None:
            if self._redis is not None:
                try:
                    self._redis.zrem(_redis_key(spent.key), spent.member)
                except Exception:  # noqa: S110 - Redis down: nothing of ours to take back
                    pass
            return
        with self._lock:
            q = self._hits.get(spent.key)
            if q and spent.at in q:
                q.remove(spent.at)

    def reset(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)


def _redis_key(key: str) -> str:
    return f"rapport:window:{key}"
