"""Sources: an archive uploaded through a capability URL (docs/api.md, "Sources").

Each source has two tokens, one to upload (PUT) and one to download (GET). Only their
SHA-256 digests are stored; they are compared in constant time and expire on the
server's clock. This module is a security boundary.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.blobstore.base import BlobStore
from dockyard.db.engine import transaction
from dockyard.db.models import Deployment, Source
from dockyard.domain.records import UserRecord
from dockyard.domain.status import FINAL
from dockyard.errors import Conflict, Forbidden, NotFound
from dockyard.services.auth import hash_token, new_secret_token
from dockyard.services.clock import as_utc, new_id, now
from dockyard.services.quotas import SourceQuota, check_new_source

log = logging.getLogger(__name__)

UPLOAD = "upload"
DOWNLOAD = "download"
# Expiry is decided on this clock; tests pass their own to move time without waiting.
Clock = Callable[[], datetime]


# Said when the API process that received a source does not hand it over.
HOLDER_GONE = (
    "The API process that received this source does not hand it over (it was stopped or "
    "lost its disk): upload the source again (POST /v1/sources) and deploy that."
)


def blob_key(source_id: str) -> str:
    return f"sources/{source_id}.tar.gz"


@dataclass(frozen=True)
class NewSource:
    source: Source
    upload_token: str
    download_token: str


def create_source(
    *,
    db: sessionmaker[Session],
    owner: UserRecord,
    ttl: int,
    quota: SourceQuota | None = None,
    clock: Clock = now,
) -> NewSource:
    upload_token, download_token = new_secret_token(), new_secret_token()
    stamp = clock()
    with transaction(db) as session:
        if quota is not None:
            check_new_source(session, owner_id=owner.id, quota=quota)
        source = Source(
            id=new_id(),
            owner_id=owner.id,
            upload_token_hash=hash_token(upload_token),
            download_token_hash=hash_token(download_token),
            created_at=stamp,
            expires_at=stamp + timedelta(seconds=ttl),
        )
        session.add(source)
    return NewSource(source=source, upload_token=upload_token, download_token=download_token)


def authorize(
    *, db: sessionmaker[Session], source_id: str, token: str, purpose: str, clock: Clock = now
) -> Source:
    """The source if ``token`` grants ``purpose`` on it now; otherwise a refusal in words."""
    with transaction(db) as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound("source")
        return check_token(source, token=token, purpose=purpose, clock=clock)


def check_token(source: Source, *, token: str, purpose: str, clock: Clock = now) -> Source:
    digest = hash_token(token or "")
    wanted = source.upload_token_hash if purpose == UPLOAD else source.download_token_hash
    other = source.download_token_hash if purpose == UPLOAD else source.upload_token_hash
    if not hmac.compare_digest(digest, wanted):
        if hmac.compare_digest(digest, other):
            verb = "upload (PUT)" if purpose == UPLOAD else "download (GET)"
            raise Forbidden(
                f"This URL's token does not allow to {verb} the source: use the {purpose}_url.",
                code="wrong_method",
            )
        raise Forbidden("The token in this source URL is not valid.", code="invalid_token")
    if as_utc(source.expires_at) <= clock():
        raise Forbidden(
            "This source URL has expired: create a new source (POST /v1/sources).",
            code="source_expired",
        )
    if purpose == UPLOAD and source.uploaded_at is not None:
        raise Conflict(
            "This source was already uploaded; sources are write-once: create a new one."
        )
    if purpose == DOWNLOAD and source.uploaded_at is None:
        raise NotFound("source")
    return source


def mark_uploaded(
    *, db: sessionmaker[Session], source_id: str, size: int, holder_url: str | None = None
) -> None:
    """Record the upload, and which API process holds its bytes (its own URL).

    Conditional on the source not being uploaded yet: two PUTs that reached two API
    processes at once each stored a copy on their own disk, and only the first to get
    here is the holder; the other hears Conflict and drops its copy."""
    with transaction(db) as session:
        marked = session.execute(
            update(Source)
            .where(Source.id == source_id, Source.uploaded_at.is_(None))
            .values(uploaded_at=now(), size=size, holder_url=holder_url)
        )
        if marked.rowcount == 0:  # type: ignore[attr-defined]
            if session.get(Source, source_id) is None:
                raise NotFound("source")
            raise Conflict(
                "This source was already uploaded; sources are write-once: create a new one."
            )


def holder_of(*, db: sessionmaker[Session], source_id: str) -> str | None:
    """The URL of the API process that holds the source's bytes, if it was recorded."""
    with transaction(db) as session:
        return session.scalar(select(Source.holder_url).where(Source.id == source_id))


def source_from_own_url(*, db: sessionmaker[Session], public_url: str, url: str) -> Source | None:
    """The source behind one of this server's download URLs, or None for an external URL.

    Raises when it is our URL but not usable, so the user hears why at creation time.
    """
    parts = urlsplit(url)
    ours = urlsplit(public_url)
    if (parts.scheme, parts.netloc) != (ours.scheme, ours.netloc):
        return None
    prefix = ours.path.rstrip("/") + "/v1/sources/"
    if not parts.path.startswith(prefix):
        return None
    source_id = parts.path[len(prefix) :]
    token = parse_qs(parts.query).get("token", [""])[0]
    return authorize(db=db, source_id=source_id, token=token, purpose=DOWNLOAD)


# A source held by an API process that never swept it (gone for good) is forgotten
# this long after its expiry by any other.
ORPHAN_GRACE = timedelta(days=1)


def sweep_expired(
    *, db: sessionmaker[Session], blobs: BlobStore, holder_url: str, clock: Clock = now
) -> int:
    """Delete expired sources and their files, keeping those a running deployment still needs.

    The files are on the disk of the API process that holds each (``holder_url`` is this
    process's own): it sweeps those, and the sources never uploaded."""
    removed = 0
    stamp = clock()
    with transaction(db) as session:
        in_use = set(
            session.scalars(
                select(Deployment.source_id).where(
                    Deployment.source_id.is_not(None), Deployment.status.not_in(FINAL)
                )
            )
        )
        expired = session.scalars(
            select(Source).where(
                Source.expires_at <= stamp,
                or_(
                    Source.holder_url == holder_url,
                    Source.holder_url.is_(None),
                    Source.expires_at <= stamp - ORPHAN_GRACE,
                ),
            )
        )
        for source in expired:
            if source.id in in_use:
                continue
            if source.holder_url in (holder_url, None):
                blobs.delete(blob_key(source.id))
            session.delete(source)
            removed += 1
    if removed:
        log.info("removed %d expired source(s)", removed)
    return removed
