"""Reading Swarm's tasks (Engine API JSON) as dockyard's instances, endpoints and reasons.

Pure functions: ``SwarmApps`` lists the services and tasks, these say what they mean.
A task is an instance (``web-<slot>``); its states map to dockyard's (``starting``,
``running``, ``crashed``); a web task that runs (Swarm says so only once its health check
passed) is an endpoint at its node's address and its published host port.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dockyard.routetable import Backend
from dockyard.runtime.swarm.specs import LABEL_RELEASE

STARTING_STATES = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})
# Swarm's update states that mean the new spec was given up.
ROLLED_BACK = frozenset({"rollback_started", "rollback_paused", "rollback_completed", "paused"})
_EXIT = re.compile(r"non-zero exit \((\d+)\)")


@dataclass(frozen=True)
class Task:
    id: str
    service_id: str
    slot: int
    release_id: str
    state: str  # Swarm's: new … running, complete, shutdown, failed, rejected
    desired: str  # running or shutdown
    error: str
    exit_code: int | None
    node_id: str
    published_port: int | None
    started_at: float | None  # Unix time of its last state change to running

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired == "running"

    @property
    def unhealthy(self) -> bool:
        return "unhealthy" in self.error


def parse_task(raw: Mapping[str, Any]) -> Task:
    status = raw.get("Status") or {}
    container = (raw.get("Spec") or {}).get("ContainerSpec") or {}
    labels = container.get("Labels") or {}
    ports = (status.get("PortStatus") or {}).get("Ports") or []
    published = next((int(p["PublishedPort"]) for p in ports if p.get("PublishedPort")), None)
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    state = str(status.get("State", ""))
    return Task(
        id=str(raw.get("ID", "")),
        service_id=str(raw.get("ServiceID", "")),
        slot=int(raw.get("Slot") or 0),
        release_id=str(labels.get(LABEL_RELEASE, "")),
        state=state,
        desired=str(raw.get("DesiredState", "")),
        error=str(status.get("Err", "")),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        node_id=str(raw.get("NodeID", "")),
        published_port=published,
        started_at=_unix(status.get("Timestamp")) if state == "running" else None,
    )


def current_tasks(tasks: Iterable[Task]) -> dict[int, Task]:
    """Per slot, the task Swarm wants running (a new one replaces a failed one in its
    slot); else the latest failed one, which says why the slot is empty."""
    chosen: dict[int, Task] = {}
    for task in tasks:
        held = chosen.get(task.slot)
        if held is None or _rank(task) > _rank(held):
            chosen[task.slot] = task
    return chosen


def _rank(task: Task) -> tuple[int, int, float]:
    wanted = task.desired == "running"
    return (int(wanted), int(task.state == "running"), task.started_at or 0.0)


def instance_state(task: Task) -> str:
    if task.running:
        return "running"
    if task.state in STARTING_STATES and task.desired == "running":
        return "starting"
    if task.state in FAILED_STATES or task.exit_code not in (None, 0):
        return "crashed"
    return "starting" if task.desired == "running" else "stopped"


def endpoints(tasks: Iterable[Task], node_addresses: Mapping[str, str]) -> list[Backend]:
    """The running web tasks' published ports on their nodes, in slot order."""
    found = []
    for task in sorted(tasks, key=lambda t: t.slot):
        if task.running and task.published_port is not None:
            found.append(
                Backend(node_addresses.get(task.node_id) or "127.0.0.1", task.published_port)
            )
    return found


def node_address(raw: Mapping[str, Any]) -> str:
    """Where a node's published ports are reached: its address, unless it reports none."""
    address = str((raw.get("Status") or {}).get("Addr", ""))
    return "127.0.0.1" if address in ("", "0.0.0.0") else address


@dataclass(frozen=True)
class Failure:
    """Why a release's tasks did not come up, in words, and whether it was a timeout."""

    message: str
    timed_out: bool
    task_id: str = ""


def failure_of(process_type: str, tasks: Iterable[Task], boot_timeout: float) -> Failure | None:
    """The first failed task of the release as ``BootError`` says it; None if none failed."""
    for task in tasks:
        if task.state not in FAILED_STATES and not (
            task.state in ("shutdown", "complete") and task.exit_code not in (None, 0)
        ):
            continue
        if task.unhealthy:
            return _never_answered(process_type, boot_timeout, task_id=task.id)
        code = task.exit_code
        if code is None:
            match = _EXIT.search(task.error)
            code = int(match.group(1)) if match else None
        if code is not None:
            return Failure(
                f"The {process_type} process exited with status {code} while booting.",
                timed_out=False,
                task_id=task.id,
            )
        return Failure(
            f"The {process_type} process could not be started: {task.error or task.state}.",
            timed_out=False,
            task_id=task.id,
        )
    return None


def rollback_failure(process_type: str, tasks: Iterable[Task], boot_timeout: float) -> Failure:
    """Why Swarm rolled an update back when no task of the release says it failed.

    Rollback races the task's own record: the task Swarm killed for failing its health
    check may already be replaced or shut down by the rollback. A web task only runs once
    its health check passed, so a web release none of whose tasks ran or exited never
    answered on ``$PORT``: a timeout, as the local runtime calls it."""
    tasks = list(tasks)
    came_up = any(
        task.state in ("running", "complete") or task.exit_code not in (None, 0) for task in tasks
    )
    if any(task.unhealthy for task in tasks) or (process_type == "web" and not came_up):
        return _never_answered(process_type, boot_timeout, then=" Swarm rolled the service back.")
    return Failure(
        f"Swarm rolled the {process_type} service back: its new tasks did not keep running.",
        timed_out=False,
    )


def _never_answered(
    process_type: str, boot_timeout: float, *, task_id: str = "", then: str = ""
) -> Failure:
    """A timeout, as the local runtime words it."""
    return Failure(
        f"The {process_type} process did not accept connections on $PORT within"
        f" {boot_timeout:g} seconds.{then}",
        timed_out=True,
        task_id=task_id,
    )


def _unix(stamp: object) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    # Go's RFC 3339 with nanoseconds: Python takes at most microseconds.
    text = re.sub(r"\.(\d{6})\d*", r".\1", stamp.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
