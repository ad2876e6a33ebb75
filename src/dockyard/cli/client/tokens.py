"""The API token is exchanged for a short-lived JWT, which is what every request carries.

The JWT is cached (in the configuration file) with its ``exp`` and renewed when less than
five minutes remain, as the official client does, so a long build followed right after a
command never starts with a token about to lapse. The cache entry names the URL and API
token it was made for (by a digest), so logging in elsewhere never reuses a stale JWT.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RENEW_MARGIN_SECONDS = 300


@dataclass(frozen=True)
class CachedJwt:
    token: str
    exp: float
    fingerprint: str

    def as_dict(self) -> dict[str, Any]:
        return {"token": self.token, "exp": self.exp, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: object) -> CachedJwt | None:
        if not isinstance(data, dict):
            return None
        token, exp, fingerprint = data.get("token"), data.get("exp"), data.get("fingerprint")
        if isinstance(token, str) and isinstance(exp, int | float) and isinstance(fingerprint, str):
            return cls(token=token, exp=float(exp), fingerprint=fingerprint)
        return None


def fingerprint(api_url: str, api_token: str) -> str:
    return hashlib.sha256(f"{api_url}\0{api_token}".encode()).hexdigest()[:16]


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim, read without checking the signature (only the server can)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


class TokenManager:
    """Hands out a JWT with at least five minutes left, exchanging the API token when needed."""

    def __init__(
        self,
        *,
        fingerprint: str,
        exchange: Callable[[], str],
        cached: CachedJwt | None = None,
        on_renew: Callable[[CachedJwt], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fingerprint = fingerprint
        self._exchange = exchange
        self._cached = cached if cached is not None and cached.fingerprint == fingerprint else None
        self._on_renew = on_renew
        self._clock = clock

    def token(self) -> str:
        if self._cached is not None and self._cached.exp - self._clock() >= RENEW_MARGIN_SECONDS:
            return self._cached.token
        fresh = self._exchange()
        # A JWT without exp (the contract says it never is) is used once and never cached.
        exp = jwt_expiry(fresh) or self._clock()
        self._cached = CachedJwt(token=fresh, exp=exp, fingerprint=self._fingerprint)
        if self._on_renew is not None:
            self._on_renew(self._cached)
        return fresh

    def forget(self) -> None:
        """Drop the cached JWT (the server refused it: revoked, or signed by an old key)."""
        self._cached = None
