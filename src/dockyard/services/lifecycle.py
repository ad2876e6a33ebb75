"""What happens to an app's running processes and files around its lifetime."""

from __future__ import annotations

import functools
import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.addons.base import AddonServers
from dockyard.backends.blobstore.base import BlobStore
from dockyard.backends.eventbus.base import ALL_CHANNELS, Event, EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment
from dockyard.domain.formation import Quotas, Scale
from dockyard.domain.records import AppRecord, UserRecord
from dockyard.domain.status import SUCCESS
from dockyard.errors import Conflict, DockyardError
from dockyard.pipeline import cache, package
from dockyard.runtime.base import AppProcesses, Instance, ReleaseArtifacts
from dockyard.services import addons as addons_service
from dockyard.services import apps as apps_service
from dockyard.services import build_caches, events, formation, operations, routing, timeline
from dockyard.services import deployments as deployments_service
from dockyard.services.access import Action
from dockyard.settings import Settings

log = logging.getLogger(__name__)


def cache_dir(settings: Settings, app_id: str) -> Path:
    return settings.caches_dir / app_id


def slug_key(deployment_id: str) -> str:
    return f"slugs/{deployment_id}{package.SLUG_SUFFIX}"


def destroy_app(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    blobs: BlobStore,
    settings: Settings,
    processes: AppProcesses | None,
    owner: UserRecord,
    name: str,
    artifacts: ReleaseArtifacts | None = None,
    addons: AddonServers | None = None,
) -> None:
    """Stop the app's deployments and processes, then delete it and everything it stored:
    its addons' servers and data, and their backups, included.

    Its deployments end first (a running one is cancelled and its worker stops what it
    started), so that no worker is left writing to rows that are gone, and no release is
    switched to after its app's processes were stopped. Its sandbox uid is never given to
    another app (apps._next_sandbox_uid). Only the owner may (``Action.DESTROY``)."""
    app = apps_service.mark_deleting(db=db, owner=owner, name=name)
    _end_deployments(db, bus, app.id)
    # Before the processes: removing them removes the app's network namespace, which
    # the addon servers run in.
    addons_service.remove_all(db=db, servers=addons, app_id=app.id)
    backups = addons_service.backup_keys(db=db, app_id=app.id)
    if processes is not None:
        processes.remove_app(app.name)
    with transaction(db) as session:
        deployment_ids = list(
            session.scalars(
                select(Deployment.id)
                .where(Deployment.app_id == app.id)
                .order_by(Deployment.created_at)
            )
        )
    apps_service.delete_app(db=db, owner=owner, name=name)
    # The worker that runs the app, if it runs in another process, stops it now.
    routing.forget_app(db=db, bus=bus, app=app.name)
    # Whoever keeps something of the app in memory (its listing key) forgets it.
    bus.publish(events.channel_for(app.id), {"type": events.APP_DELETED})
    for deployment_id in deployment_ids:
        blobs.delete(slug_key(deployment_id))
        shutil.rmtree(settings.releases_dir / deployment_id, ignore_errors=True)
        shutil.rmtree(settings.builds_dir / deployment_id, ignore_errors=True)
        if artifacts is not None:
            try:
                artifacts.remove(app=app.name, release_id=deployment_id)
            except DockyardError as exc:
                # The app is gone already; what is left costs the registry space only.
                log.warning(
                    "the image of %s/%s could not be removed: %s", app.name, deployment_id, exc
                )
    for key in backups:
        blobs.delete(key)
    cache.discard(cache_dir(settings, app.id))
    # This process's copy of the cache workers share; the holder's, if another API
    # process, goes when it hears of the deletion (its record went with the app).
    blobs.delete(build_caches.blob_key(app.id))
    # Workers keep the releases they built: the newest are the ones still on disk (older
    # ones were pruned as releases were replaced).
    recent = deployment_ids[-RELEASES_TOLD:]
    bus.publish(CACHES_CHANNEL, {"type": CACHE_DISCARDED, "app_id": app.id, "releases": recent})
    shutil.rmtree(settings.logs_dir / app.name, ignore_errors=True)


# How long deleting an app waits for its running deployment to stop: cancelling is seen
# within half a second, but a step may take longer to notice (a download under way).
DELETE_WAIT_SECONDS = 60.0


def _end_deployments(db: sessionmaker[Session], bus: EventBus, app_id: str) -> None:
    deadline = time.monotonic() + DELETE_WAIT_SECONDS
    reason = "-----> Deployment aborted: its app is being deleted."
    while deployments_service.cancel_all(db=db, bus=bus, app_id=app_id, reason=reason):
        if time.monotonic() > deadline:
            raise Conflict(
                "The app's deployment is still stopping; try deleting the app again in a minute."
            )
        time.sleep(0.1)


