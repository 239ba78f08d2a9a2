"""Login rate limiting: a sliding window per key, in memory or in Redis when configured."""

import threading
import time
from collections import deque
from typing import Any


class RateLimiter:
    """At most ``limit`` hits per ``window`` seconds for each key."""

    def __init__(self, *, limit: int, window: float, redis_url: str | None = None) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
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
        if self._redis is not None:
            try:
                return self._hit_redis(key)
            except Exception:  # noqa: S110 - Redis down: fall back to this process's own count
                pass
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return False
            q.append(now)
            if len(self._hits) > 100_000:  # bound memory under a spray of keys
                self._hits = {k: v for k, v in self._hits.items() if v}
            return True

    def _hit_redis(self, key: str) -> bool:
        bucket = int(time.time() // self.window)
        name = f"rapport:rl:{key}:{bucket}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, int(self.window) + 1)
        count, _ = pipe.execute()
        return int(count) <= self.limit

    def refund(self, key: str) -> None:
        """Take back the key's latest hit: what it counted turned out not to be an attempt
        to limit (a password that was right)."""
        if self._redis is not None:
            try:
                name = f"rapport:rl:{key}:{int(time.time() // self.window)}"
                if int(self._redis.decr(name)) < 0:
                    self._redis.set(name, 0, ex=int(self.window) + 1)
                return
            except Exception:  # noqa: S110 - Redis down: this process's own count, as hit
                pass
        with self._lock:
            q = self._hits.get(key)
            if q:
                q.pop()

    def reset(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)
