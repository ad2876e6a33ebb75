"""Build caches carried through the API when builds run in worker processes on other
machines (``dockyard worker``): the worker that built a deployment sends its app's cache
archive, the next worker to build the app fetches it (worker/cache_transfer.py).

Each cache is on the disk of the API process that received it (several API processes
share no disk): the database records which one holds each app's latest cache, and the
next build, on any worker, fetches it from that process (``held``, ``install``).

The URL is a capability of one deployment: its token is an HMAC of the deployment's id
under the key every process of the installation shares (the JWT key, in the database),
so only a process holding that key (a worker) can make it, nothing is stored for it, and
it is good only while that deployment builds. A user's token never opens it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.blobstore.base import BlobStore
from dockyard.db.engine import transaction
from dockyard.db.models import BuildCacheRow, Deployment
from dockyard.domain import status as st
from dockyard.errors import Conflict, Forbidden, NotFound, Unauthenticated
from dockyard.services.clock import as_utc, now

CACHE_SUFFIX = ".tar.gz"
# Told to the API processes when an app's cache changed holder, so that the previous
# holder drops its copy (a reset or the app's deletion is told on CACHES_CHANNEL).
HOLDERS_CHANNEL = "build-cache-holders"
CACHE_MOVED = "moved"


def blob_key(app_id: str) -> str:
    """Where an API process keeps an app's latest build cache (one per app, replaced)."""
    return f"caches/{app_id}{CACHE_SUFFIX}"


@dataclass(frozen=True)
class Held:
    """The API process that holds an app's latest cache (its own URL), and the ETag of it."""

    holder_url: str
    etag: str


def held(*, db: sessionmaker[Session], app_id: str) -> Held | None:
    with transaction(db) as session:
        row = session.get(BuildCacheRow, app_id)
        if row is None or row.holder_url is None or row.etag is None:
            return None
        return Held(holder_url=row.holder_url, etag=row.etag)


def install(
    *, db: sessionmaker[Session], grant: Grant, holder_url: str, swap: Callable[[], str]
) -> tuple[str, str | None]:
    """Make this process's copy the app's cache: ``swap`` puts it in place on this disk
    and says its ETag. Returns that ETag, and the previous holder if another process.

    Under the lock of the app's row, which a reset and the holders' clean-up take too: a
    reset either comes first (and this build, started before it, may not send its cache)
    or after (and drops it); a previous holder never deletes a copy just recorded."""
    with _locked_row(db, grant.app_id) as row:
        if row.reset_at is not None and as_utc(row.reset_at).timestamp() >= grant.started_at:
            raise Conflict(
                "The app's build cache was reset while this deployment built: "
                "its cache is not kept."
            )
        previous = row.holder_url
        row.etag = swap()
        row.holder_url = holder_url
        return row.etag, previous if previous not in (None, holder_url) else None


def reset(*, db: sessionmaker[Session], blobs: BlobStore, app_id: str) -> None:
    """Forget the app's cache wherever it is held: the record goes, so no process serves
    it again, and this process's copy goes now (the holder's, when told: ``drop_stale``)."""
    with _locked_row(db, app_id) as row:
        row.holder_url = row.etag = None
        row.reset_at = now()
        blobs.delete(blob_key(app_id))


def drop_stale(
    *, db: sessionmaker[Session], blobs: BlobStore, app_id: str, holder_url: str
) -> None:
    """Delete this process's copy of the app's cache unless it is the one recorded."""
    with transaction(db) as session:
        row = session.get(BuildCacheRow, app_id, with_for_update=True)
        if row is None or row.holder_url != holder_url:
            blobs.delete(blob_key(app_id))


def drop_all_stale(*, db: sessionmaker[Session], blobs: BlobStore, holder_url: str) -> int:
    """``drop_stale`` for every app whose cache another process holds, or nobody: when
    this process may have missed being told (it started, or the bus had a gap). Returns
    how many of its copies it looked at."""
    with transaction(db) as session:
        elsewhere = list(
            session.scalars(
                select(BuildCacheRow.app_id).where(
                    or_(BuildCacheRow.holder_url.is_(None), BuildCacheRow.holder_url != holder_url)
                )
            )
        )
    copies = [app_id for app_id in elsewhere if blobs.exists(blob_key(app_id))]
    for app_id in copies:
        drop_stale(db=db, blobs=blobs, app_id=app_id, holder_url=holder_url)
    return len(copies)


@contextmanager
def _locked_row(db: sessionmaker[Session], app_id: str) -> Iterator[BuildCacheRow]:
    try:
        with transaction(db) as session:
            if session.get(BuildCacheRow, app_id) is None:
                session.add(BuildCacheRow(app_id=app_id))
    except IntegrityError:
        pass  # another process made it first, or the app is gone (found below)
    with transaction(db) as session:
        row = session.get(BuildCacheRow, app_id, with_for_update=True)
        if row is None:
            raise NotFound("app")
        yield row


def token_for(key: bytes, deployment_id: str) -> str:
    return hmac.new(key, f"build-cache:{deployment_id}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Grant:
    app_id: str  # whose cache the URL opens
    started_at: float  # when the deployment's build started (seconds since the epoch)


def authorize(*, db: sessionmaker[Session], key: bytes, deployment_id: str, token: str) -> Grant:
    """What the URL's token opens, or why not."""
    if not token:
        raise Unauthenticated(
            "This URL is for dockyard workers: it needs the token of a deployment being built."
        )
    if not hmac.compare_digest(token.encode(), token_for(key, deployment_id).encode()):
        raise Forbidden("The token does not open the build cache of this deployment.")
    with transaction(db) as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            raise NotFound("deployment")
        if deployment.status not in st.ACTIVE:
            raise Forbidden(
                f"The deployment is {deployment.status}: its build cache URL served its build only."
            )
        started = deployment.started_at or deployment.created_at
        if started.tzinfo is None:  # SQLite keeps no time zone: dockyard writes UTC
            started = started.replace(tzinfo=UTC)
        return Grant(app_id=deployment.app_id, started_at=started.timestamp())
