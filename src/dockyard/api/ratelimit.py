"""Rate limiting with token buckets (in memory, per server process).

Buckets are keyed on what a client cannot mint at will: the *verified* user of a request,
and, for credentials that fail verification, the client's address (an IPv6 client by its
/64, which one machine usually holds whole). Keyed on the credential as sent, as before,
every random token got a fresh bucket, so random tokens were never limited and each cost
a database lookup; and filling the table with them emptied it, everyone's limits with it.

The two kinds live in separate tables, so a flood of addresses can never push a user's
bucket out. Each table holds at most ``max_buckets``; past that, buckets that have
refilled go first (they hold nothing a new one would not), then the least recently used.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from dockyard.clientaddress import address_key
from dockyard.errors import RateLimited

MAX_BUCKETS = 100_000


class Buckets:
    """Token buckets by key, ``per_minute`` refill, ``burst`` capacity."""

    def __init__(self, per_minute: int, *, burst: int, max_buckets: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, what: str) -> None:
        """Take one from ``key``'s bucket, or raise RateLimited saying ``what``."""
        with self._lock:
            tokens, now = self._refilled(key)
            if tokens < 1:
                self._store(key, tokens, now)
                raise self._limited(tokens, what)
            self._store(key, tokens - 1, now)

    def refuse_if_empty(self, key: str, what: str) -> None:
        """Raise RateLimited if ``key``'s bucket is empty, without taking from it."""
        with self._lock:
            tokens, _ = self._refilled(key)
            if tokens < 1:
                raise self._limited(tokens, what)

    def charge(self, key: str) -> None:
        """Take one from ``key``'s bucket if it holds any; never refuses."""
        with self._lock:
            tokens, now = self._refilled(key)
            self._store(key, max(0.0, tokens - 1), now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: str) -> tuple[float, float]:
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - stamp) * self.rate), now

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_buckets:
            self._evict(now)

    def _evict(self, now: float) -> None:
        refilled = [
            key
            for key, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * self.rate >= self.capacity
        ]
        for key in refilled:
            del self._buckets[key]
        # Down to 90 %, so that the scan above is not repeated on every request.
        while len(self._buckets) > self.max_buckets * 9 // 10:
            self._buckets.popitem(last=False)

    def _limited(self, tokens: float, what: str) -> RateLimited:
        retry = max(1, math.ceil((1 - tokens) / self.rate))
        return RateLimited(f"{what}; retry in {retry} s.", retry_after=retry)


class RateLimiter:
    """Requests per verified user, and failed authentications per client address, each
    at ``per_minute`` with a burst of a quarter of it (at least 20)."""

    def __init__(
        self, per_minute: int, *, burst: int | None = None, max_buckets: int = MAX_BUCKETS
    ) -> None:
        capacity = burst if burst is not None else max(per_minute // 4, 20)
        self.users = Buckets(per_minute, burst=capacity, max_buckets=max_buckets)
        self.failures = Buckets(per_minute, burst=capacity, max_buckets=max_buckets)

    def check_user(self, user_id: str) -> None:
        self.users.take(user_id, "Too many requests for this user")

    def refuse_if_failing(self, host: str) -> None:
        """Before a credential is looked up: refuse an address whose credentials kept
        failing, so random tokens cannot make the server look each one up."""
        self.failures.refuse_if_empty(
            address_key(host), "Too many invalid credentials from your address"
        )

    def count_failure(self, host: str) -> None:
        self.failures.charge(address_key(host))
