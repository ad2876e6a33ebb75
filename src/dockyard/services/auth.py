"""Users, API tokens and JWTs.

API tokens are shown once and stored only as SHA-256 digests (they carry 256 bits of
entropy, so a slow hash would add nothing). JWTs are HS256, signed with a secret kept in
the data dir (0600) and generated on first start — on PostgreSQL, in the database, so that
every API process signs and checks with the same key (``shared_secret``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import ApiToken, PlatformSecret, User
from dockyard.domain.records import TokenRecord, UserRecord
from dockyard.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from dockyard.services.clock import new_id, now
from dockyard.services.records import token_record, user_record

API_TOKEN_PREFIX = "tk-us-"  # noqa: S105 - a public prefix, as Scalingo prints tokens
JWT_ALGORITHM = "HS256"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def load_or_create_secret(path: Path) -> bytes:
    """The JWT signing key, created once with mode 0600."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another process won the race: use its key
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


JWT_KEY_NAME = "jwt-key"


def shared_secret(*, db: sessionmaker[Session], name: str, initial: Callable[[], bytes]) -> bytes:
    """A key every process of one dockyard shares through the database (separate api
    processes have no data directory in common): the stored one, else ``initial()``
    stored (this process's key file, so that ``serve`` moving to PostgreSQL keeps it).
    Of processes racing to store one, the first wins and the others use its key."""
    with transaction(db) as session:
        stored = session.get(PlatformSecret, name)
        if stored is not None:
            return bytes.fromhex(stored.value)
    try:
        with transaction(db) as session:
            session.add(PlatformSecret(name=name, value=initial().hex()))
    except IntegrityError:
        pass
    with transaction(db) as session:
        return bytes.fromhex(session.get_one(PlatformSecret, name).value)


@dataclass(frozen=True)
class IssuedToken:
    token: TokenRecord
    user: UserRecord
    secret: str  # shown once


def create_user(
    *, db: sessionmaker[Session], username: str, email: str, fullname: str = ""
) -> IssuedToken:
    errors: dict[str, list[str]] = {}
    if (
        not username
        or len(username) > 64
        or not username.replace("-", "").replace("_", "").isalnum()
    ):
        errors["username"] = ["must be 1 to 64 letters, digits, dashes or underscores"]
    if "@" not in email:
        errors["email"] = ["must be an email address"]
    if errors:
        raise ValidationFailed(errors)
    try:
        with transaction(db) as session:
            user = User(
                id=new_id(), username=username, email=email, fullname=fullname, created_at=now()
            )
            session.add(user)
            session.flush()
            return _issue(session, user, name="default")
    except IntegrityError:
        raise Conflict(f"a user named {username!r} already exists") from None


def _issue(session: Session, user: User, *, name: str) -> IssuedToken:
    secret = new_secret_token(API_TOKEN_PREFIX)
    token = ApiToken(
        id=new_id(), user_id=user.id, name=name, token_hash=hash_token(secret), created_at=now()
    )
    session.add(token)
    session.flush()
    return IssuedToken(token=token_record(token), user=user_record(user), secret=secret)


@dataclass(frozen=True)
class Grant:
    """A valid API token: whose it is, and its id (what a JWT exchanged from it names)."""

    token_id: str
    user: UserRecord


def api_token_for_secret(*, db: sessionmaker[Session], secret: str) -> Grant:
    """The API token whose secret this is, or Unauthenticated."""
    with transaction(db) as session:
        token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
        if token is None:
            raise Unauthenticated("The API token is not valid (revoked or mistyped).")
        # The lookup is by digest (an index hit); compare again in constant time anyway so
        # the check does not depend on the database's string comparison.
        if not hmac.compare_digest(token.token_hash, hash_token(secret)):
            raise Unauthenticated("The API token is not valid (revoked or mistyped).")
        stamp = now()
        last = token.last_used_at
        if last is None or (
            stamp - (last if last.tzinfo else last.replace(tzinfo=stamp.tzinfo))
        ) > timedelta(minutes=1):
            token.last_used_at = stamp
        return Grant(token_id=token.id, user=user_record(token.user))


def user_for_api_token(*, db: sessionmaker[Session], secret: str) -> UserRecord:
    return api_token_for_secret(db=db, secret=secret).user


