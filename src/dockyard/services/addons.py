"""Addons: a PostgreSQL or Redis database of the app's own (``scalingo addons-add``).

Provisioning creates the row (``provisioning``), has the addon servers make the data and
start the server, then, in one transaction, marks it ``running``, sets the app's
variables (Scalingo's names, ``domain.addons``) and records the timeline; the app is then
restarted so its instances see the variables. Removing goes the other way: the variables
go first (and the app restarts without them), then the server and its data, then the row.
Backups belong to the app: one restores into the addon that replaced a removed one.

The addon token (``addons-info``) is a short-lived JWT for the database API of this
addon only, signed with a key derived from the server's: it is never a user credential.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.addons.base import AddonError, AddonServers, AddonSpec
from dockyard.backends.blobstore.base import BlobStore
from dockyard.db.engine import transaction
from dockyard.db.models import Addon, AddonBackup, App, Counter, Variable
from dockyard.domain import addons as catalogue
from dockyard.domain.records import UserRecord
from dockyard.errors import Conflict, NotFound, Unauthenticated, ValidationFailed
from dockyard.runtime.base import AppProcesses

# A module import: lifecycle imports this module too (destroying an app removes its addons).
from dockyard.services import lifecycle, timeline
from dockyard.services.access import Action, authorize
from dockyard.services.clock import as_utc, new_id, now

log = logging.getLogger(__name__)

RUNNING = "running"
PROVISIONING = "provisioning"
DEPROVISIONING = "deprovisioning"
# Addon servers' uids: far above the apps' (services/apps.FIRST_SANDBOX_UID), never reused.
FIRST_ADDON_UID = 1_000_000
ADDON_UID_COUNTER = "addon_uid"
TOKEN_SECONDS = 3600
NO_SERVERS = "This server runs no addons (they need the local runtime): see README, Addons."

NEW_ADDON = "new_addon"
UPGRADE_ADDON = "upgrade_addon"
DELETE_ADDON = "delete_addon"


@dataclass(frozen=True)
class AddonRecord:
    id: str
    app_id: str
    app_name: str
    provider: str
    plan: str
    resource_id: str
    status: str
    message: str
    created_at: datetime


@dataclass(frozen=True)
class BackupRecord:
    id: str
    app_id: str
    addon_id: str
    provider: str
    size: int
    created_at: datetime


@dataclass(frozen=True)
class Provisioned:
    addon: AddonRecord
    variables: list[str]
    message: str
    environment: dict[str, str]  # the variables' values, for a release about to start


def _record(row: Addon, app_name: str) -> AddonRecord:
    return AddonRecord(
        id=row.id,
        app_id=row.app_id,
        app_name=app_name,
        provider=row.provider,
        plan=row.plan,
        resource_id=row.resource_id,
        status=row.status,
        message=row.message,
        created_at=as_utc(row.created_at),
    )


def _backup_record(row: AddonBackup) -> BackupRecord:
    return BackupRecord(
        id=row.id,
        app_id=row.app_id,
        addon_id=row.addon_id,
        provider=row.provider,
        size=row.size,
        created_at=as_utc(row.created_at),
    )


def spec_of(row: Addon, app: App) -> AddonSpec:
    provider = catalogue.PROVIDERS[row.provider]
    plan = provider.plan(row.plan) or provider.plans[0]
    return AddonSpec(
        id=row.id,
        app_name=app.name,
        app_uid=app.sandbox_uid,
        host_uid=row.host_uid,
        provider=row.provider,
        resource_id=row.resource_id,
        password=row.password,
        port=row.port,
        memory_mb=plan.memory_mb,
        max_connections=plan.max_connections,
    )


def addon_url(servers: AddonServers, spec: AddonSpec) -> str:
    return catalogue.url(
        catalogue.PROVIDERS[spec.provider],
        user=spec.resource_id,
        password=spec.password,
        host=servers.host(spec.app_uid),
        port=spec.port,
        database=spec.resource_id,
    )


def _require(servers: AddonServers | None) -> AddonServers:
    if servers is None:
        raise Conflict(NO_SERVERS)
    return servers


# -- reading -----------------------------------------------------------------------------


def list_addons(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str
) -> list[AddonRecord]:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        rows = session.scalars(
            select(Addon).where(Addon.app_id == app.id).order_by(Addon.created_at)
        )
        return [_record(row, app.name) for row in rows]


def get_addon(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str, addon_id: str
) -> AddonRecord:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        return _record(_addon_of(session, app, addon_id), app.name)


def _addon_of(session: Session, app: App, addon_id: str) -> Addon:
    """The app's addon ``addon_id`` (``ad-…``), or its addon of that provider (the
    client's convention for arguments that are not ids)."""
    row = session.get(Addon, addon_id)
    if row is None or row.app_id != app.id:
        chosen = catalogue.provider(addon_id)
        row = None
        if chosen is not None:
            row = session.scalar(
                select(Addon).where(Addon.app_id == app.id, Addon.provider == chosen.id)
            )
    if row is None:
        raise NotFound("addon")
    return row


