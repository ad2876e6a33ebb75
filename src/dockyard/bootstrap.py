"""The composition root: the only place that picks concrete backends.

``dockyard serve``, ``dockyard worker``, the admin commands and the tests are different
wirings of the same services, all built here from one ``Settings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dockyard.api.ratelimit import RateLimiter
from dockyard.backends.blobstore.base import BlobStore
from dockyard.backends.blobstore.local import LocalBlobStore
from dockyard.backends.eventbus.base import EventBus
from dockyard.backends.eventbus.memory import MemoryEventBus
from dockyard.db.engine import make_engine, make_sessionmaker, migrate
from dockyard.services.auth import load_or_create_secret
from dockyard.settings import Settings


@dataclass
class Platform:
    settings: Settings
    engine: Engine
    db: sessionmaker[Session]
    blobs: BlobStore
    bus: EventBus
    jwt_key: bytes
    rate_limiter: RateLimiter
    # Filled in by the server wiring (worker pool, supervisor, router table).
    extras: dict[str, Any] = field(default_factory=dict)


def prepare_data_dir(settings: Settings) -> None:
    """Create the data dir with the narrowest modes that still let sandboxes start.

    bubblewrap runs as the app's unprivileged uid, so it must be able to *traverse* to the
    build, cache and release directories it mounts (0711: no listing). Everything else —
    database, secret key, blobs, logs — is private to the server (0700/0600). Sandboxed
    code never sees these paths at all: it lives in its own mount namespace.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o711)  # noqa: S103 - traversable, not listable (see above)
    for path in (settings.builds_dir, settings.releases_dir, settings.data_dir / "caches"):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o711)  # noqa: S103 - traversable, not listable (see above)
    for path in (settings.blobs_dir, settings.data_dir / "logs"):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)


def make_bus(settings: Settings) -> EventBus:
    if settings.is_postgres:
        from dockyard.backends.eventbus.postgres import PostgresEventBus

        return PostgresEventBus(settings.database_url)
    return MemoryEventBus()


def build_platform(settings: Settings) -> Platform:
    prepare_data_dir(settings)
    engine = make_engine(settings.database_url)
    migrate(engine)
    database_file = settings.data_dir / "dockyard.db"
    if database_file.exists():
        os.chmod(database_file, 0o600)
    return Platform(
        settings=settings,
        engine=engine,
        db=make_sessionmaker(engine),
        blobs=LocalBlobStore(settings.blobs_dir),
        bus=make_bus(settings),
        jwt_key=load_or_create_secret(settings.secret_file),
        rate_limiter=RateLimiter(settings.rate_limit_per_minute),
    )