def reset_cache(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    blobs: BlobStore,
    settings: Settings,
    owner: UserRecord,
    name: str,
) -> None:
    """Forget the app's build cache: its next deployment builds from scratch. Worker
    processes keep caches of their own: they hear it on the bus (``CACHES_CHANNEL``)."""
    app = apps_service.find_app(db=db, owner=owner, name=name, action=Action.DEPLOY)
    cache.reset(saved=cache_dir(settings, app.id))
    # The copy workers share (dockyard worker), whichever API process holds it.
    build_caches.reset(db=db, blobs=blobs, app_id=app.id)
    bus.publish(CACHES_CHANNEL, {"type": CACHE_RESET, "app_id": app.id})


# Build caches are kept by whoever builds (``serve``, or each ``dockyard worker``): a
# reset, or the app's deletion, is told to all of them.
CACHES_CHANNEL = "caches"
CACHE_RESET = "reset"
CACHE_DISCARDED = "discard"
RELEASES_TOLD = 50  # far more than DOCKYARD_RELEASES_KEPT plus the builds under way


def follow_cache_changes(bus: EventBus, settings: Settings) -> None:
    """In a worker process: reset this worker's cache of an app when told, or forget its
    cache and releases when the app was deleted."""

    def observe(channel: str, events: Sequence[Event]) -> None:
        if channel != CACHES_CHANNEL:
            return
        for event in events:
            app_id = event.get("app_id")
            if not isinstance(app_id, str) or not _is_id(app_id):
                continue
            if event.get("type") == CACHE_RESET:
                work = functools.partial(cache.reset, cache_dir(settings, app_id))
            else:
                releases = [str(r) for r in event.get("releases") or [] if _is_id(str(r))]
                work = functools.partial(_forget_app_files, settings, app_id, releases)
            # Off the bus's thread: a reset waits for the cache to settle.
            threading.Thread(target=work, daemon=True).start()

    bus.observe(observe)


def drop_stale_caches(
    bus: EventBus, db: sessionmaker[Session], blobs: BlobStore, holder_url: str
) -> None:
    """In an API process: drop its copy of an app's shared build cache once it is no
    longer the one recorded (reset through another process, the app deleted, or a newer
    cache sent to another process). Until then it is never served (build_caches.held)."""

    def observe(channel: str, events: Sequence[Event]) -> None:
        if channel == ALL_CHANNELS:  # events were missed: look at every app's record
            threading.Thread(
                target=_drop_all_stale_caches, args=(db, blobs, holder_url), daemon=True
            ).start()
        if channel not in (CACHES_CHANNEL, build_caches.HOLDERS_CHANNEL):
            return
        for event in events:
            app_id = event.get("app_id")
            if isinstance(app_id, str) and _is_id(app_id):
                # Off the bus's thread: it waits for the app's cache record.
                threading.Thread(
                    target=_drop_stale_cache, args=(db, blobs, app_id, holder_url), daemon=True
                ).start()

    bus.observe(observe)


def _drop_all_stale_caches(db: sessionmaker[Session], blobs: BlobStore, holder_url: str) -> None:
    try:
        build_caches.drop_all_stale(db=db, blobs=blobs, holder_url=holder_url)
    except Exception:  # the next gap, or the next start, tries again
        log.exception("dropping stale build caches failed")


def _drop_stale_cache(
    db: sessionmaker[Session], blobs: BlobStore, app_id: str, holder_url: str
) -> None:
    try:
        build_caches.drop_stale(db=db, blobs=blobs, app_id=app_id, holder_url=holder_url)
    except Exception:  # the next change of the app's cache tries again
        log.exception("dropping a stale build cache of app %s failed", app_id)


def _is_id(value: str) -> bool:
    return bool(value) and "/" not in value and not value.startswith(".")


def _forget_app_files(settings: Settings, app_id: str, releases: list[str]) -> None:
    cache.discard(cache_dir(settings, app_id))
    for release_id in releases:
        shutil.rmtree(settings.releases_dir / release_id, ignore_errors=True)


def release_environment(*, db: sessionmaker[Session], app_name: str) -> dict[str, str]:
    """What the current release runs with: its buildpack defaults under the app's variables.

    Variables changed since the deployment apply here too, so a restart picks them up."""
    with transaction(db) as session:
        app = session.scalar(select(App).where(App.name == app_name))
        if app is None:
            return {}
        defaults = session.scalar(
            select(Deployment.config_vars)
            .where(Deployment.app_id == app.id, Deployment.status == SUCCESS)
            .order_by(Deployment.created_at.desc())
            .limit(1)
        )
        return {**(defaults or {}), **apps_service.app_environment(session, app_id=app.id)}


