"""Dashboard sign-ins: an API token exchanged for a session the browser keeps in a cookie.

The cookie carries a random secret; the table keeps only its SHA-256 digest (as for API
tokens), so a copy of the database signs nobody in. A session ends when it expires, when
its user signs out, or when the user is deleted (the row cascades).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import User, WebSession
from dockyard.domain.records import UserRecord
from dockyard.errors import Unauthenticated
from dockyard.services.auth import Grant, api_token_for_secret, hash_token
from dockyard.services.clock import as_utc, now
from dockyard.services.records import user_record


@dataclass(frozen=True)
class SignedIn:
    user: UserRecord
    secret: str  # for the cookie; never stored
    expires_at: datetime


def sign_in(*, db: sessionmaker[Session], api_token: str, ttl: timedelta) -> SignedIn:
    """A new session for the owner of ``api_token`` (checked as the API checks it)."""
    grant = api_token_for_secret(db=db, secret=api_token)
    user = grant.user
    secret = secrets.token_urlsafe(32)
    stamp = now()
    with transaction(db) as session:
        # Expired sessions of anyone are swept here, so the table stays the size of the
        # sessions in use without a background job.
        session.execute(delete(WebSession).where(WebSession.expires_at < stamp))
        session.add(
            WebSession(
                id=hash_token(secret),
                user_id=user.id,
                token_id=grant.token_id,
                created_at=stamp,
                expires_at=stamp + ttl,
            )
        )
    return SignedIn(user=user, secret=secret, expires_at=stamp + ttl)


def user_for_session(*, db: sessionmaker[Session], secret: str) -> Grant:
    """Whose a live session is, and the API token it was opened with; an unknown or
    expired one (or one whose token was revoked: the row is gone) is Unauthenticated."""
    with transaction(db) as session:
        row = session.get(WebSession, hash_token(secret)) if secret else None
        if row is None or as_utc(row.expires_at) <= now():
            raise Unauthenticated("Your session has ended: sign in again.")
        user = session.get(User, row.user_id)
        if user is None:
            raise Unauthenticated("Your session has ended: sign in again.")
        return Grant(token_id=row.token_id, user=user_record(user))


def sign_out(*, db: sessionmaker[Session], secret: str) -> None:
    with transaction(db) as session:
        session.execute(delete(WebSession).where(WebSession.id == hash_token(secret)))


def active_sessions(*, db: sessionmaker[Session], user: UserRecord) -> int:
    """How many live sessions ``user`` has (for tests and the admin's eye)."""
    with transaction(db) as session:
        rows = session.scalars(
            select(WebSession.id).where(
                WebSession.user_id == user.id, WebSession.expires_at > now()
            )
        )
        return len(list(rows))
