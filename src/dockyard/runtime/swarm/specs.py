"""What a Swarm service of one process type is made of: pure functions over the release,
the formation and the timings, returning the Engine API's own JSON (``ServiceSpec``).

One service per process type, named ``<prefix>-<app>-<type>``, its replicas the
formation's amount. Everything that decides how an instance runs is here:

- the container: the release's image from the registry, the Heroku launcher as the app's
  uid under an init, the size's memory limit and pids limit, no capabilities, a read-only
  root and a private ``/tmp``, on the app's own overlay network;
- a web process's ``$PORT`` is published in *host* mode on a port the engine picks (the
  routing mesh does not run everywhere, and the router reaches each task directly), and
  its health check is "accepts a TCP connection on ``$PORT``": a task counts as running
  only once it answers;
- rolling updates start the new task first, watch it for ``monitor`` seconds and roll
  back on failure, so a release that does not boot leaves the previous one serving;
- a stopped task drains first: the launcher holds the ``SIGTERM`` back for ``drain``
  seconds, long enough for every router to have dropped the task's endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.domain.formation import DEFAULT_SIZE, SIZES, Scale

LABEL_PREFIX = "dockyard.swarm"  # which dockyard's services (DOCKYARD_SWARM_PREFIX)
LABEL_APP = "dockyard.app"
LABEL_TYPE = "dockyard.process-type"
LABEL_RELEASE = "dockyard.release"
LABEL_COMMAND = "dockyard.command"
LABEL_SIZE = "dockyard.size"
CONTAINER_PORT = 5000  # every task has its own network namespace: one port fits all
_NS = 1_000_000_000
_TMP_BYTES = 256 * 1024**2
_OPEN_FILES = 4096
_FILE_BYTES = 2 * 1024**3
# Sourcing .profile.d, then the Procfile command as a shell string, as the local and
# docker runtimes do; but the command runs as a child, so that SIGTERM reaches it only
# after the drain (``$DOCKYARD_DRAIN`` seconds). The command is the app owner's and runs
# inside the container only; it is an argument, never spliced into this script.
_LAUNCHER = (
    'for f in /app/.profile.d/*.sh; do if [ -f "$f" ]; then . "$f"; fi; done; unset f; '
    '/bin/bash -c "$1" & child=$!; '
    'trap \'sleep "$DOCKYARD_DRAIN"; kill -TERM "$child" 2>/dev/null\' TERM; '
    'while :; do wait "$child"; status=$?; '
    'kill -0 "$child" 2>/dev/null || exit "$status"; done'
)
# Accepts a TCP connection on $PORT: bash's /dev/tcp, no tool needed in the image.
HEALTH_TEST = ["CMD", "/bin/bash", "-c", 'exec 3<>"/dev/tcp/127.0.0.1/$PORT"']


@dataclass(frozen=True)
class Timings:
    """How fast Swarm looks (seconds): health-check interval, update monitor and restart
    delay share ``check``; ``boot`` is the web process's boot timeout."""

    check: float
    boot: float
    drain: float
    stop_grace: float


@dataclass(frozen=True)
class ServiceDefinition:
    """One process type of one release, as the service that runs it."""

    prefix: str
    app: str
    process_type: str
    command: str
    release_id: str
    image: str
    scale: Scale
    uid: int
    network: str
    env: Mapping[str, str]


def service_name(prefix: str, app: str, process_type: str) -> str:
    return f"{prefix}-{app}-{process_type}"


def network_name(prefix: str, app: str) -> str:
    return f"{prefix}-app-{app}"


def launch_argv(command: str) -> list[str]:
    return ["/bin/bash", "-c", _LAUNCHER, "dockyard-launcher", command]