def _running_app(
    db: sessionmaker[Session],
    processes: AppProcesses | None,
    owner: UserRecord,
    name: str,
    action: Action = Action.MANAGE,
) -> tuple[AppRecord, AppProcesses]:
    app = apps_service.find_app(db=db, owner=owner, name=name, action=action)
    if processes is None:
        raise Conflict("This server runs no apps (no runtime is configured).")
    return app, processes


def stop_app(
    *, db: sessionmaker[Session], processes: AppProcesses | None, owner: UserRecord, name: str
) -> AppRecord:
    app, running = _running_app(db, processes, owner, name)
    running.stop_app(app.name)
    timeline.record(
        db=db, app_id=app.id, app_name=app.name, user=owner, type=timeline.STOP_APP,
        data={"reason": "stopped by a user"},
    )  # fmt: skip
    return app


def start_app(
    *, db: sessionmaker[Session], processes: AppProcesses | None, owner: UserRecord, name: str
) -> AppRecord:
    app, running = _running_app(db, processes, owner, name)
    running.start_app(app.name)
    return app


def restart_app(
    *,
    db: sessionmaker[Session],
    processes: AppProcesses | None,
    owner: UserRecord,
    name: str,
    scope: Sequence[str] = (),
    timeout: float = 60.0,
) -> tuple[AppRecord, operations.OperationRecord]:
    """Restart the instances in ``scope`` (types or instance names; all when empty); the
    operation is done once they run again."""
    app, running = _running_app(db, processes, owner, name)
    # Restarted instances run with the app's variables as they are now (env-set, then restart).
    running.restart_app(app.name, scope, release_environment(db=db, app_name=app.name))
    timeline.record(
        db=db, app_id=app.id, app_name=app.name, user=owner, type=timeline.RESTART,
        data={"scope": list(scope), "reason": "user_restart"},
    )
    return app, _follow(db, running, app, "restart", timeout)


def scale_app(
    *,
    db: sessionmaker[Session],
    processes: AppProcesses | None,
    owner: UserRecord,
    name: str,
    items: object,
    quotas: Quotas,
    timeout: float = 60.0,
) -> tuple[AppRecord, dict[str, Scale], operations.OperationRecord]:
    """Store the new formation, then have the runtime reconcile the app towards it; the
    operation is done once every instance it asks for runs."""
    app, wanted = formation.scale(db=db, owner=owner, app_name=name, items=items, quotas=quotas)
    if processes is not None:
        processes.scale(app.name, wanted, release_environment(db=db, app_name=app.name))
    return app, wanted, _follow(db, processes, app, "scale", timeout)


def _follow(
    db: sessionmaker[Session],
    processes: AppProcesses | None,
    app: AppRecord,
    kind: str,
    timeout: float,
) -> operations.OperationRecord:
    operation = operations.start(db=db, app_id=app.id, type=kind)
    operations.watch(
        db=db,
        operation_id=operation.id,
        done=(lambda: True) if processes is None else (lambda: processes.converged(app.name)),
        timeout=timeout,
        failure=f"not every instance was running {timeout:g} seconds after the {kind}",
    )
    return operation


def instances(
    *, db: sessionmaker[Session], processes: AppProcesses | None, owner: UserRecord, name: str
) -> tuple[AppRecord, list[Instance]]:
    app = apps_service.find_app(db=db, owner=owner, name=name)
    return app, [] if processes is None else processes.observe(app.name)


def app_status(processes: AppProcesses | None, app_name: str) -> str | None:
    return None if processes is None else str(processes.status(app_name))


def recent_logs(
    *,
    db: sessionmaker[Session],
    processes: AppProcesses | None,
    owner: UserRecord,
    name: str,
    lines: int,
) -> list[str]:
    app, running = _running_app(db, processes, owner, name, Action.READ)
    return list(running.app_logs(app.name, lines=lines))


def rename_app(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    processes: AppProcesses | None,
    owner: UserRecord,
    name: str,
    current_name: object,
    new_name: object,
) -> AppRecord:
    """Rename the app; its route, running instances and logs follow (``rename_app``)."""
    app, old_name = apps_service.rename_app(
        db=db, owner=owner, name=name, current_name=current_name, new_name=new_name
    )
    if processes is not None:
        processes.rename_app(old_name, app.name)
    # Caches keyed by the old name (the deployment listing's) forget it.
    bus.publish(events.channel_for(app.id), {"type": events.ACCESS_CHANGED})
    return app
