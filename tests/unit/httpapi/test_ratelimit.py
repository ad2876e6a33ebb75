"""The rate limiter's tables stay bounded without resetting anyone's limit."""

from __future__ import annotations

import pytest

from dockyard.api.ratelimit import RateLimiter
from dockyard.clientaddress import address_key
from dockyard.errors import RateLimited


def test_a_flood_of_failing_addresses_never_resets_a_users_limit() -> None:
    limiter = RateLimiter(1, burst=2, max_buckets=50)
    limiter.check_user("alice")
    limiter.check_user("alice")
    with pytest.raises(RateLimited):
        limiter.check_user("alice")
    for n in range(5_000):
        limiter.count_failure(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter.failures) <= 50
    with pytest.raises(RateLimited):
        limiter.check_user("alice")


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"