def environment(definition: ServiceDefinition, timings: Timings) -> list[str]:
    """Defaults, then the app's variables, then what the platform decides."""
    env = {"HOME": "/tmp", "PATH": "/app/bin:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}  # noqa: S108 - the task's private tmpfs
    env["PYTHONUNBUFFERED"] = "1"
    env.update(definition.env)
    # Swarm names tasks by slot; the app sees its service, like Scalingo's ``web-1``
    # without the index (a task does not know its slot before it runs).
    env["CONTAINER"] = f"{definition.app}-{definition.process_type}"
    env["DOCKYARD_DRAIN"] = f"{timings.drain:g}"
    env.pop("PORT", None)
    if definition.process_type == "web":
        env["PORT"] = str(CONTAINER_PORT)
    return [f"{key}={value}" for key, value in sorted(env.items())]


def service_spec(definition: ServiceDefinition, timings: Timings) -> dict[str, Any]:
    """The ``ServiceSpec`` (Engine API) of the definition, for create and update alike."""
    size = SIZES.get(definition.scale.size, SIZES[DEFAULT_SIZE])
    is_web = definition.process_type == "web"
    labels = {
        LABEL_PREFIX: definition.prefix,
        LABEL_APP: definition.app,
        LABEL_TYPE: definition.process_type,
        LABEL_RELEASE: definition.release_id,
        LABEL_COMMAND: definition.command,
        LABEL_SIZE: size.name,
    }
    container: dict[str, Any] = {
        "Image": definition.image,
        "Command": launch_argv(definition.command),
        "Env": environment(definition, timings),
        "Dir": "/app",
        "User": f"{definition.uid}:{definition.uid}",
        "Labels": {
            LABEL_PREFIX: definition.prefix,
            LABEL_APP: definition.app,
            LABEL_RELEASE: definition.release_id,
        },
        "Init": True,
        "ReadOnly": True,
        "Mounts": [
            {
                "Type": "tmpfs",
                "Target": "/tmp",  # noqa: S108 - the task's own tmpfs
                "TmpfsOptions": {"SizeBytes": _TMP_BYTES, "Mode": 0o1777},
            }
        ],
        "CapabilityDrop": ["ALL"],
        "Ulimits": [
            {"Name": "nofile", "Soft": _OPEN_FILES, "Hard": _OPEN_FILES},
            {"Name": "fsize", "Soft": _FILE_BYTES, "Hard": _FILE_BYTES},
        ],
        "StopGracePeriod": int((timings.drain + timings.stop_grace) * _NS),
    }
    check = int(timings.check * _NS)
    if is_web:
        container["Healthcheck"] = {
            "Test": HEALTH_TEST,
            "Interval": check,
            "Timeout": max(check, _NS),
            "Retries": 3,
            # Failures before it do not count: the app has the boot timeout to bind.
            "StartPeriod": int(timings.boot * _NS),
        }
    task: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {
            "Limits": {"MemoryBytes": size.memory_bytes, "Pids": size.max_processes},
        },
        "RestartPolicy": {"Condition": "any", "Delay": check, "MaxAttempts": 0},
        "Networks": [{"Target": definition.network}],
        "LogDriver": {"Name": "json-file", "Options": {"max-size": "10m", "max-file": "1"}},
    }
    rollout = {
        "Parallelism": 0,  # all at once: the old tasks serve until each new one answers
        "Delay": 0,
        "FailureAction": "rollback",
        "Monitor": check,
        "MaxFailureRatio": 0.0,
        "Order": "start-first",
    }
    spec: dict[str, Any] = {
        "Name": service_name(definition.prefix, definition.app, definition.process_type),
        "Labels": labels,
        "TaskTemplate": task,
        "Mode": {"Replicated": {"Replicas": definition.scale.amount}},
        "UpdateConfig": rollout,
        "RollbackConfig": {**rollout, "FailureAction": "pause"},
        "EndpointSpec": {"Mode": "vip", "Ports": []},
    }
    if is_web:
        spec["EndpointSpec"]["Ports"] = [
            {"Protocol": "tcp", "TargetPort": CONTAINER_PORT, "PublishMode": "host"}
        ]
    return spec


def fingerprint(spec: Mapping[str, Any]) -> str:
    """A stable text of a spec, to tell whether an update would change anything."""
    return json.dumps(spec, sort_keys=True)
