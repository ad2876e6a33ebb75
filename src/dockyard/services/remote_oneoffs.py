"""One-off commands as an API process sees them when workers run the apps: each start,
listing, stop or question is a call on the bus (services/remote.py) to the app's worker,
which runs it on its own ``LocalOneOffs``.

    api ── call "one-off.start" {command, env, size, detached, operation_id} ──► owner
        ◄── {"instance": {...}, "attach_url": "http://<that worker's attach server>/..."}

The client then attaches to that worker's attach server directly (api/attach.py): the
bytes of a terminal never travel on the bus. The ``env`` of a start is the request's
(the client's ``-e`` variables and ``TERM``), never the app's: the worker reads those from
the database, as for every other call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockyard.errors import Conflict
from dockyard.runtime.base import Instance
from dockyard.services.oneoffs import OneOffRunner, StartedOneOff
from dockyard.services.remote import (
    ONE_OFF_CALLS,
    NeverDeployed,
    RemoteProcesses,
    decode_instance,
    encode_instance,
)

START = f"{ONE_OFF_CALLS}start"
RUNNING = f"{ONE_OFF_CALLS}running"
STOP = f"{ONE_OFF_CALLS}stop"
OF_OPERATION = f"{ONE_OFF_CALLS}of-operation"
_NEVER_DEPLOYED = NeverDeployed("deploy it before running a command")


def encode_started(started: StartedOneOff) -> dict[str, Any]:
    return {"instance": encode_instance(started.instance), "attach_url": started.attach_url}


def decode_started(raw: Mapping[str, Any]) -> StartedOneOff:
    return StartedOneOff(
        instance=decode_instance(raw["instance"]), attach_url=str(raw["attach_url"])
    )


class RemoteOneOffs:
    """``OneOffRunner`` over the bus, for a process that runs no apps itself."""

    def __init__(self, calls: RemoteProcesses) -> None:
        self.calls = calls

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
        raw = self.calls.call(
            app,
            START,
            _NEVER_DEPLOYED,
            command=command,
            env=dict(env),
            size=size,
            detached=detached,
            operation_id=operation_id,
        )
        return decode_started(raw)

    def running(self, app: str) -> list[Instance]:
        return [decode_instance(raw) for raw in self.calls.call(app, RUNNING, []) or []]

    def stop_soon(self, app: str, label: str) -> bool:
        return bool(self.calls.call(app, STOP, False, label=label))

    def of_operation(self, app: str, operation_id: str) -> StartedOneOff | None:
        raw = self.calls.call(app, OF_OPERATION, None, operation_id=operation_id)
        return None if raw is None else decode_started(raw)


def answer(runner: OneOffRunner, app: str, method: str, args: dict[str, Any]) -> Any:
    """In a worker: a call of ``RemoteOneOffs``, run on this worker's one-offs."""
    if method == START:
        return encode_started(
            runner.start(
                app,
                command=str(args["command"]),
                env={str(k): str(v) for k, v in dict(args.get("env") or {}).items()},
                size=str(args["size"]),
                detached=bool(args["detached"]),
                operation_id=str(args["operation_id"]),
            )
        )
    if method == RUNNING:
        return [encode_instance(instance) for instance in runner.running(app)]
    if method == STOP:
        return runner.stop_soon(app, str(args["label"]))
    if method == OF_OPERATION:
        started = runner.of_operation(app, str(args["operation_id"]))
        return None if started is None else encode_started(started)
    raise Conflict(f"The worker does not know the call {method!r}: is it of an older version?")
