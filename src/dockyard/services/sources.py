"""Sources: an archive uploaded through a capability URL (seed documents 002, 003).

Each source has two tokens, one to upload (PUT) and one to download (GET). Only their
SHA-256 digests are stored; they are compared in constant time and expire on the
server's clock. This module is a security boundary.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.blobstore.base import BlobStore
from dockyard.db.engine import transaction
from dockyard.db.models import Deployment, Source, User
from dockyard.domain.status import FINAL
from dockyard.errors import Conflict, Forbidden, NotFound
from dockyard.services.auth import hash_token, new_secret_token
from dockyard.services.clock import as_utc, new_id, now

log = logging.getLogger(__name__)

UPLOAD = "upload"
DOWNLOAD = "download"


def blob_key(source_id: str) -> str:
    return f"sources/{source_id}.tar.gz"


@dataclass(frozen=True)
class NewSource:
    source: Source
    upload_token: str
    download_token: str


def create_source(*, db: sessionmaker[Session], owner: User, ttl: int) -> NewSource:
    upload_token, download_token = new_secret_token(), new_secret_token()
    stamp = now()
    with transaction(db) as session:
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


def authorize(*, db: sessionmaker[Session], source_id: str, token: str, purpose: str) -> Source:
    """The source if ``token`` grants ``purpose`` on it now; otherwise a refusal in words."""
    with transaction(db) as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound("source")
        return check_token(source, token=token, purpose=purpose)


def check_token(source: Source, *, token: str, purpose: str) -> Source:
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
    if as_utc(source.expires_at) <= now():
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


def mark_uploaded(*, db: sessionmaker[Session], source_id: str, size: int) -> None:
    with transaction(db) as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound("source")
        source.uploaded_at = now()
        source.size = size


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


def sweep_expired(*, db: sessionmaker[Session], blobs: BlobStore) -> int:
    """Delete expired sources and their files, keeping those a running deployment still needs."""
    removed = 0
    with transaction(db) as session:
        in_use = set(
            session.scalars(
                select(Deployment.source_id).where(
                    Deployment.source_id.is_not(None), Deployment.status.not_in(FINAL)
                )
            )
        )
        expired = session.scalars(select(Source).where(Source.expires_at <= now()))
        for source in expired:
            if source.id in in_use:
                continue
            blobs.delete(blob_key(source.id))
            session.delete(source)
            removed += 1
    if removed:
        log.info("removed %d expired source(s)", removed)
    return removed
