"""What one user may keep stored at once: sources waiting to be deployed.

A source is held from its creation until it expires (``DOCKYARD_SOURCE_TTL``), or for as
long as a deployment still needs it: deployed or not, its file is on disk until then.
Before this cap, one token created and uploaded 500 sources of 1 MB in 12.5 s and could
fill the disk within the TTL. Two bounds per user, both settings:

- ``max_sources`` held at once: a new one beyond it is refused (429, with Retry-After
  the time until the oldest expires);
- ``max_bytes`` held at once: an upload is refused (413) before it is received when its
  declared size does not fit, or as soon as it passes what is left.

An upload *reserves* its size on the source row (``Source.size``) before its bytes
arrive, under a lock on the user's row (PostgreSQL), so concurrent uploads cannot each
see the same room. On SQLite the check and the reservation are two statements, so uploads
racing at the very same moment may pass the bound by one archive each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import Deployment, Source, User
from dockyard.domain.status import FINAL
from dockyard.errors import NotFound, PayloadTooLarge, RateLimited
from dockyard.services.clock import as_utc, now


@dataclass(frozen=True)
class SourceQuota:
    max_sources: int
    max_bytes: int


class QuotaExceeded(RateLimited):
    """429 with Retry-After: the room comes back as held sources expire."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = "quota_exceeded"


def _held(owner_id: str) -> ColumnElement[bool]:
    in_use = exists().where(Deployment.source_id == Source.id, Deployment.status.not_in(FINAL))
    return and_(Source.owner_id == owner_id, or_(Source.expires_at > now(), in_use))


def _lock_owner(session: Session, owner_id: str) -> None:
    # PostgreSQL: one quota decision per user at a time. SQLite renders no FOR UPDATE.
    session.execute(select(User.id).where(User.id == owner_id).with_for_update())


def check_new_source(session: Session, *, owner_id: str, quota: SourceQuota) -> None:
    """Inside the transaction creating a source: refuse it if the user holds too many."""
    _lock_owner(session, owner_id)
    count, first_expiry = session.execute(
        select(func.count(), func.min(Source.expires_at)).where(_held(owner_id))
    ).one()
    if count >= quota.max_sources:
        wait = 1
        if first_expiry is not None:
            wait = max(1, math.ceil((as_utc(first_expiry) - now()).total_seconds()))
        raise QuotaExceeded(
            f"You have {count} sources waiting to be deployed, the most allowed per user "
            f"({quota.max_sources}): deploy them, or wait until the oldest expires "
            f"(in {wait} s).",
            retry_after=wait,
        )


def reserve_upload(
    *, db: sessionmaker[Session], source_id: str, size: int, quota: SourceQuota
) -> None:
    """Reserve ``size`` bytes of the owner's room for this source's upload, or refuse it
    (413) saying how much room is left."""
    with transaction(db) as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound("source")
        _lock_owner(session, source.owner_id)
        others = session.scalar(
            select(func.coalesce(func.sum(Source.size), 0)).where(
                _held(source.owner_id), Source.id != source_id
            )
        )
        left = quota.max_bytes - int(others or 0)
        if size > left:
            raise PayloadTooLarge(
                f"Your sources waiting to be deployed hold {_mib(int(others or 0))}; this "
                f"upload ({_mib(size)}) would pass the {_mib(quota.max_bytes)} allowed per "
                "user. Deploy them or let them expire, then upload again."
            )
        source.size = size


def room_left(*, db: sessionmaker[Session], source_id: str, quota: SourceQuota) -> int:
    """Bytes the owner of this source may still upload into it (others' reservations out)."""
    with transaction(db) as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound("source")
        others = session.scalar(
            select(func.coalesce(func.sum(Source.size), 0)).where(
                _held(source.owner_id), Source.id != source_id
            )
        )
        return max(0, quota.max_bytes - int(others or 0))


def release_upload(*, db: sessionmaker[Session], source_id: str) -> None:
    """An upload that failed gives its reservation back (unless the source was uploaded
    meanwhile by another request, which then holds it)."""
    with transaction(db) as session:
        source = session.get(Source, source_id)
        if source is not None and source.uploaded_at is None:
            source.size = None


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"
