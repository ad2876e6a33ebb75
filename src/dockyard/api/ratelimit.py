"""Per-credential token-bucket rate limiting (in memory, per server process)."""

from __future__ import annotations

import math
import threading
import time

from dockyard.errors import RateLimited


class RateLimiter:
    def __init__(self, per_minute: int, *, burst: int | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(per_minute // 4, 20))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                retry = max(1, math.ceil((1 - tokens) / self.rate))
                raise RateLimited(
                    f"Too many requests with this token; retry in {retry} s.", retry_after=retry
                )
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > 100_000:
                self._buckets.clear()  # bounded memory under a flood of distinct keys
