"""Apps and their environment variables."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dockyard.db.engine import transaction
from dockyard.db.models import App, User, Variable
from dockyard.domain.names import VARIABLE_NAME_RE, app_name_problems
from dockyard.errors import Conflict, NotFound, ValidationFailed
from dockyard.services.clock import new_id, now

FIRST_SANDBOX_UID = 200_000
MAX_VARIABLE_VALUE = 64 * 1024


def create_app(*, db: sessionmaker[Session], owner: User, name: object) -> App:
    problems = app_name_problems(name)
    if problems:
        raise ValidationFailed({"name": problems})
    assert isinstance(name, str)
    for _attempt in range(5):
        try:
            with transaction(db) as session:
                if session.scalar(select(App.id).where(App.name == name)) is not None:
                    raise ValidationFailed({"name": ["is already taken"]})
                highest = session.scalar(select(func.max(App.sandbox_uid)))
                stamp = now()
                app = App(
                    id=new_id(),
                    name=name,
                    owner_id=owner.id,
                    sandbox_uid=(highest or FIRST_SANDBOX_UID - 1) + 1,
                    status="new",
                    created_at=stamp,
                    updated_at=stamp,
                )
                session.add(app)
                session.flush()
                app.owner = session.get(User, owner.id)  # type: ignore[assignment]
                return app
        except IntegrityError:
            continue  # two apps raced for the same name or uid: look again
    raise Conflict("the app could not be created; try again")


def get_app(session: Session, *, owner: User, name: str) -> App:
    """The app called ``name`` if ``owner`` owns it; someone else's app is 'not found'."""
    app = session.scalar(select(App).where(App.name == name, App.owner_id == owner.id))
    if app is None:
        raise NotFound("app")
    return app


def find_app(*, db: sessionmaker[Session], owner: User, name: str) -> App:
    with transaction(db) as session:
        return get_app(session, owner=owner, name=name)


def list_apps(*, db: sessionmaker[Session], owner: User) -> list[App]:
    with transaction(db) as session:
        return list(
            session.scalars(
                select(App).where(App.owner_id == owner.id).order_by(App.created_at.desc())
            )
        )


def delete_app(*, db: sessionmaker[Session], owner: User, name: str) -> App:
    with transaction(db) as session:
        app = get_app(session, owner=owner, name=name)
        session.delete(app)
        return app


def set_status(*, db: sessionmaker[Session], app_id: str, status: str) -> None:
    with transaction(db) as session:
        app = session.get(App, app_id)
        if app is not None and app.status != status:
            app.status = status
            app.updated_at = now()


# --- variables --------------------------------------------------------------------


def _check_variable(name: object, value: object) -> tuple[str, str]:
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not VARIABLE_NAME_RE.match(name):
        errors["name"] = [
            "must start with a letter or underscore and contain only letters, digits and underscores"
        ]
    if not isinstance(value, str):
        errors["value"] = ["must be a string"]
    elif len(value) > MAX_VARIABLE_VALUE:
        errors["value"] = [f"must be at most {MAX_VARIABLE_VALUE} characters"]
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(name, str) and isinstance(value, str)
    return name, value


def list_variables(*, db: sessionmaker[Session], owner: User, app_name: str) -> list[Variable]:
    with transaction(db) as session:
        app = get_app(session, owner=owner, name=app_name)
        return list(
            session.scalars(
                select(Variable).where(Variable.app_id == app.id).order_by(Variable.name)
            )
        )


def app_environment(session: Session, *, app_id: str) -> dict[str, str]:
    return {
        v.name: v.value for v in session.scalars(select(Variable).where(Variable.app_id == app_id))
    }


def set_variables(
    *, db: sessionmaker[Session], owner: User, app_name: str, values: Mapping[str, object]
) -> list[Variable]:
    checked = [_check_variable(name, value) for name, value in values.items()]
    with transaction(db) as session:
        app = get_app(session, owner=owner, name=app_name)
        existing = {
            v.name: v for v in session.scalars(select(Variable).where(Variable.app_id == app.id))
        }
        changed = []
        for name, value in checked:
            variable = existing.get(name)
            if variable is None:
                variable = Variable(id=new_id(), app_id=app.id, name=name, value=value)
                session.add(variable)
            else:
                variable.value = value
            changed.append(variable)
        return changed


def update_variable(
    *, db: sessionmaker[Session], owner: User, app_name: str, variable_id: str, value: object
) -> Variable:
    with transaction(db) as session:
        variable = _get_variable(session, owner=owner, app_name=app_name, variable_id=variable_id)
        _, checked = _check_variable(variable.name, value)
        variable.value = checked
        return variable


def delete_variable(
    *, db: sessionmaker[Session], owner: User, app_name: str, variable_id: str
) -> None:
    with transaction(db) as session:
        session.delete(
            _get_variable(session, owner=owner, app_name=app_name, variable_id=variable_id)
        )


def _get_variable(session: Session, *, owner: User, app_name: str, variable_id: str) -> Variable:
    """One of the owner's app's variables; any other is 'not found'."""
    app = get_app(session, owner=owner, name=app_name)
    variable = session.get(Variable, variable_id)
    if variable is None or variable.app_id != app.id:
        raise NotFound("variable")
    return variable
