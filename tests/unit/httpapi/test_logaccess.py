"""Logs URL tokens: one app's logs only, for a while, kept as digests in the database
(so that any API process opens a URL another handed out)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import make_engine, make_sessionmaker, migrate, transaction
from dockyard.db.models import LogGrant
from dockyard.services.apps import create_app
from dockyard.services.auth import create_user, hash_token
from dockyard.services.logaccess import LogTokens


def _db_with_apps(tmp_path: Path, *names: str) -> tuple[sessionmaker[Session], list[str]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dockyard.db'}")
    migrate(engine)
    db = make_sessionmaker(engine)
    owner = create_user(db=db, username="lou", email="lou@example.com").user
    return db, [create_app(db=db, owner=owner, name=name).id for name in names]


def test_a_token_opens_its_app_until_it_expires_through_any_process(tmp_path: Path) -> None:
    db, (app_1, app_2) = _db_with_apps(tmp_path, "app-one", "app-two")
    now = [1000.0]
    tokens = LogTokens(db, ttl=60, clock=lambda: now[0])
    other_process = LogTokens(db, ttl=60, clock=lambda: now[0])
    token, issued = tokens.issue(app_1)
    assert issued == 1000
    assert other_process.allows(token, app_1)
    assert not tokens.allows(token, app_2)
    assert not tokens.allows(token + "x", app_1)
    assert not tokens.allows("", app_1)
    now[0] += 61
    assert not tokens.allows(token, app_1)


def test_only_digests_are_kept_and_expired_ones_go(tmp_path: Path) -> None:
    db, (app_id,) = _db_with_apps(tmp_path, "app-one")
    now = [1000.0]
    tokens = LogTokens(db, ttl=60, clock=lambda: now[0])
    tokens.issue(app_id)
    now[0] += 61
    second, _ = tokens.issue(app_id)
    with transaction(db) as session:
        kept = list(session.scalars(select(LogGrant.token_hash)))
    assert kept == [hash_token(second)]