def running_specs(*, db: sessionmaker[Session]) -> list[AddonSpec]:
    """Every provisioned addon's server: what a starting server brings back."""
    with transaction(db) as session:
        rows = session.execute(
            select(Addon, App).join(App, App.id == Addon.app_id).where(Addon.status == RUNNING)
        ).all()
        return [spec_of(addon, app) for addon, app in rows]


# -- provisioning ------------------------------------------------------------------------


def _choose(provider_id: object, plan_id: object) -> tuple[catalogue.Provider, catalogue.Plan]:
    chosen = catalogue.provider(provider_id) if isinstance(provider_id, str) else None
    if chosen is None:
        known = ", ".join(sorted(catalogue.PROVIDERS))
        raise ValidationFailed({"addon_provider_id": [f"must be one of {known}"]})
    plan = chosen.plan(plan_id) if isinstance(plan_id, str) else None
    if plan is None:
        names = ", ".join(p.name for p in chosen.plans)
        raise ValidationFailed({"plan_id": [f"must be a plan of {chosen.id}: {names}"]})
    return chosen, plan


def _next_uid(session: Session) -> int:
    counter = session.get(Counter, ADDON_UID_COUNTER, with_for_update=True)
    highest = session.scalar(select(func.max(Addon.host_uid)))
    uid = max(counter.value if counter else 0, highest or 0, FIRST_ADDON_UID - 1) + 1
    if counter is None:
        session.add(Counter(name=ADDON_UID_COUNTER, value=uid))
    else:
        counter.value = uid
    return uid


def provision(
    *,
    db: sessionmaker[Session],
    servers: AddonServers | None,
    processes: AppProcesses | None,
    owner: UserRecord,
    app_name: str,
    provider_id: object,
    plan_id: object,
    restart: bool = True,
) -> Provisioned:
    """A new addon for the app, running, its variables set; the app restarted (when it
    runs and ``restart``) so that its instances see them."""
    running = _require(servers)
    chosen, plan = _choose(provider_id, plan_id)
    try:
        with transaction(db) as session:
            app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
            existing = session.scalar(
                select(Addon.id).where(Addon.app_id == app.id, Addon.provider == chosen.id)
            )
            if existing is not None:
                raise Conflict(
                    f"The app already has a {chosen.name} addon ({existing}): an app has one "
                    f"of each provider. Change its plan, or remove it first."
                )
            addon_id = catalogue.new_addon_id()
            row = Addon(
                id=addon_id,
                app_id=app.id,
                provider=chosen.id,
                plan=plan.name,
                resource_id=catalogue.resource_id(app.name, addon_id),
                status=PROVISIONING,
                message="",
                password=catalogue.new_password(),
                host_uid=_next_uid(session),
                port=running.free_port(chosen.id),
                created_at=now(),
            )
            session.add(row)
            session.flush()
            spec = spec_of(row, app)
    except IntegrityError:
        raise Conflict(f"The app already has a {chosen.name} addon.") from None
    try:
        running.provision(spec)
    except AddonError as exc:
        running.remove(spec)
        with transaction(db) as session:
            session.execute(delete(Addon).where(Addon.id == spec.id))
        raise Conflict(f"The {chosen.name} addon could not be provisioned: {exc.message}") from None
    url = addon_url(running, spec)
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        provisioned = session.get(Addon, spec.id)
        assert provisioned is not None
        provisioned.status = RUNNING
        added, modified = _set_variables(session, app, chosen.variables, url)
        timeline.add(
            session, app_id=app.id, app_name=app.name, user=owner, type=NEW_ADDON,
            data={
                "addon_provider_name": chosen.name,
                "plan_name": plan.name,
                "resource_id": provisioned.resource_id,
            },
        )  # fmt: skip
        timeline.variables_changed(session, app=app, user=owner, added=added, modified=modified)
        record = _record(provisioned, app.name)
    if restart:
        _restart(db, processes, owner, record, chosen.name)
    return Provisioned(
        addon=record,
        variables=list(chosen.variables),
        message=f"{chosen.name} {running.version(chosen.id)} is reachable by this app only, "
        f"at the URL in {chosen.variables[0]}.",
        environment=dict.fromkeys(chosen.variables, url),
    )


