"""Apps and their environment variables."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App, Counter, Deployment, User, Variable
from dockyard.domain import variables
from dockyard.domain.names import app_name_problems
from dockyard.domain.records import AppRecord, UserRecord, VariableRecord
from dockyard.domain.status import ACTIVE, QUEUED
from dockyard.errors import Conflict, NotFound, ValidationFailed
from dockyard.services import timeline
from dockyard.services.access import Action, accessible_by, authorize
from dockyard.services.clock import new_id, now
from dockyard.services.records import app_record, variable_record

FIRST_SANDBOX_UID = 200_000
SANDBOX_UID_COUNTER = "sandbox_uid"
# App.status while its deployments are being stopped before it is deleted.
DELETING = "deleting"
MAX_VARIABLE_VALUE = 64 * 1024
PENDING_OR_ACTIVE = frozenset({QUEUED, *ACTIVE})


def create_app(
    *, db: sessionmaker[Session], owner: UserRecord, name: object, max_apps: int | None = None
) -> AppRecord:
    """A new app of ``owner``'s, unless they already have ``max_apps`` (a 422 that says so)."""
    problems = app_name_problems(name)
    if problems:
        raise ValidationFailed({"name": problems})
    assert isinstance(name, str)
    for _attempt in range(5):
        try:
            with transaction(db) as session:
                if session.scalar(select(App.id).where(App.name == name)) is not None:
                    raise ValidationFailed({"name": ["is already taken"]})
                if max_apps is not None:
                    owned = session.scalar(
                        select(func.count()).select_from(App).where(App.owner_id == owner.id)
                    )
                    if (owned or 0) >= max_apps:
                        raise ValidationFailed(
                            {"name": [f"you already have {owned} apps; your limit is {max_apps}"]}
                        )
                stamp = now()
                app = App(
                    id=new_id(),
                    name=name,
                    owner_id=owner.id,
                    sandbox_uid=_next_sandbox_uid(session),
                    status="new",
                    created_at=stamp,
                    updated_at=stamp,
                )
                session.add(app)
                session.flush()
                app.owner = session.get(User, owner.id)  # type: ignore[assignment]
                timeline.add(
                    session, app_id=app.id, app_name=name, user=owner, type=timeline.NEW_APP,
                    data={"git_source": ""},
                )
                return app_record(app)
        except IntegrityError:
            continue  # two apps raced for the same name or uid: look again
    raise Conflict("the app could not be created; try again")


def _next_sandbox_uid(session: Session) -> int:
    """A uid no app ever had: a deleted app's processes may outlive its row for a moment,
    and a new app must never be able to signal or trace them, nor read their files."""
    counter = session.get(Counter, SANDBOX_UID_COUNTER, with_for_update=True)
    highest = session.scalar(select(func.max(App.sandbox_uid)))
    uid = max(counter.value if counter else 0, highest or 0, FIRST_SANDBOX_UID - 1) + 1
    if counter is None:
        session.add(Counter(name=SANDBOX_UID_COUNTER, value=uid))
    else:
        counter.value = uid
    return uid


def find_app(
    *, db: sessionmaker[Session], owner: UserRecord, name: str, action: Action = Action.READ
) -> AppRecord:
    """The app called ``name`` if ``owner`` (any user) may do ``action`` with it."""
    with transaction(db) as session:
        return app_record(authorize(session, user=owner, app_name=name, action=action))


def list_apps(*, db: sessionmaker[Session], owner: UserRecord) -> list[AppRecord]:
    with transaction(db) as session:
        rows = session.scalars(
            select(App).where(accessible_by(owner.id)).order_by(App.created_at.desc())
        )
        return [app_record(row) for row in rows]


def delete_app(*, db: sessionmaker[Session], owner: UserRecord, name: str) -> AppRecord:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=name, action=Action.DESTROY)
        record = app_record(app)
        session.delete(app)
        timeline.add(
            session, app_id=app.id, app_name=app.name, user=owner, type=timeline.DELETE_APP,
            data={},
        )
        return record


def mark_deleting(*, db: sessionmaker[Session], owner: UserRecord, name: str) -> AppRecord:
    """Begin deleting the app: from now on it takes no new deployment."""
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=name, action=Action.DESTROY)
        app.status = DELETING
        app.updated_at = now()
        return app_record(app)


def set_status(*, db: sessionmaker[Session], app_id: str, status: str) -> None:
    with transaction(db) as session:
        app = session.get(App, app_id)
        if app is not None and app.status != status:
            app.status = status
            app.updated_at = now()


# --- variables --------------------------------------------------------------------


def _check_variable(name: object, value: object) -> tuple[str, str]:
    errors: dict[str, list[str]] = {}
    if problems := variables.name_problems(name):
        errors["name"] = problems
    elif problems := variables.value_problems(str(name), value):
        errors["value"] = problems
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(name, str) and isinstance(value, str)
    return name, value


