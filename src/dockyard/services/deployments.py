"""Deployments: creation, listing, status changes, claiming for a worker, cancelling."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, exists, func, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from dockyard.backends.eventbus.base import EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment, User
from dockyard.domain import status as st
from dockyard.errors import Conflict, NotFound, ValidationFailed
from dockyard.services import events
from dockyard.services.apps import get_app
from dockyard.services.clock import as_utc, new_id, now
from dockyard.services.sources import source_from_own_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeploymentRequest:
    source_url: str
    git_ref: str | None


def parse_request(body: Any) -> DeploymentRequest:
    """Validate the POST body: ``{"deployment": {"source_url"|"download_url", "git_ref"}}``."""
    if not isinstance(body, dict) or not isinstance(body.get("deployment"), dict):
        raise ValidationFailed(
            {"deployment": ['is required: {"deployment": {"source_url": "https://…"}}']}
        )
    fields = body["deployment"]
    url = fields.get("source_url") or fields.get("download_url")
    if not isinstance(url, str) or not url:
        raise ValidationFailed(
            {"source_url": ["is required (the URL of a tar.gz archive of the app)"]}
        )
    if not url.lower().startswith(("http://", "https://")):
        raise ValidationFailed({"source_url": ["must be an http:// or https:// URL"]})
    if len(url) > 4096:
        raise ValidationFailed({"source_url": ["must be at most 4096 characters"]})
    git_ref = fields.get("git_ref")
    if git_ref is not None and (not isinstance(git_ref, str) or len(git_ref) > 255):
        raise ValidationFailed({"git_ref": ["must be a string of at most 255 characters, or null"]})
    return DeploymentRequest(source_url=url, git_ref=git_ref or None)


def create_deployment(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    owner: User,
    app_name: str,
    request: DeploymentRequest,
    public_url: str,
) -> Deployment:
    source = source_from_own_url(db=db, public_url=public_url, url=request.source_url)
    stamp = now()
    with transaction(db) as session:
        app = get_app(session, owner=owner, name=app_name)
        previous = session.scalar(
            select(Deployment.git_ref)
            .where(Deployment.app_id == app.id, Deployment.status == st.SUCCESS)
            .order_by(Deployment.created_at.desc())
            .limit(1)
        )
        deployment = Deployment(
            id=new_id(),
            app_id=app.id,
            pusher_id=owner.id,
            status=st.QUEUED,
            git_ref=request.git_ref or stamp.strftime("%Y%m%d%H%M%S%f"),
            previous_git_ref=previous,
            source_url=request.source_url,
            source_id=source.id if source else None,
            created_at=stamp,
            cancel_requested=False,
        )
        session.add(deployment)
        # An UPDATE of the row, not read-modify-write: concurrent creations all count.
        session.execute(
            update(App)
            .where(App.id == app.id)
            .values(
                deployment_count=App.deployment_count + 1,
                deployments_version=App.deployments_version + 1,
            )
        )
        session.flush()
        deployment.pusher = session.get(User, owner.id)  # type: ignore[assignment]
    # Persisted; only now may anyone see it. The stream renders the full object itself.
    bus.publish(
        events.channel_for(deployment.app_id), {"type": "new", "id": deployment.id, "seq": 0}
    )
    return deployment


@dataclass(frozen=True)
class Page:
    items: list[Deployment]
    page: int
    per_page: int
    total_count: int


def list_deployments(
    *, db: sessionmaker[Session], owner: User, app_name: str, page: int, per_page: int
) -> Page:
    with transaction(db) as session:
        app = get_app(session, owner=owner, name=app_name)
        total = app.deployment_count
        # The page's ids come from the index alone; only those rows are then read and
        # joined with their pusher (not every skipped row, on the last page of 10,000).
        page_ids = (
            select(Deployment.id)
            .where(Deployment.app_id == app.id)
            .order_by(Deployment.created_at.desc(), Deployment.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
            .scalar_subquery()
        )
        items = list(
            session.scalars(
                select(Deployment)
                .where(Deployment.id.in_(page_ids))
                .order_by(Deployment.created_at.desc(), Deployment.id.desc())
            )
        )
    return Page(items=items, page=page, per_page=per_page, total_count=total)


def get_deployment(
    session: Session, *, owner: User, app_name: str, deployment_id: str
) -> Deployment:
    app = get_app(session, owner=owner, name=app_name)
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.app_id != app.id:
        raise NotFound("deployment")
    return deployment


def find_deployment(
    *, db: sessionmaker[Session], owner: User, app_name: str, deployment_id: str
) -> Deployment:
    with transaction(db) as session:
        return get_deployment(session, owner=owner, app_name=app_name, deployment_id=deployment_id)


def deployment_output(
    *, db: sessionmaker[Session], owner: User, app_name: str, deployment_id: str
) -> str:
    with transaction(db) as session:
        get_deployment(session, owner=owner, app_name=app_name, deployment_id=deployment_id)
        return events.output_text(session, deployment_id=deployment_id)


def transition(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    deployment_id: str,
    new_status: str,
    lines: tuple[str, ...] = (),
    **fields: Any,
) -> Deployment:
    """Move a deployment to ``new_status`` (only along the allowed edges), with log lines
    written just before the status, all in one transaction, then published."""
    with transaction(db) as session:
        deployment = session.scalar(
            select(Deployment).where(Deployment.id == deployment_id).with_for_update(of=Deployment)
        )
        if deployment is None:
            raise NotFound("deployment")
        st.check_transition(deployment.status, new_status)
        deployment.status = new_status
        for key, value in fields.items():
            setattr(deployment, key, value)
        if st.is_final(new_status):
            deployment.finished_at = now()
            deployment.lease_owner = None
            deployment.lease_expires_at = None
        rows = events.append(
            session,
            deployment_id=deployment_id,
            entries=[*((events.LOG, line) for line in lines), (events.STATUS, new_status)],
        )
        _bump_version(session, deployment.app_id)
    events.publish(bus, app_id=deployment.app_id, rows=rows)
    return deployment


def cancel(
    *, db: sessionmaker[Session], bus: EventBus, owner: User, app_name: str, deployment_id: str
) -> Deployment:
    with transaction(db) as session:
        deployment = get_deployment(
            session, owner=owner, app_name=app_name, deployment_id=deployment_id
        )
        if st.is_final(deployment.status):
            raise Conflict(
                f"This deployment already ended ({deployment.status}); there is nothing to cancel."
            )
        if deployment.status != st.QUEUED:
            deployment.cancel_requested = True
            return deployment
    try:
        return transition(
            db=db,
            bus=bus,
            deployment_id=deployment_id,
            new_status=st.ABORTED,
            lines=("-----> Deployment cancelled before it started.",),
        )
    except st.InvalidTransition:
        # A worker claimed it in between: ask the worker to stop it instead.
        with transaction(db) as session:
            deployment = get_deployment(
                session, owner=owner, app_name=app_name, deployment_id=deployment_id
            )
            deployment.cancel_requested = True
            return deployment


def cancel_requested(*, db: sessionmaker[Session], deployment_id: str) -> bool:
    with transaction(db) as session:
        return bool(
            session.scalar(
                select(Deployment.cancel_requested).where(Deployment.id == deployment_id)
            )
        )


def claim_next(
    *, db: sessionmaker[Session], bus: EventBus, worker_id: str, lease_seconds: int
) -> Deployment | None:
    """Take the oldest queued deployment of an app that has none active, as ``building``;
    ``None`` when there is none to take.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several worker processes claim at once;
    the conditional UPDATE makes the claim safe on SQLite too. A claim that another worker
    won is tried again on the next candidate, so that ``None`` means "nothing to claim"
    and the worker can wait for news.
    """
    for _ in range(CLAIM_ATTEMPTS):
        claimed = _claim_oldest(db=db, bus=bus, worker_id=worker_id, lease_seconds=lease_seconds)
        if not isinstance(claimed, _LostRace):
            return claimed
    return None


# Each lost race is another worker's claim, so the queue shrinks meanwhile; the bound only
# guards against a claim that keeps failing for a reason of its own (the poll covers it).
CLAIM_ATTEMPTS = 50


class _LostRace:
    """What ``_claim_oldest`` returns when another worker claimed its candidate first."""


_LOST_RACE = _LostRace()


def _claim_oldest(
    *, db: sessionmaker[Session], bus: EventBus, worker_id: str, lease_seconds: int
) -> Deployment | _LostRace | None:
    active = aliased(Deployment)
    with transaction(db) as session:
        query = (
            select(Deployment)
            .where(
                Deployment.status == st.QUEUED,
                ~exists().where(active.app_id == Deployment.app_id, active.status.in_(st.ACTIVE)),
                # Older queued deployments of the same app go first.
                ~exists().where(
                    active.app_id == Deployment.app_id,
                    active.status == st.QUEUED,
                    active.created_at < Deployment.created_at,
                ),
            )
            .order_by(Deployment.created_at)
            .limit(1)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Deployment)
        candidate = session.scalar(query)
        if candidate is None:
            return None
        stamp = now()
        claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
            update(Deployment)
            .where(Deployment.id == candidate.id, Deployment.status == st.QUEUED)
            .values(
                status=st.BUILDING,
                started_at=stamp,
                lease_owner=worker_id,
                lease_expires_at=stamp + timedelta(seconds=lease_seconds),
            )
        ).rowcount
        if not claimed:
            return _LOST_RACE
        if session.get_bind().dialect.name == "postgresql":
            # Two apps' claims can race on the "no active deployment" check; the row lock
            # on the app serialises claims per app.
            session.execute(select(App.id).where(App.id == candidate.app_id).with_for_update())
            others = session.scalar(
                select(func.count())
                .select_from(Deployment)
                .where(Deployment.app_id == candidate.app_id, Deployment.status.in_(st.ACTIVE))
            )
            if (others or 0) > 1:
                session.rollback()
                return _LOST_RACE
        rows = events.append(
            session, deployment_id=candidate.id, entries=[(events.STATUS, st.BUILDING)]
        )
        _bump_version(session, candidate.app_id)
        session.refresh(candidate)
    events.publish(bus, app_id=candidate.app_id, rows=rows)
    return candidate


def _bump_version(session: Session, app_id: str) -> None:
    session.execute(
        update(App).where(App.id == app_id).values(deployments_version=App.deployments_version + 1)
    )


@dataclass(frozen=True)
class ListingKey:
    app_id: str
    version: int


def listing_key(*, engine: Engine, owner: User, app_name: str) -> ListingKey:
    """What a cached page of the app's deployments must match to still be current.

    One indexed row read on a bare connection: this runs on every listing request, and an
    ORM session around it cost more than the query."""
    with engine.connect() as connection:
        row = connection.execute(
            select(App.id, App.deployments_version).where(
                App.name == app_name, App.owner_id == owner.id
            )
        ).first()
    if row is None:
        raise NotFound("app")
    return ListingKey(app_id=row.id, version=row.deployments_version)


def renew_leases(*, db: sessionmaker[Session], worker_id: str, lease_seconds: int) -> None:
    with transaction(db) as session:
        session.execute(
            update(Deployment)
            .where(Deployment.lease_owner == worker_id, Deployment.status.in_(st.ACTIVE))
            .values(lease_expires_at=now() + timedelta(seconds=lease_seconds))
        )


def abort_orphans(
    *, db: sessionmaker[Session], bus: EventBus, everything: bool
) -> list[Deployment]:
    """End deployments whose worker is gone as ``aborted``, saying so in their log.

    ``everything`` is for a single-process server starting up: no other worker can exist,
    so every active deployment is an orphan. Otherwise only expired leases are.
    """
    with transaction(db) as session:
        query = select(Deployment.id, Deployment.lease_expires_at).where(
            Deployment.status.in_(st.ACTIVE)
        )
        candidates = [
            row.id
            for row in session.execute(query)
            if everything or row.lease_expires_at is None or as_utc(row.lease_expires_at) < now()
        ]
    aborted = []
    for deployment_id in candidates:
        try:
            aborted.append(
                transition(
                    db=db,
                    bus=bus,
                    deployment_id=deployment_id,
                    new_status=st.ABORTED,
                    lines=(
                        "-----> Deployment aborted: the server was restarted or its worker stopped while it ran. Deploy again.",
                    ),
                )
            )
        except st.InvalidTransition:
            continue
    return aborted
