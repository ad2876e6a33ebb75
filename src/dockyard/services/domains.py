"""Custom domains of apps, their certificates of their own, and force-HTTPS.

A domain belongs to one app across all users: the name is unique in the table, so a
second claim (by anyone) is a 422 that says the name is taken. Each change is published
on the bus's ``DOMAINS_CHANNEL``; the serving process observes it and reloads the route
table's host aliases (``sync_routes``), so the router serves the change before the API
answers the request that made it.

An owner's private key never goes into the database nor back out of the API: it is a
0600 file in ``keys_dir`` (0700), next to its certificate, where the HTTPS router loads
both from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.eventbus.base import EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import App, Domain
from dockyard.domain.hostnames import domain_name_problems, normalize
from dockyard.domain.records import AppRecord, DomainRecord, UserRecord
from dockyard.errors import NotFound, ValidationFailed
from dockyard.routetable import RouteTable
from dockyard.services import certificates, timeline
from dockyard.services.access import Action, authorize
from dockyard.services.clock import as_utc, new_id, now
from dockyard.services.records import app_record

DOMAINS_CHANNEL = "_domains"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OwnCertificate:
    """Where the HTTPS router finds a domain's certificate of its owner's."""

    host: str
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class RoutingSnapshot:
    """What the routers need from the database: extra host names, and who wants HTTPS."""

    aliases: dict[str, str]  # custom host name -> app name
    force_https: frozenset[str]  # app names
    own_certificates: tuple[OwnCertificate, ...]


def _record(row: Domain, app_name: str) -> DomainRecord:
    return DomainRecord(
        id=row.id,
        app_id=row.app_id,
        app_name=app_name,
        name=row.name,
        letsencrypt_enabled=row.letsencrypt_enabled,
        tlscert=row.tlscert,
        created_at=as_utc(row.created_at),
    )


def list_domains(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str
) -> list[DomainRecord]:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        rows = session.scalars(select(Domain).where(Domain.app_id == app.id).order_by(Domain.name))
        return [_record(row, app.name) for row in rows]


def add_domain(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    keys_dir: Path,
    apps_domain: str,
    allow_wildcard: bool,
    owner: UserRecord,
    app_name: str,
    name: object,
    tlscert: object = None,
    tlskey: object = None,
    letsencrypt_enabled: object = True,
) -> DomainRecord:
    """Claim ``name`` for the app; with ``tlscert`` and ``tlskey`` it is served with that
    certificate instead of one obtained automatically."""
    if not isinstance(letsencrypt_enabled, bool):
        raise ValidationFailed({"letsencrypt_enabled": ["must be true or false"]})
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
    problems = domain_name_problems(
        name, app_name=app.name, apps_domain=apps_domain, allow_wildcard=allow_wildcard
    )
    if problems:
        raise ValidationFailed({"name": problems})
    assert isinstance(name, str)
    host = normalize(name)
    own = tlscert is not None or tlskey is not None
    if own:
        certificates.check_pair(name=host, tlscert=tlscert, tlskey=tlskey)
    domain_id = new_id()
    try:
        with transaction(db) as session:
            if session.scalar(select(Domain.id).where(Domain.name == host)) is not None:
                raise ValidationFailed({"name": [_TAKEN]})
            row = Domain(
                id=domain_id,
                app_id=app.id,
                name=host,
                letsencrypt_enabled=letsencrypt_enabled,
                tlscert=tlscert if own else None,
                created_at=now(),
            )
            session.add(row)
            session.flush()
            if own:
                assert isinstance(tlscert, str) and isinstance(tlskey, str)
                _write_pair(keys_dir, domain_id, tlscert, tlskey)
            record = _record(row, app.name)
    except IntegrityError:
        raise ValidationFailed({"name": [_TAKEN]}) from None
    _changed(db, bus, owner, record, "new_domain", {"hostname": host, "ssl": own})
    return record


_TAKEN = "is already used by an app: a domain can belong to one app only; remove it there first"


def update_domain(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    keys_dir: Path,
    owner: UserRecord,
    app_name: str,
    domain_id: str,
    fields: dict[str, Any],
) -> DomainRecord:
    """``domains-ssl``: set (``tlscert`` and ``tlskey``) or remove (both empty) the domain's
    own certificate; ``letsencrypt_enabled`` may change too."""
    with transaction(db) as session:
        row = _get_domain(session, owner=owner, app_name=app_name, domain_id=domain_id)
        had_cert = row.tlscert is not None
        if "letsencrypt_enabled" in fields:
            if not isinstance(fields["letsencrypt_enabled"], bool):
                raise ValidationFailed({"letsencrypt_enabled": ["must be true or false"]})
            row.letsencrypt_enabled = fields["letsencrypt_enabled"]
        if "tlscert" in fields or "tlskey" in fields:
            cert, key = fields.get("tlscert"), fields.get("tlskey")
            if not cert and not key:
                row.tlscert = None
                _remove_pair(keys_dir, row.id)
            else:
                certificates.check_pair(name=row.name, tlscert=cert, tlskey=key)
                assert isinstance(cert, str) and isinstance(key, str)
                _write_pair(keys_dir, row.id, cert, key)
                row.tlscert = cert
        record = _record(row, app_name)
    has_cert = record.tlscert is not None
    _changed(db, bus,
        owner,
        record,
        "edit_domain",
        {"hostname": record.name, "ssl": has_cert, "old_ssl": had_cert},
    )
    return record


def remove_domain(
    *,
    db: sessionmaker[Session],
    bus: EventBus,
    keys_dir: Path,
    owner: UserRecord,
    app_name: str,
    domain_id: str,
) -> None:
    with transaction(db) as session:
        row = _get_domain(session, owner=owner, app_name=app_name, domain_id=domain_id)
        record = _record(row, app_name)
        session.delete(row)
    _remove_pair(keys_dir, record.id)
    _changed(db, bus, owner, record, "delete_domain", {"hostname": record.name})


def set_force_https(
    *, db: sessionmaker[Session], bus: EventBus, owner: UserRecord, app_name: str, enabled: object
) -> AppRecord:
    """``scalingo force-https``: plain-HTTP requests to the app get a redirect to HTTPS."""
    if not isinstance(enabled, bool):
        raise ValidationFailed({"force_https": ["must be true or false"]})
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        app.force_https = enabled
        app.updated_at = now()
        record = app_record(app)
    bus.publish(DOMAINS_CHANNEL, {"type": "force_https", "app": app_name})
    record_timeline(
        db=db,
        owner=owner,
        app_id=record.id,
        app_name=record.name,
        event_type="edit_app",
        data={"force_https": enabled},
    )
    return record


def _get_domain(session: Session, *, owner: UserRecord, app_name: str, domain_id: str) -> Domain:
    app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
    row = session.get(Domain, domain_id)
    if row is None or row.app_id != app.id:
        raise NotFound("domain")
    return row


def _changed(
    db: sessionmaker[Session],
    bus: EventBus,
    owner: UserRecord,
    record: DomainRecord,
    event_type: str,
    data: dict[str, Any],
) -> None:
    bus.publish(DOMAINS_CHANNEL, {"type": event_type, "app": record.app_name, "name": record.name})
    record_timeline(
        db=db,
        owner=owner,
        app_id=record.app_id,
        app_name=record.app_name,
        event_type=event_type,
        data=data,
    )


def record_timeline(
    *,
    db: sessionmaker[Session],
    owner: UserRecord,
    app_id: str,
    app_name: str,
    event_type: str,
    data: dict[str, Any],
) -> None:
    """The app's timeline entry for a domain change (``new_domain``, ``edit_domain``,
    ``delete_domain``, ``edit_app``, with the ``type_data`` of API-OPS §6)."""
    timeline.record(
        db=db, app_id=app_id, app_name=app_name, user=owner, type=event_type, data=data
    )


# --- what the routers read ------------------------------------------------------------


def routing_snapshot(*, db: sessionmaker[Session], keys_dir: Path) -> RoutingSnapshot:
    with transaction(db) as session:
        rows = session.execute(
            select(Domain.name, Domain.id, Domain.tlscert, App.name).join(
                App, App.id == Domain.app_id
            )
        ).all()
        forced = session.scalars(select(App.name).where(App.force_https.is_(True))).all()
    return RoutingSnapshot(
        aliases={name: app for name, _id, _cert, app in rows},
        force_https=frozenset(forced),
        own_certificates=tuple(
            OwnCertificate(name, *_pair_paths(keys_dir, domain_id))
            for name, domain_id, cert, _app in rows
            if cert is not None
        ),
    )


def sync_routes(
    *, db: sessionmaker[Session], keys_dir: Path, routes: RouteTable
) -> RoutingSnapshot:
    """Load the custom host names and force-HTTPS apps into the route table."""
    snapshot = routing_snapshot(db=db, keys_dir=keys_dir)
    _remove_orphan_keys(keys_dir, keep={c.key_file for c in snapshot.own_certificates})
    routes.set_hosts(
        aliases=snapshot.aliases,
        force_https=snapshot.force_https,
        own_certificates={
            c.host: (str(c.cert_file), str(c.key_file)) for c in snapshot.own_certificates
        },
    )
    return snapshot


def may_obtain_certificate(*, db: sessionmaker[Session], apps_domain: str, host: str) -> bool:
    """The HTTPS router's ``ask``: may it order a certificate for ``host``? Only for the
    names an app has (its ``APP.<apps_domain>`` and its custom domains that want one)."""
    host = normalize(host)
    suffix = "." + apps_domain
    with transaction(db) as session:
        if host.endswith(suffix):
            label = host[: -len(suffix)]
            if "." not in label and session.scalar(select(App.id).where(App.name == label)):
                return True
        row = session.scalar(select(Domain).where(Domain.name == host))
        if row is None and "." in host:  # a name under a wildcard domain (operator-allowed)
            row = session.scalar(select(Domain).where(Domain.name == "*." + host.split(".", 1)[1]))
        return row is not None and row.letsencrypt_enabled and row.tlscert is None


# --- keys on disk -----------------------------------------------------------------------


def _pair_paths(keys_dir: Path, domain_id: str) -> tuple[Path, Path]:
    return keys_dir / f"{domain_id}.crt", keys_dir / f"{domain_id}.key"


def _write_pair(keys_dir: Path, domain_id: str, cert: str, key: str) -> None:
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for path, text in zip(_pair_paths(keys_dir, domain_id), (cert, key), strict=True):
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            f.write(text)
        os.replace(partial, path)


def _remove_orphan_keys(keys_dir: Path, *, keep: set[Path]) -> None:
    """Delete the certificates and keys of domains that are gone (their app was deleted,
    which removes its domains' rows without this service). Files younger than a minute are
    left alone: they may belong to a domain whose row is not committed yet."""
    if not keys_dir.is_dir():
        return
    settled = time.time() - 60
    for key_file in keys_dir.glob("*.key"):
        with contextlib.suppress(FileNotFoundError):
            if key_file not in keep and key_file.stat().st_mtime < settled:
                _remove_pair(keys_dir, key_file.stem)


def _remove_pair(keys_dir: Path, domain_id: str) -> None:
    for path in _pair_paths(keys_dir, domain_id):
        path.unlink(missing_ok=True)
