"""One-off commands (``scalingo run``): checking what is asked, starting it as an
operation the client polls, stopping it (``one-off-stop``).

Where one-offs run is a ``OneOffRunner``: ``LocalOneOffs`` where this process runs the
apps (``dockyard serve``, and each ``dockyard worker`` for the apps it owns), or
``services.remote_oneoffs.RemoteOneOffs`` in an API process beside workers, which asks
the app's worker over the bus. An attached one-off is attached to through the attach
server of the process that runs it: its ``attach_url`` names that server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from dockyard.domain import variables
from dockyard.domain.formation import SIZES
from dockyard.domain.records import AppRecord, UserRecord
from dockyard.errors import BootError, Conflict, NotFound, ValidationFailed
from dockyard.runtime.base import Instance
from dockyard.runtime.oneoff import PREFIX, OneOff, OneOffs
from dockyard.services import operations, timeline
from dockyard.services.apps import find_app

MAX_COMMAND_CHARS = 10_000
MAX_ENV_VARIABLES = 100
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
OPERATION_TYPE = "start-one-off"
# The attach server's paths (api/attach.py): ``<attach public URL>/attach/<one-off id>``.
ATTACH_PATH_PREFIX = "/attach/"


def attach_url(attach_public_url: str, one_off: OneOff) -> str:
    return f"{attach_public_url}{ATTACH_PATH_PREFIX}{one_off.id}"


@dataclass(frozen=True)
class StartedOneOff:
    """What the API says of a one-off: the container ``ps`` lists (its ``name`` is the
    label, ``one-off-<n>``), and where its terminal is attached to ("" when detached)."""

    instance: Instance
    attach_url: str


class OneOffRunner(Protocol):
    """Where an app's one-offs run, as the API routes use it."""

    def start(
        self,
        app: str,
        *,
        command: str,
        env: Mapping[str, str],
        size: str,
        detached: bool,
        operation_id: str,
    ) -> StartedOneOff:
        """Start ``command`` with the app's variables, overridden by ``env`` (the
        request's); ``Conflict`` or ``BootError``, saying why, if it cannot start."""
        ...

    def running(self, app: str) -> list[Instance]:
        """The app's running one-offs, as ``ps`` lists them."""
        ...

    def stop_soon(self, app: str, label: str) -> bool:
        """Begin stopping the app's running one-off ``label``; False if there is none."""
        ...

    def of_operation(self, app: str, operation_id: str) -> StartedOneOff | None:
        """The one-off the operation started, while it is remembered."""
        ...


class LocalOneOffs:
    """The one-offs this process runs (``OneOffs``), attached to through its own attach
    server at ``attach_public_url``."""

    def __init__(
        self,
        one_offs: OneOffs,
        *,
        attach_public_url: str,
        env_for: Callable[[str], Mapping[str, str]],
    ) -> None:
        self.one_offs = one_offs
        self.attach_public_url = attach_public_url
        self.env_for = env_for  # the app's variables, as its current release sees them

    def _started(self, one_off: OneOff) -> StartedOneOff:
        return StartedOneOff(
            instance=one_off.instance(),
            attach_url="" if one_off.detached else attach_url(self.attach_public_url, one_off),
        )

    def start(
        self,
        app: str,
        *,
        command: str,
        env: Mapping[str, str],
        size: str,
        detached: bool,
        operation_id: str,
    ) -> StartedOneOff:
        one_off = self.one_offs.start(
            app,
            command=command,
            env={**self.env_for(app), **env},
            size=size,
            detached=detached,
            operation_id=operation_id,
        )
        return self._started(one_off)

    def running(self, app: str) -> list[Instance]:
        return self.one_offs.observe(app)

    def stop_soon(self, app: str, label: str) -> bool:
        one_off = self.one_offs.find(app, label)
        if one_off is None:
            return False
        self.one_offs.stop_soon(one_off)
        return True

    def of_operation(self, app: str, operation_id: str) -> StartedOneOff | None:
        one_off = self.one_offs.by_operation(operation_id)
        return None if one_off is None or one_off.app != app else self._started(one_off)


