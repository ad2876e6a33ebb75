"""Deployments: creation, listing, status changes, claiming for a worker, cancelling."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, Exists, exists, func, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from dockyard.backends.eventbus.base import EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment, Source, User, WorkerRow
from dockyard.domain import status as st
from dockyard.domain.records import DeploymentRecord, UserRecord
from dockyard.errors import Conflict, NotFound, ValidationFailed
from dockyard.services import events, timeline
from dockyard.services.access import Action, accessible_by, authorize
from dockyard.services.apps import DELETING, app_environment
from dockyard.services.clock import as_utc, new_id, now
from dockyard.services.presence import SILENT_LEASES
from dockyard.services.records import deployment_record, user_record
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
    if any(char.isspace() or not char.isprintable() for char in url):
        raise ValidationFailed({"source_url": ["must not contain spaces or control characters"]})
    git_ref = fields.get("git_ref")
    if git_ref is not None and (
        not isinstance(git_ref, str) or len(git_ref) > 255 or not git_ref.isprintable()
    ):
        raise ValidationFailed(
            {"git_ref": ["must be a string of at most 255 printable characters, or null"]}
        )
    return DeploymentRequest(source_url=url, git_ref=git_ref or None)


def create_deployment(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    owner: UserRecord,
    app_name: str,
    request: DeploymentRequest,
    public_url: str,
) -> DeploymentRecord:
    source = source_from_own_url(db=db, public_url=public_url, url=request.source_url)
    stamp = now()
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.DEPLOY)
        if app.status == DELETING:
            raise Conflict("This app is being deleted: it takes no new deployment.")
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
        _queue(session, deployment, owner)
    _announce(bus, deployment)
    return deployment_record(deployment)


def create_rollback(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    owner: UserRecord,
    app_name: str,
    deployment_id: str | None,
    release_kept: Callable[[str], bool] | None,
) -> DeploymentRecord:
    """Queue a rollback: a new deployment that starts the release of ``deployment_id``
    (the successful one before the serving one when None) again, without a build.

    The target must have succeeded, not be the release serving now, and still be kept
    (``release_kept(id)``; ``DOCKYARD_RELEASES_KEPT`` of them are; None: not known here,
    the worker that runs the rollback finds out)."""
    stamp = now()
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.DEPLOY)
        successes = list(
            session.scalars(
                select(Deployment)
                .where(Deployment.app_id == app.id, Deployment.status == st.SUCCESS)
                .order_by(Deployment.created_at.desc(), Deployment.id.desc())
            )
        )
        current = successes[0] if successes else None
        target = _rollback_target(session, app.id, deployment_id, successes)
        if release_kept is not None and not release_kept(target.id):
            raise ValidationFailed(
                {
                    "deployment_id": [
                        f"the release of deployment {target.id} is no longer kept on this "
                        "server (only the most recent are): deploy its source again"
                    ]
                }
            )
        deployment = Deployment(
            id=new_id(),
            app_id=app.id,
            pusher_id=owner.id,
            status=st.QUEUED,
            git_ref=target.git_ref,
            previous_git_ref=current.git_ref if current is not None else None,
            source_url="",  # nothing to fetch: the release is already built
            source_id=None,
            created_at=stamp,
            cancel_requested=False,
            rollback_of=target.id,
        )
        _queue(session, deployment, owner)
    _announce(bus, deployment)
    return deployment_record(deployment)


def _rollback_target(
    session: Session, app_id: str, deployment_id: str | None, successes: list[Deployment]
) -> Deployment:
    if deployment_id is None:
        if len(successes) < 2:
            raise ValidationFailed(
                {
                    "deployment_id": [
                        "the app has no earlier successful release to roll back to"
                    ]
                }
            )
        return successes[1]
    target = session.get(Deployment, deployment_id)
    if target is None or target.app_id != app_id:
        raise NotFound("deployment")
    if target.status != st.SUCCESS:
        raise ValidationFailed(
            {
                "deployment_id": [
                    f"deployment {target.id} ended as {target.status}: only a successful "
                    "release can be started again"
                ]
            }
        )
    if target is successes[0]:
        raise ValidationFailed(
            {"deployment_id": [f"the release of deployment {target.id} is the one serving now"]}
        )
    return target


def _queue(session: Session, deployment: Deployment, owner: UserRecord) -> None:
    """Add a queued deployment and count it in the app's listing, in the caller's
    transaction."""
    session.add(deployment)
    # An UPDATE of the row, not read-modify-write: concurrent creations all count.
    # Not for an app whose deletion began meanwhile (PostgreSQL re-reads the row).
    counted = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(App)
        .where(App.id == deployment.app_id, App.status != DELETING)
        .values(
            deployment_count=App.deployment_count + 1,
            deployments_version=App.deployments_version + 1,
        )
    ).rowcount
    if not counted:
        raise Conflict("This app is being deleted: it takes no new deployment.")
    session.flush()
    deployment.pusher = session.get(User, owner.id)  # type: ignore[assignment]


def _announce(bus: EventBus, deployment: Deployment) -> None:
    # Persisted; only now may anyone see it. The stream renders the full object itself.
    bus.publish(
        events.channel_for(deployment.app_id), {"type": "new", "id": deployment.id, "seq": 0}
    )


@dataclass(frozen=True)
class Page:
    items: list[DeploymentRecord]
    page: int
    per_page: int
    total_count: int


def list_deployments(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str, page: int, per_page: int
) -> Page:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
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
        items = [
            deployment_record(row)
            for row in session.scalars(
                select(Deployment)
                .where(Deployment.id.in_(page_ids))
                .order_by(Deployment.created_at.desc(), Deployment.id.desc())
            )
        ]
    return Page(items=items, page=page, per_page=per_page, total_count=total)


def get_deployment(
    session: Session,
    *,
    owner: UserRecord,
    app_name: str,
    deployment_id: str,
    action: Action = Action.READ,
) -> Deployment:
    app = authorize(session, user=owner, app_name=app_name, action=action)
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.app_id != app.id:
        raise NotFound("deployment")
    return deployment


def find_deployment(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str, deployment_id: str
) -> DeploymentRecord:
    with transaction(db) as session:
        return deployment_record(
            get_deployment(session, owner=owner, app_name=app_name, deployment_id=deployment_id)
        )


def deployment_output(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str, deployment_id: str
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
            timeline.deployment_ended(session, deployment=deployment)
        rows = events.append(
            session,
            deployment_id=deployment_id,
            entries=[*((events.LOG, line) for line in lines), (events.STATUS, new_status)],
        )
        _bump_version(session, deployment.app_id)
    events.publish(bus, app_id=deployment.app_id, rows=rows)
    return deployment


def cancel(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    owner: UserRecord,
    app_name: str,
    deployment_id: str,
) -> DeploymentRecord:
    with transaction(db) as session:
        deployment = get_deployment(
            session,
            owner=owner,
            app_name=app_name,
            deployment_id=deployment_id,
            action=Action.DEPLOY,
        )
        if st.is_final(deployment.status):
            raise Conflict(
                f"This deployment already ended ({deployment.status}); there is nothing to cancel."
            )
        if deployment.status != st.QUEUED:
            deployment.cancel_requested = True
            return deployment_record(deployment)
    try:
        ended = transition(
            db=db,
            bus=bus,
            deployment_id=deployment_id,
            new_status=st.ABORTED,
            lines=("-----> Deployment cancelled before it started.",),
        )
        return deployment_record(ended)
    except st.InvalidTransition:
        # A worker claimed it in between: ask the worker to stop it instead.
        with transaction(db) as session:
            deployment = get_deployment(
                session, owner=owner, app_name=app_name, deployment_id=deployment_id
            )
            deployment.cancel_requested = True
            return deployment_record(deployment)


def cancel_all(*, db: sessionmaker[Session], bus: EventBus, app_id: str, reason: str) -> int:
    """End the app's queued deployments and ask its workers to stop the running ones;
    the number still running (their workers end them within a poll, CancelCheck)."""
    with transaction(db) as session:
        active = list(
            session.execute(
                select(Deployment.id, Deployment.status).where(
                    Deployment.app_id == app_id, Deployment.status.not_in(st.FINAL)
                )
            )
        )
    running = 0
    for row in active:
        if row.status == st.QUEUED:
            try:
                transition(
                    db=db, bus=bus, deployment_id=row.id, new_status=st.ABORTED, lines=(reason,)
                )
                continue
            except st.InvalidTransition:
                pass  # a worker claimed it meanwhile: it is running now
        with transaction(db) as session:
            session.execute(
                update(Deployment).where(Deployment.id == row.id).values(cancel_requested=True)
            )
        running += 1
    return running


def cancel_requested(*, db: sessionmaker[Session], deployment_id: str) -> bool:
    with transaction(db) as session:
        return bool(
            session.scalar(
                select(Deployment.cancel_requested).where(Deployment.id == deployment_id)
            )
        )


def claim_next(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    worker_id: str,
    lease_seconds: int,
    worker_name: str | None = None,
) -> DeploymentRecord | None:
    """Take the oldest queued deployment of an app that has none active, as ``building``;
    ``None`` when there is none to take.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several worker processes claim at once;
    the conditional UPDATE makes the claim safe on SQLite too. A claim that another worker
    won is tried again on the next candidate, so that ``None`` means "nothing to claim"
    and the worker can wait for news.
    """
    for _ in range(CLAIM_ATTEMPTS):
        claimed = _claim_oldest(
            db=db,
            bus=bus,
            worker_id=worker_id,
            lease_seconds=lease_seconds,
            worker_name=worker_name,
        )
        if not isinstance(claimed, _LostRace):
            return None if claimed is None else deployment_record(claimed)
    return None


# Each lost race is another worker's claim, so the queue shrinks meanwhile; the bound only
# guards against a claim that keeps failing for a reason of its own (the poll covers it).
CLAIM_ATTEMPTS = 50


def _release_held_elsewhere(worker_name: str, lease_seconds: int) -> Exists:
    """A rollback whose release another live worker keeps (separate worker processes each
    keep releases in their own data dir): that worker claims it. If it is gone, anyone
    may, and the deployment then says the release is no longer kept."""
    target = aliased(Deployment)
    alive_since = now() - timedelta(seconds=SILENT_LEASES * lease_seconds)
    return exists().where(
        target.id == Deployment.rollback_of,
        target.built_by != worker_name,
        WorkerRow.name == target.built_by,
        WorkerRow.seen_at >= alive_since,
    )


class _LostRace:
    """What ``_claim_oldest`` returns when another worker claimed its candidate first."""


_LOST_RACE = _LostRace()


def _claim_oldest(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    worker_id: str,
    lease_seconds: int,
    worker_name: str | None,
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
        if worker_name is not None:
            query = query.where(~_release_held_elsewhere(worker_name, lease_seconds))
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
                built_by=worker_name,
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


def listing_key(*, engine: Engine, owner: UserRecord, app_name: str) -> ListingKey:
    """What a cached page of the app's deployments must match to still be current.

    One indexed row read on a bare connection: this runs on every listing request, and an
    ORM session around it cost more than the query."""
    with engine.connect() as connection:
        row = connection.execute(
            select(App.id, App.deployments_version).where(
                App.name == app_name, accessible_by(owner.id)
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
) -> list[DeploymentRecord]:
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
                transition_record(
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


def transition_record(**kwargs: Any) -> DeploymentRecord:
    return deployment_record(transition(**kwargs))


@dataclass(frozen=True)
class Job:
    """What a worker needs to build and start a claimed deployment."""

    deployment_id: str
    app_id: str
    app_name: str
    sandbox_uid: int
    source_url: str
    source_id: str | None
    env: dict[str, str]
    # The API process whose disk holds the uploaded source (sources.holder_url).
    source_holder: str | None = None
    # A rollback: the deployment whose release starts again, and what it was built with.
    rollback_of: str | None = None
    process_types: dict[str, str] | None = None
    config_vars: dict[str, str] | None = None
    # Who pushed it (addons a scalingo.json declares are provisioned as them), and whether
    # the app has never had a successful deployment (they are provisioned at the first).
    pusher: UserRecord | None = None
    first: bool = False


def load_job(*, db: sessionmaker[Session], deployment_id: str) -> Job:
    with transaction(db) as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            raise NotFound("deployment")
        app = session.get(App, deployment.app_id)
        if app is None:
            raise NotFound("app")
        target = session.get(Deployment, deployment.rollback_of) if deployment.rollback_of else None
        return Job(
            deployment_id=deployment.id,
            app_id=app.id,
            app_name=app.name,
            sandbox_uid=app.sandbox_uid,
            source_url=deployment.source_url,
            source_id=deployment.source_id,
            source_holder=(
                session.scalar(select(Source.holder_url).where(Source.id == deployment.source_id))
                if deployment.source_id is not None
                else None
            ),
            env=app_environment(session, app_id=app.id),
            rollback_of=deployment.rollback_of,
            process_types=dict(target.process_types or {}) if target is not None else None,
            config_vars=dict(target.config_vars or {}) if target is not None else None,
            pusher=user_record(deployment.pusher),
            first=not session.scalar(
                select(
                    exists().where(Deployment.app_id == app.id, Deployment.status == st.SUCCESS)
                )
            ),
        )


def replaced_releases(
    *, db: sessionmaker[Session], app_id: str, current_id: str, kept: int
) -> list[str]:
    """The app's ended deployments whose release files may go: all but ``current_id`` and
    the ``kept - 1`` successful ones before it (the release it replaced is still stopping,
    and is the one to go back to)."""
    with transaction(db) as session:
        rows = session.execute(
            select(Deployment.id, Deployment.status)
            .where(Deployment.app_id == app_id, Deployment.id != current_id)
            .order_by(Deployment.created_at.desc())
        ).all()
    previous = {row.id for row in rows if row.status == st.SUCCESS}
    still_kept = set([row.id for row in rows if row.id in previous][: kept - 1])
    return [row.id for row in rows if row.id not in still_kept and row.status in st.FINAL]