def provision_declared(
    *,
    db: sessionmaker[Session],
    servers: AddonServers | None,
    owner: UserRecord,
    app_name: str,
    declared: Sequence[tuple[str, str]],
) -> list[Provisioned]:
    """The addons a ``scalingo.json`` declares that the app lacks, provisioned (no restart:
    the deployment starts its release with the variables)."""
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.DEPLOY)
        have = set(session.scalars(select(Addon.provider).where(Addon.app_id == app.id)))
    return [
        provision(
            db=db,
            servers=servers,
            processes=None,
            owner=owner,
            app_name=app_name,
            provider_id=provider_id,
            plan_id=plan_name,
            restart=False,
        )
        for provider_id, plan_name in declared
        if provider_id not in have
    ]


def _set_variables(
    session: Session, app: App, names: Sequence[str], value: str
) -> tuple[list[str], list[str]]:
    existing = {
        v.name: v
        for v in session.scalars(
            select(Variable).where(Variable.app_id == app.id, Variable.name.in_(names))
        )
    }
    added, modified = [], []
    for name in names:
        variable = existing.get(name)
        if variable is None:
            session.add(Variable(id=new_id(), app_id=app.id, name=name, value=value))
            added.append(name)
        elif variable.value != value:
            variable.value = value
            modified.append(name)
    return added, modified


def _restart(
    db: sessionmaker[Session],
    processes: AppProcesses | None,
    owner: UserRecord,
    addon: AddonRecord,
    provider_name: str,
) -> None:
    """Restart the app's instances so that they see their variables as they are now."""
    if processes is None or processes.status(addon.app_name) == "new":
        return  # never deployed: its first deployment starts with them
    try:
        processes.restart_app(
            addon.app_name, (), lifecycle.release_environment(db=db, app_name=addon.app_name)
        )
    except Conflict:
        return
    timeline.record(
        db=db, app_id=addon.app_id, app_name=addon.app_name, user=owner, type=timeline.RESTART,
        data={"scope": [], "addon_name": provider_name, "reason": "addon change"},
    )  # fmt: skip


# -- changing the plan --------------------------------------------------------------------


def change_plan(
    *,
    db: sessionmaker[Session],
    servers: AddonServers | None,
    owner: UserRecord,
    app_name: str,
    addon_id: str,
    plan_id: object,
) -> AddonRecord:
    """``addons-upgrade``: the server restarts with the new plan's limits, on its data (its
    URL does not change, so the app needs no restart)."""
    running = _require(servers)
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        row = _addon_of(session, app, addon_id)
        chosen, plan = _choose(row.provider, plan_id)
        old_plan = row.plan
        if plan.name == old_plan:
            return _record(row, app.name)
        if row.status != RUNNING:
            raise Conflict(f"The addon is {row.status}: change its plan once it runs.")
        row.plan = plan.name
        spec = spec_of(row, app)
        timeline.add(
            session, app_id=app.id, app_name=app.name, user=owner, type=UPGRADE_ADDON,
            data={
                "addon_provider_name": chosen.name,
                "plan_name": plan.name,
                "resource_id": row.resource_id,
                "old_plan_name": old_plan,
                "new_plan_name": plan.name,
            },
        )  # fmt: skip
        record = _record(row, app.name)
    try:
        running.restart(spec)
    except AddonError as exc:
        raise Conflict(
            f"The plan is now {plan.name}, but the server did not start with it: {exc.message} "
            "It is retried; change the plan back if it keeps failing."
        ) from None
    return record


