"""Users, API tokens and JWTs.

API tokens are shown once and stored only as SHA-256 digests (they carry 256 bits of
entropy, so a slow hash would add nothing). JWTs are HS256, signed with a secret kept in
the data dir (0600) and generated on first start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import ApiToken, User
from dockyard.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from dockyard.services.clock import new_id, now

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


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
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
    token.user = user
    return IssuedToken(token=token, secret=secret)


def user_for_api_token(*, db: sessionmaker[Session], secret: str) -> User:
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
        return token.user


def issue_jwt(*, key: bytes, user: User, ttl: int) -> str:
    issued = now()
    claims = {
        "sub": user.id,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl)).timestamp()),
        "typ": "dockyard",
    }
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM)


def jwt_subject(*, key: bytes, token: str) -> str:
    """The user id a valid, unexpired JWT of ours names."""
    try:
        claims = jwt.decode(
            token, key, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated(
            "The token has expired: exchange your API token for a new one."
        ) from None
    except jwt.PyJWTError:
        raise Unauthenticated("The token is not valid.") from None
    subject: str = claims["sub"]
    return subject


def user_by_id(*, db: sessionmaker[Session], user_id: str) -> User:
    with transaction(db) as session:
        user = session.get(User, user_id)
        if user is None:
            raise Unauthenticated("The token's user no longer exists.")
        return user


def user_for_jwt(*, db: sessionmaker[Session], key: bytes, token: str) -> User:
    return user_by_id(db=db, user_id=jwt_subject(key=key, token=token))


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(API_TOKEN_PREFIX)


def list_tokens(*, db: sessionmaker[Session], user: User) -> list[ApiToken]:
    with transaction(db) as session:
        rows = session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at.desc())
        )
        return list(rows)


def create_token(*, db: sessionmaker[Session], user: User, name: str) -> IssuedToken:
    if not name or len(name) > 100:
        raise ValidationFailed({"name": ["must be 1 to 100 characters"]})
    with transaction(db) as session:
        owner = session.get(User, user.id)
        if owner is None:
            raise Unauthenticated("The token's user no longer exists.")
        return _issue(session, owner, name=name)


def revoke_token(*, db: sessionmaker[Session], user: User, token_id: str) -> None:
    with transaction(db) as session:
        token = session.get(ApiToken, token_id)
        if token is None or token.user_id != user.id:
            raise NotFound("token")
        session.delete(token)
