"""Formations: how many instances of each process type an app runs, and their size; and
the quotas that bound them per user."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment, FormationRow
from dockyard.domain import formation as fm
from dockyard.domain.formation import Quotas, Scale
from dockyard.domain.records import AppRecord, UserRecord
from dockyard.domain.status import SUCCESS
from dockyard.errors import ValidationFailed
from dockyard.services import timeline
from dockyard.services.access import Action, authorize
from dockyard.services.records import app_record, user_record


@dataclass(frozen=True)
class ProcessType:
    """A process type of the app's current release, and its place in the formation."""

    name: str
    command: str
    amount: int
    size: str


def formation_of(session: Session, app_id: str) -> dict[str, Scale]:
    rows = session.scalars(select(FormationRow).where(FormationRow.app_id == app_id))
    return {row.process_type: Scale(row.amount, row.size) for row in rows}


def read_formation(*, db: sessionmaker[Session], app_id: str) -> dict[str, Scale]:
    with transaction(db) as session:
        return formation_of(session, app_id)


def for_release(
    *, db: sessionmaker[Session], app_id: str, process_types: dict[str, str]
) -> dict[str, Scale]:
    """The formation a release with ``process_types`` starts with (``with_release``)."""
    return fm.with_release(read_formation(db=db, app_id=app_id), process_types)


def save(*, db: sessionmaker[Session], app_id: str, formation: fm.Formation) -> None:
    with transaction(db) as session:
        _store(session, app_id, formation)


def _store(session: Session, app_id: str, formation: fm.Formation) -> None:
    session.execute(delete(FormationRow).where(FormationRow.app_id == app_id))
    for name, scale in formation.items():
        session.add(
            FormationRow(app_id=app_id, process_type=name, amount=scale.amount, size=scale.size)
        )


def _current_types(session: Session, app_id: str) -> dict[str, str]:
    types = session.scalar(
        select(Deployment.process_types)
        .where(Deployment.app_id == app_id, Deployment.status == SUCCESS)
        .order_by(Deployment.created_at.desc())
        .limit(1)
    )
    return dict(types or {})


def process_types(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str
) -> tuple[AppRecord, list[ProcessType]]:
    """The app's process types (those of its current release), with amounts and sizes."""
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        commands = _current_types(session, app.id)
        current = fm.with_release(formation_of(session, app.id), commands)
        return app_record(app), [
            ProcessType(name, commands.get(name, ""), scale.amount, scale.size)
            for name, scale in sorted(current.items())
        ]


def scale(
    *,
    db: sessionmaker[Session],
    owner: UserRecord,
    app_name: str,
    items: object,
    quotas: Quotas,
) -> tuple[AppRecord, dict[str, Scale]]:
    """Check and store a scale request; returns the app and its new formation. Every bad
    item, and a formation beyond the owner's quotas, is a 422 that says what to change."""
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        commands = _current_types(session, app.id)
        current = fm.with_release(formation_of(session, app.id), commands)
        requests, errors = fm.check_scale(items, set(commands))
        if errors:
            raise ValidationFailed(errors)
        wanted = fm.scaled(current, requests)
        # The quotas are the owner's, whoever of the app's collaborators scales it.
        _check_quotas(session, user_record(app.owner), app.id, wanted, quotas)
        _store(session, app.id, wanted)
        timeline.add(
            session,
            app_id=app.id,
            app_name=app.name,
            user=owner,
            type=timeline.SCALE,
            data={
                "previous_containers": timeline.formation_text(current),
                "containers": timeline.formation_text(wanted),
            },
        )
        return app_record(app), wanted


def _check_quotas(
    session: Session, owner: UserRecord, app_id: str, wanted: fm.Formation, quotas: Quotas
) -> None:
    others = session.execute(
        select(FormationRow.amount, FormationRow.size)
        .join(App, App.id == FormationRow.app_id)
        .where(App.owner_id == owner.id, FormationRow.app_id != app_id)
    ).all()
    instances = fm.instances(wanted) + sum(row.amount for row in others)
    memory = fm.memory_bytes(wanted) + sum(
        row.amount * fm.SIZES[row.size].memory_bytes for row in others if row.size in fm.SIZES
    )
    errors = []
    if instances > quotas.instances:
        errors.append(
            f"would run {instances} instances in all your apps; your limit is {quotas.instances}"
        )
    if memory > quotas.memory_bytes:
        errors.append(
            f"would use {memory // fm.MIB} MiB of memory in all your apps; "
            f"your limit is {quotas.memory_bytes // fm.MIB} MiB"
        )
    if errors:
        raise ValidationFailed({"containers": errors})
