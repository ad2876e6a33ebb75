"""Who may read an app's logs through its logs URL, and what they read.

``scalingo logs`` first asks ``GET /v1/apps/{app}/logs`` for a ``logs_url``, then reads
that URL with no Authorization header (API-OPS.md §4): the token in its query string is
the only credential. So that token is a capability for one app's logs only, short-lived,
and kept only as its SHA-256 digest, compared in constant time (as source tokens are).

Grants are rows of the database (``log_grants``), so that a URL handed out by one API
process opens the logs through any other (separate processes behind a load balancer);
expired ones are deleted as new ones are issued.
This module is a security boundary.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App, LogGrant
from dockyard.domain.records import AppRecord, UserRecord
from dockyard.errors import NotFound, Unauthenticated
from dockyard.services.apps import find_app
from dockyard.services.auth import hash_token, new_secret_token
from dockyard.services.clock import as_utc

LOGS_URL_TTL_SECONDS = 600
TOKEN_PREFIX = "lt-"  # noqa: S105 - a prefix, not a secret


class LogTokens:
    """Digest → (app, expiry), in the database."""

    def __init__(
        self,
        db: sessionmaker[Session],
        *,
        ttl: float = LOGS_URL_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.clock = clock

    def issue(self, app_id: str) -> tuple[str, int]:
        """A new token for ``app_id``'s logs and the time it was issued (Unix seconds)."""
        token = new_secret_token(TOKEN_PREFIX)
        issued = self.clock()
        with transaction(self.db) as session:
            session.execute(delete(LogGrant).where(LogGrant.expires_at < _at(issued)))
            session.add(
                LogGrant(token_hash=hash_token(token), app_id=app_id, expires_at=_at(issued + self.ttl))
            )
        return token, int(issued)

    def allows(self, token: str, app_id: str) -> bool:
        digest = hash_token(token or "")
        with transaction(self.db) as session:
            grant = session.get(LogGrant, digest)
            if grant is None or as_utc(grant.expires_at) <= _at(self.clock()):
                return False
            return hmac.compare_digest(grant.app_id.encode(), app_id.encode())


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def logs_url(
    *,
    db: sessionmaker[Session],
    tokens: LogTokens,
    owner: UserRecord,
    name: str,
    base_url: str,
) -> tuple[AppRecord, str]:
    """The app and a URL that reads its logs for ``tokens.ttl`` seconds. It already has a
    query string: the client appends ``&stream=true`` to it as a raw string."""
    app = find_app(db=db, owner=owner, name=name)
    token, issued = tokens.issue(app.id)
    return app, f"{base_url}/v1/logs/{app.id}?token={token}&timestamp={issued}"


def app_for_token(*, db: sessionmaker[Session], tokens: LogTokens, app_id: str, token: str) -> str:
    """The name of the app whose logs ``token`` opens (``app_id``), or a refusal."""
    if not tokens.allows(token, app_id):
        raise Unauthenticated(
            "This logs URL is not valid (or expired): ask GET /v1/apps/{app}/logs for a new one."
        )
    with transaction(db) as session:
        app = session.get(App, app_id)
        if app is None:
            # The URL was valid: the client says "there is no log" on a 404 rather than fail.
            raise NotFound("app")
        return app.name


def app_exists(*, db: sessionmaker[Session], app_id: str) -> bool:
    """Whether the app a logs stream follows is still there."""
    with transaction(db) as session:
        return session.get(App, app_id) is not None