def issue_jwt(*, key: bytes, token: Grant, ttl: int) -> str:
    """A JWT for ``token``'s user, tied to ``token``: it stops working when the token is
    revoked (``user_for_jwt_claims``), not only when it expires."""
    issued = now()
    claims = {
        "sub": token.user.id,
        "tid": token.token_id,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl)).timestamp()),
        "typ": "dockyard",
    }
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM)


@dataclass(frozen=True)
class JwtClaims:
    user_id: str
    token_id: str  # the API token it was exchanged from


def jwt_claims(*, key: bytes, token: str) -> JwtClaims:
    """Who a valid, unexpired JWT of ours names, and the API token it came from."""
    try:
        claims = jwt.decode(
            token, key, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub", "tid"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated(
            "The token has expired: exchange your API token for a new one."
        ) from None
    except jwt.MissingRequiredClaimError:
        # Signed by us before JWTs named their API token: exchange again.
        raise Unauthenticated(
            "The token is from an older version of the server: exchange your API token again."
        ) from None
    except jwt.PyJWTError:
        raise Unauthenticated("The token is not valid.") from None
    if not isinstance(claims["sub"], str) or not isinstance(claims["tid"], str):
        raise Unauthenticated("The token is not valid.")
    return JwtClaims(user_id=claims["sub"], token_id=claims["tid"])


def user_for_jwt_claims(*, db: sessionmaker[Session], claims: JwtClaims) -> UserRecord:
    """The user, if the API token the JWT was exchanged from still exists."""
    with transaction(db) as session:
        token = session.get(ApiToken, claims.token_id)
        if token is None or token.user_id != claims.user_id:
            raise Unauthenticated(
                "The API token this token was exchanged from was revoked: use another one."
            )
        return user_record(token.user)


def user_for_jwt(*, db: sessionmaker[Session], key: bytes, token: str) -> UserRecord:
    return user_for_jwt_claims(db=db, claims=jwt_claims(key=key, token=token))


def user_for_credential(*, db: sessionmaker[Session], key: bytes, secret: str) -> UserRecord:
    """The user an API token or a JWT of ours belongs to, checked against the database."""
    if looks_like_jwt(secret):
        return user_for_jwt(db=db, key=key, token=secret)
    return user_for_api_token(db=db, secret=secret)


class UserCache:
    """Users behind already-verified JWTs, by the API token each was exchanged from, for a
    few seconds: the signature and expiry are checked on every request, but the database
    is not read again for each one. Revoking a token forgets it here at once."""

    def __init__(self, ttl: float = 10.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._users: dict[str, tuple[float, UserRecord]] = {}

    def get(self, claims: JwtClaims) -> UserRecord | None:
        entry = self._users.get(claims.token_id)
        if entry is None or entry[0] < time.monotonic() or entry[1].id != claims.user_id:
            return None
        return entry[1]

    def put(self, claims: JwtClaims, user: UserRecord) -> None:
        if len(self._users) >= self.size:
            self._users.clear()
        self._users[claims.token_id] = (time.monotonic() + self.ttl, user)

    def forget(self, token_id: str) -> None:
        self._users.pop(token_id, None)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(API_TOKEN_PREFIX)


def list_tokens(*, db: sessionmaker[Session], user: UserRecord) -> list[TokenRecord]:
    with transaction(db) as session:
        rows = session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at.desc())
        )
        return [token_record(row) for row in rows]


def create_token(*, db: sessionmaker[Session], user: UserRecord, name: object) -> IssuedToken:
    if not isinstance(name, str):
        raise ValidationFailed({"name": ["must be a string of 1 to 100 characters"]})
    if not name.strip() or len(name) > 100 or not name.isprintable():
        raise ValidationFailed(
            {
                "name": [
                    "must be 1 to 100 printable characters (no line breaks or control characters)"
                ]
            }
        )
    with transaction(db) as session:
        owner = session.get(User, user.id)
        if owner is None:
            raise Unauthenticated("The token's user no longer exists.")
        return _issue(session, owner, name=name)


def revoke_token(*, db: sessionmaker[Session], user: UserRecord, token_id: str) -> None:
    with transaction(db) as session:
        token = session.get(ApiToken, token_id)
        if token is None or token.user_id != user.id:
            raise NotFound("token")
        session.delete(token)
