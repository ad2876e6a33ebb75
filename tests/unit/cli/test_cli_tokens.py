"""JWT caching and renewal, with a fake clock."""

from __future__ import annotations

import base64
import json

from dockyard.cli.client.tokens import CachedJwt, TokenManager, jwt_expiry


def make_jwt(exp: float) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part({'sub': 'u', 'exp': exp})}.c2ln"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Exchanger:
    """Issues JWTs living one hour from the fake clock's time, counting exchanges."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return make_jwt(self.clock.now + 3600)


def test_expiry_is_read_from_the_payload() -> None:
    assert jwt_expiry(make_jwt(1234)) == 1234
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None


def test_token_is_reused_until_five_minutes_remain() -> None:
    clock = FakeClock(1_000_000)
    exchange = Exchanger(clock)
    renewed: list[CachedJwt] = []
    manager = TokenManager(fingerprint="f", exchange=exchange, on_renew=renewed.append, clock=clock)
    first = manager.token()
    clock.now += 3600 - 301  # 301 s left: still good
    assert manager.token() == first
    assert exchange.calls == 1
    clock.now += 2  # 299 s left: renewed
    second = manager.token()
    assert second != first
    assert exchange.calls == 2
    assert [entry.token for entry in renewed] == [first, second]
    assert renewed[-1].exp == clock.now + 3600


def test_cached_token_from_the_file_is_used_only_for_the_same_credentials() -> None:
    clock = FakeClock(1_000_000)
    exchange = Exchanger(clock)
    cached = CachedJwt(token=make_jwt(clock.now + 1800), exp=clock.now + 1800, fingerprint="mine")
    assert (
        TokenManager(fingerprint="mine", exchange=exchange, cached=cached, clock=clock).token()
        == cached.token
    )
    assert exchange.calls == 0
    assert (
        TokenManager(fingerprint="other", exchange=exchange, cached=cached, clock=clock).token()
        != cached.token
    )
    assert exchange.calls == 1


def test_expired_cache_and_forget_both_exchange_again() -> None:
    clock = FakeClock(1_000_000)
    exchange = Exchanger(clock)
    stale = CachedJwt(token="old", exp=clock.now - 10, fingerprint="f")
    manager = TokenManager(fingerprint="f", exchange=exchange, cached=stale, clock=clock)
    assert manager.token() != "old"
    manager.forget()
    manager.token()
    assert exchange.calls == 2


def test_cache_entries_round_trip_and_junk_is_ignored() -> None:
    entry = CachedJwt(token="t", exp=5.0, fingerprint="f")
    assert CachedJwt.from_dict(entry.as_dict()) == entry
    assert CachedJwt.from_dict({"token": "t"}) is None
    assert CachedJwt.from_dict("x") is None
