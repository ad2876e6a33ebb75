"""An app's collaborators: other users who may do everything with it but destroy it and
manage its collaborators (``dockyard.services.access``).

dockyard has no invitations: a collaborator is an existing user, found by their email,
and has access at once (``accepted``)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.eventbus.base import EventBus
from dockyard.db.engine import transaction
from dockyard.db.models import Collaborator, User
from dockyard.domain.records import CollaboratorRecord, UserRecord
from dockyard.errors import NotFound, ValidationFailed
from dockyard.services import events, timeline
from dockyard.services.access import Action, authorize
from dockyard.services.clock import new_id, now
from dockyard.services.records import user_record


def list_collaborators(
    *, db: sessionmaker[Session], user: UserRecord, app_name: str
) -> list[CollaboratorRecord]:
    with transaction(db) as session:
        app = authorize(session, user=user, app_name=app_name, action=Action.READ)
        rows = session.scalars(
            select(Collaborator)
            .where(Collaborator.app_id == app.id)
            .order_by(Collaborator.created_at, Collaborator.id)
        )
        return [_record(row) for row in rows]


def add_collaborator(
    *, db: sessionmaker[Session], user: UserRecord, app_name: str, email: object, is_limited: object
) -> CollaboratorRecord:
    if not isinstance(email, str) or "@" not in email:
        raise ValidationFailed({"email": ["is required: the email of a dockyard user"]})
    _check_not_limited(is_limited)
    try:
        with transaction(db) as session:
            app = authorize(session, user=user, app_name=app_name, action=Action.COLLABORATORS)
            invited = session.scalar(
                select(User).where(func.lower(User.email) == email.strip().lower()).limit(1)
            )
            if invited is None:
                raise ValidationFailed(
                    {"email": [f"no dockyard user has the email {email}: they need an account first"]}
                )
            if invited.id == app.owner_id:
                raise ValidationFailed({"email": ["is the app's owner's"]})
            row = Collaborator(
                id=new_id(), app_id=app.id, user_id=invited.id, is_limited=False, created_at=now()
            )
            session.add(row)
            session.flush()
            row.user = invited
            record = _record(row)
            timeline.add(
                session, app_id=app.id, app_name=app.name, user=user,
                type=timeline.NEW_COLLABORATOR, data={"collaborator": _event_data(record, user)},
            )
            return record
    except IntegrityError:
        raise ValidationFailed({"email": ["is already a collaborator of this app"]}) from None


def update_collaborator(
    *, db: sessionmaker[Session], user: UserRecord, app_name: str, collaborator_id: str,
    is_limited: object,
) -> CollaboratorRecord:
    """``collaborators-update --limited=false``: every collaborator is a full one already;
    ``true`` is refused as adding one is."""
    _check_not_limited(is_limited)
    with transaction(db) as session:
        app = authorize(session, user=user, app_name=app_name, action=Action.COLLABORATORS)
        row = session.get(Collaborator, collaborator_id)
        if row is None or row.app_id != app.id:
            raise NotFound("collaborator")
        return _record(row)


def remove_collaborator(
    *, db: sessionmaker[Session], bus: EventBus, user: UserRecord, app_name: str, collaborator_id: str
) -> None:
    with transaction(db) as session:
        app = authorize(session, user=user, app_name=app_name, action=Action.COLLABORATORS)
        row = session.get(Collaborator, collaborator_id)
        if row is None or row.app_id != app.id:
            raise NotFound("collaborator")
        record = _record(row)
        session.delete(row)
        timeline.add(
            session, app_id=app.id, app_name=app.name, user=user,
            type=timeline.DELETE_COLLABORATOR, data={"collaborator": _event_data(record, user)},
        )
        app_id = app.id
    # What this process or another keeps in memory per (user, app) forgets it.
    bus.publish(events.channel_for(app_id), {"type": events.ACCESS_CHANGED})


def _check_not_limited(is_limited: object) -> None:
    if is_limited not in (None, False):
        raise ValidationFailed(
            {"is_limited": ["dockyard has no limited collaborators: send false or leave it out"]}
        )


def _record(row: Collaborator) -> CollaboratorRecord:
    return CollaboratorRecord(
        id=row.id, app_id=row.app_id, user=user_record(row.user), is_limited=row.is_limited
    )


def _event_data(record: CollaboratorRecord, inviter: UserRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "username": record.user.username,
        "email": record.user.email,
        "is_limited": record.is_limited,
        "inviter": {"id": inviter.id, "username": inviter.username, "email": inviter.email},
    }