# -- removing ----------------------------------------------------------------------------


def remove(
    *,
    db: sessionmaker[Session],
    servers: AddonServers | None,
    processes: AppProcesses | None,
    owner: UserRecord,
    app_name: str,
    addon_id: str,
) -> AddonRecord:
    """The variables go (and the app restarts without them), then the data, then the row."""
    running = _require(servers)
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        row = _addon_of(session, app, addon_id)
        spec = spec_of(row, app)
        chosen = catalogue.PROVIDERS[row.provider]
        url = addon_url(running, spec)
        ours = list(
            session.scalars(
                select(Variable).where(
                    Variable.app_id == app.id,
                    Variable.name.in_(chosen.variables),
                    Variable.value == url,
                )
            )
        )
        for variable in ours:
            session.delete(variable)
        row.status = DEPROVISIONING
        timeline.variables_changed(
            session, app=app, user=owner, removed=[variable.name for variable in ours]
        )
        timeline.add(
            session, app_id=app.id, app_name=app.name, user=owner, type=DELETE_ADDON,
            data={
                "addon_provider_name": chosen.name,
                "plan_name": row.plan,
                "resource_id": row.resource_id,
            },
        )  # fmt: skip
        record = _record(row, app.name)
    _restart(db, processes, owner, record, chosen.name)
    running.remove(spec)
    with transaction(db) as session:
        session.execute(delete(Addon).where(Addon.id == spec.id))
    return record


def remove_all(*, db: sessionmaker[Session], servers: AddonServers | None, app_id: str) -> None:
    """Stop every addon server of an app being destroyed and delete their data (its rows
    and backups' rows go with the app's); its backups' blobs are deleted by the caller."""
    with transaction(db) as session:
        rows = session.execute(
            select(Addon, App).join(App, App.id == Addon.app_id).where(Addon.app_id == app_id)
        ).all()
        specs = [spec_of(addon, app) for addon, app in rows]
    if servers is None:
        return
    for spec in specs:
        servers.remove(spec)


def finish_interrupted(*, db: sessionmaker[Session], servers: AddonServers) -> list[str]:
    """After a crash: addons a provisioning or a removal was cut short in the middle of
    are removed (a half-made server is no database; a half-removed one had lost its
    variables already), so that the app can have one of that provider again. Only where
    no other process may be provisioning at this moment (a single server process)."""
    with transaction(db) as session:
        rows = session.execute(
            select(Addon, App)
            .join(App, App.id == Addon.app_id)
            .where(Addon.status.in_([PROVISIONING, DEPROVISIONING]))
        ).all()
        specs = [spec_of(addon, app) for addon, app in rows]
    for spec in specs:
        servers.remove(spec)
        with transaction(db) as session:
            session.execute(delete(Addon).where(Addon.id == spec.id))
    return [spec.id for spec in specs]


def backup_keys(*, db: sessionmaker[Session], app_id: str) -> list[str]:
    with transaction(db) as session:
        ids = session.scalars(select(AddonBackup.id).where(AddonBackup.app_id == app_id))
        return [_backup_key(app_id, backup_id) for backup_id in ids]


# -- the database API (addons-info) ------------------------------------------------------


def _token_key(key: bytes) -> bytes:
    return hmac.new(key, b"dockyard addon tokens", hashlib.sha256).digest()


def addon_token(
    *, db: sessionmaker[Session], key: bytes, owner: UserRecord, app_name: str, addon_id: str
) -> str:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        row = _addon_of(session, app, addon_id)
        claims = {"addon": row.id, "sub": owner.id, "exp": int(time.time()) + TOKEN_SECONDS}
    return jwt.encode(claims, _token_key(key), algorithm="HS256")


