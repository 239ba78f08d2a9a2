"""Login rate limiting: a sliding window per key, in memory or in Redis when configured."""

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

# A Redis bucket's count less one, never below nothing, in one step (a concurrent INCR is
# never lost, and a bucket that expired meanwhile is not made again without a TTL).
_REFUND = """
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""

# Keys held in memory before those whose window has passed are forgotten.
_KEYS_KEPT = 100_000


@dataclass(frozen=True)
class Spent:
    """One attempt counted: its key, and where (a moment in this process's window, or the
    Redis bucket it went into)."""

    key: str
    at: float
    bucket: str | None


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

    def hit(self, key: str) -> bool:
        """Count one attempt; False when the key is over its limit."""
        return self.take(key) is not None

    def take(self, key: str) -> Spent | None:
        """Count one attempt and return what it spent (for ``refund``); None when the key
        is over its limit."""
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
                return None
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

    def _take_redis(self, key: str) -> Spent | None:
        bucket = int(time.time() // self.window)
        name = f"rapport:rl:{key}:{bucket}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, int(self.window) + 1)
        count, _ = pipe.execute()
        return Spent(key, 0.0, name) if int(count) <= self.limit else None

    def refund(self, spent: Spent) -> None:
        """Take back exactly what ``take`` spent (the same bucket, the same moment, even if
        the window turned meanwhile): it turned out not to be an attempt to limit (a
        password that was right)."""
        if spent.bucket is not None:
            if self._redis is not None:
                try:
                    self._redis.eval(_REFUND, 1, spent.bucket)
                    return
                except Exception:  # noqa: S110 - Redis down: nothing of ours to take back
                    return
            return
        with self._lock:
            q = self._hits.get(spent.key)
            if q and spent.at in q:
                q.remove(spent.at)

    def reset(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)