def _check_environment(existing: Mapping[str, str], changes: list[tuple[str, str]]) -> None:
    """Refuse changes after which the app could no longer be started (domain.variables)."""
    after = {**existing, **dict(changes)}
    if problems := variables.environment_problems(after, [name for name, _ in changes]):
        raise ValidationFailed({"variables": problems})


def list_variables(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str
) -> list[VariableRecord]:
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.READ)
        rows = session.scalars(
            select(Variable).where(Variable.app_id == app.id).order_by(Variable.name)
        )
        return [variable_record(row) for row in rows]


def app_environment(session: Session, *, app_id: str) -> dict[str, str]:
    return {
        v.name: v.value for v in session.scalars(select(Variable).where(Variable.app_id == app_id))
    }


def set_variables(
    *,
    db: sessionmaker[Session],
    owner: UserRecord,
    app_name: str,
    values: list[tuple[object, object]],
) -> list[VariableRecord]:
    """Set each (name, value) pair; a later pair of the same name wins."""
    checked = [_check_variable(name, value) for name, value in values]
    with transaction(db) as session:
        app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
        existing = {
            v.name: v for v in session.scalars(select(Variable).where(Variable.app_id == app.id))
        }
        _check_environment({name: v.value for name, v in existing.items()}, checked)
        changed: dict[str, Variable] = {}
        added, modified = [], []
        for name, value in checked:
            variable = existing.get(name)
            if variable is None:
                variable = existing[name] = Variable(
                    id=new_id(), app_id=app.id, name=name, value=value
                )
                session.add(variable)
                added.append(name)
            else:
                if variable.value != value:
                    modified.append(name)
                variable.value = value
            changed[name] = variable
        session.flush()
        timeline.variables_changed(session, app=app, user=owner, added=added, modified=modified)
        return [variable_record(variable) for variable in changed.values()]


def update_variable(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str, variable_id: str, value: object
) -> VariableRecord:
    with transaction(db) as session:
        app, variable = _get_variable(
            session, owner=owner, app_name=app_name, variable_id=variable_id
        )
        _, checked = _check_variable(variable.name, value)
        current = app_environment(session, app_id=variable.app_id)
        _check_environment(current, [(variable.name, checked)])
        variable.value = checked
        timeline.variables_changed(session, app=app, user=owner, modified=[variable.name])
        return variable_record(variable)


def delete_variable(
    *, db: sessionmaker[Session], owner: UserRecord, app_name: str, variable_id: str
) -> None:
    with transaction(db) as session:
        app, variable = _get_variable(
            session, owner=owner, app_name=app_name, variable_id=variable_id
        )
        session.delete(variable)
        timeline.variables_changed(session, app=app, user=owner, removed=[variable.name])


def _get_variable(
    session: Session, *, owner: UserRecord, app_name: str, variable_id: str
) -> tuple[App, Variable]:
    """One of the app's variables; any other is 'not found'."""
    app = authorize(session, user=owner, app_name=app_name, action=Action.MANAGE)
    variable = session.get(Variable, variable_id)
    if variable is None or variable.app_id != app.id:
        raise NotFound("variable")
    return app, variable


def rename_app(
    *, db: sessionmaker[Session], owner: UserRecord, name: str, current_name: object, new_name: object
) -> tuple[AppRecord, str]:
    """Give the app a new name (its URL follows); returns it and its old name.

    ``current_name`` must repeat the app's name, as the client's confirmation does. Not
    while a deployment is queued or running: it would start its release under the old
    name."""
    if current_name != name:
        raise ValidationFailed({"current_name": [f"must be the app's current name, {name}"]})
    problems = app_name_problems(new_name)
    if problems:
        raise ValidationFailed({"new_name": problems})
    assert isinstance(new_name, str)
    try:
        with transaction(db) as session:
            app = authorize(session, user=owner, app_name=name, action=Action.MANAGE)
            if new_name == app.name:
                raise ValidationFailed({"new_name": ["is already the app's name"]})
            if session.scalar(select(App.id).where(App.name == new_name)) is not None:
                raise ValidationFailed({"new_name": ["is already taken"]})
            busy = session.scalar(
                select(func.count())
                .select_from(Deployment)
                .where(Deployment.app_id == app.id, Deployment.status.in_(PENDING_OR_ACTIVE))
            )
            if busy:
                raise Conflict(
                    "A deployment of this app is queued or running: rename it once it has ended."
                )
            app.name = new_name
            app.updated_at = now()
            timeline.add(
                session, app_id=app.id, app_name=new_name, user=owner, type=timeline.RENAME_APP,
                data={"old_name": name, "new_name": new_name},
            )
            session.flush()
            return app_record(app), name
    except IntegrityError:
        raise ValidationFailed({"new_name": ["is already taken"]}) from None