def database_info(
    *,
    db: sessionmaker[Session],
    servers: AddonServers | None,
    key: bytes,
    token: str,
    addon_id: str,
) -> dict[str, Any]:
    """What the database API tells ``addons-info`` about the addon the token is for."""
    try:
        claims = jwt.decode(
            token, _token_key(key), algorithms=["HS256"], options={"require": ["exp", "addon"]}
        )
    except jwt.PyJWTError:
        raise Unauthenticated(
            "Invalid or expired addon token: ask for a new one (POST …/addons/ID/token)."
        ) from None
    if claims["addon"] != addon_id:
        raise NotFound("database")
    with transaction(db) as session:
        row = session.get(Addon, addon_id)
        if row is None:
            raise NotFound("database")
        provider, plan, status = row.provider, row.plan, row.status
    version = servers.version(provider) if servers is not None else "unknown"
    return {
        "id": addon_id,
        "type_name": provider,
        "readable_version": version,
        "plan": plan,
        "status": status,
        # No TLS (the connection never leaves the host) and never reachable from the
        # Internet: both features are off, as the client shows by default.
        "features": [],
        "maintenance_window": {"weekday_utc": 0, "starting_hour_utc": 0, "duration_in_hour": 0},
    }


# -- backups -----------------------------------------------------------------------------


def scratch_dir(data_dir: Path) -> Path:
    """Where backups are written before they go to the blob store (emptied at start)."""
    return data_dir / "tmp" / "addon-backups"


def _backup_key(app_id: str, backup_id: str) -> str:
    return f"addon-backups/{app_id}/{backup_id}"


def backup(
    *,
    db: sessionmaker[Session],
    servers: AddonServers | None,
    blobs: BlobStore,
    scratch: Path,
    owner: UserRecord,
    app_name: str,
    addon_id: str,
) -> BackupRecord:
    """A dump of the addon's data (pg_dump's SQL, or Redis's RDB snapshot) in the blob store."""
    running = _require(servers)
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        row = _addon_of(session, app, addon_id)
        if row.status != RUNNING:
            raise Conflict(f"The addon is {row.status}: back it up once it runs.")
        spec = spec_of(row, app)
        app_id = app.id
    backup_id = new_id()
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as work:
        target = Path(work) / "backup"
        try:
            running.backup(spec, target)
        except AddonError as exc:
            raise Conflict(f"The backup failed: {exc.message}") from None
        size = target.stat().st_size
        blobs.put_file(_backup_key(app_id, backup_id), target)
    with transaction(db) as session:
        backup_row = AddonBackup(
            id=backup_id,
            app_id=app_id,
            addon_id=spec.id,
            provider=spec.provider,
            size=size,
            created_at=now(),
        )
        session.add(backup_row)
        session.flush()
        return _backup_record(backup_row)


def list_backups(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str
) -> list[BackupRecord]:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        rows = session.scalars(
            select(AddonBackup)
            .where(AddonBackup.app_id == app.id)
            .order_by(AddonBackup.created_at.desc())
        )
        return [_backup_record(row) for row in rows]


def restore(
    *,
    db: sessionmaker[Session],
    servers: AddonServers | None,
    blobs: BlobStore,
    owner: UserRecord,
    app_name: str,
    addon_id: str,
    backup_id: object,
) -> AddonRecord:
    """Put a backup of the app's (of this provider's) back into the addon."""
    running = _require(servers)
    if not isinstance(backup_id, str) or not backup_id:
        raise ValidationFailed({"backup_id": ["is required: the id addons-backup printed"]})
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        row = _addon_of(session, app, addon_id)
        found = session.get(AddonBackup, backup_id)
        if found is None or found.app_id != app.id:
            raise NotFound("backup")
        if found.provider != row.provider:
            raise Conflict(
                f"Backup {backup_id} is of a {found.provider} addon; this addon is {row.provider}."
            )
        spec = spec_of(row, app)
        record = _record(row, app.name)
        key = _backup_key(app.id, found.id)
    try:
        running.restore(spec, blobs.local_path(key))
    except FileNotFoundError:
        raise NotFound("backup") from None
    except AddonError as exc:
        raise Conflict(f"The restore failed: {exc.message}") from None
    return record