@dataclass(frozen=True)
class RunRequest:
    command: str
    env: dict[str, str]
    size: str
    detached: bool


def parse_run(body: object) -> RunRequest:
    """The client's ``{"command": "...", "env": {...}, "size": "M", "detached": false}``."""
    if not isinstance(body, dict):
        raise ValidationFailed({"command": ['send {"command": "the command to run"}']})
    errors: dict[str, list[str]] = {}
    command = body.get("command")
    if not isinstance(command, str) or not command.strip():
        errors["command"] = ["must be the command line to run, as a string"]
    elif len(command) > MAX_COMMAND_CHARS or "\x00" in command:
        errors["command"] = [f"must be at most {MAX_COMMAND_CHARS} characters, without NUL"]
    env = body.get("env") or {}
    if (
        not isinstance(env, dict)
        or len(env) > MAX_ENV_VARIABLES
        or not all(
            isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) and "\x00" not in v
            for k, v in env.items()
        )
    ):
        errors["env"] = [
            f"must map at most {MAX_ENV_VARIABLES} variable names (letters, digits, _)"
            " to string values"
        ]
    else:
        # The same bounds as the app's variables: a value the kernel cannot pass to a
        # process is refused here, not found out when the one-off fails to start.
        problems = [f"value {p}" for k, v in env.items() for p in variables.value_problems(k, v)]
        total = sum(variables.entry_bytes(k, v) for k, v in env.items())
        if total > variables.MAX_VARIABLES_BYTES:
            problems.append(
                f"is {total} bytes in all (names and values in UTF-8); it may be at most "
                f"{variables.MAX_VARIABLES_BYTES // 1024} KiB"
            )
        if problems:
            errors["env"] = problems
    size = body.get("size") or "M"
    if size not in SIZES:
        errors["size"] = [f"must be one of {', '.join(SIZES)}"]
    detached = body.get("detached", False)
    if not isinstance(detached, bool):
        errors["detached"] = ["must be true or false"]
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(command, str) and isinstance(env, dict)
    return RunRequest(command=command, env=dict(env), size=str(size), detached=detached)


def run(
    *,
    db: sessionmaker[Session],
    runner: OneOffRunner | None,
    owner: UserRecord,
    name: str,
    request: RunRequest,
) -> tuple[AppRecord, StartedOneOff, operations.OperationRecord]:
    """Start the one-off; its operation is done once it runs (the client then attaches),
    or in error, saying why, when it could not start."""
    app = find_app(db=db, owner=owner, name=name)
    if runner is None:
        raise Conflict("This server runs no apps (no runtime is configured).")
    operation = operations.start(db=db, app_id=app.id, type=OPERATION_TYPE)
    try:
        started = runner.start(
            app.name,
            command=request.command,
            env=request.env,
            size=request.size,
            detached=request.detached,
            operation_id=operation.id,
        )
    except (BootError, Conflict) as exc:
        operations.finish(db=db, operation_id=operation.id, error=exc.message)
        raise
    operations.finish(db=db, operation_id=operation.id)
    timeline.record(
        db=db, app_id=app.id, app_name=app.name, user=owner, type=timeline.RUN,
        data={"command": request.command, "detached": request.detached},
    )  # fmt: skip
    return app, started, operation


def start_data(app_id: str, started: StartedOneOff) -> dict[str, str]:
    """The operation's ``start_one_off_data``, which the client attaches with."""
    return {"attach_url": started.attach_url, "container_id": f"{app_id}-{started.instance.name}"}


def stop(
    *,
    db: sessionmaker[Session],
    runner: OneOffRunner | None,
    owner: UserRecord,
    name: str,
    container_id: str,
) -> None:
    """Begin stopping the running one-off whose container id (``<app id>-one-off-<n>``)
    is given (SIGTERM, grace, SIGKILL)."""
    app = find_app(db=db, owner=owner, name=name)
    prefix = f"{app.id}-"
    label = container_id[len(prefix) :] if container_id.startswith(prefix) else ""
    if runner is None or not label.startswith(PREFIX) or not runner.stop_soon(app.name, label):
        raise NotFound("container")
