"""The swarm runtime's pure parts: service specs, tasks read as instances and reasons, log
lines. The services themselves run in tests/e2e/test_swarm_runtime.py."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from dockyard.domain.formation import Scale
from dockyard.routetable import Backend
from dockyard.runtime.swarm import tasks as swarm_tasks
from dockyard.runtime.swarm.apps import SwarmApps, SwarmLaunch
from dockyard.runtime.swarm.logs import parse_line, since_of
from dockyard.runtime.swarm.specs import ServiceDefinition, Timings, launch_argv, service_spec
from dockyard.settings import Settings, SettingsError

TIMINGS = Timings(check=1.0, boot=5.0, drain=1.0, stop_grace=10.0)


def definition(process_type: str = "web", **changes: object) -> ServiceDefinition:
    base = {
        "prefix": "dyt",
        "app": "shop",
        "process_type": process_type,
        "command": "python3 server.py",
        "release_id": "r42",
        "image": "127.0.0.1:5000/dockyard/shop:r42",
        "scale": Scale(3, "L"),
        "uid": 200001,
        "network": "dyt-app-shop",
        "env": {"PORT": "1", "GREETING": "hi"},
    }
    base.update(changes)
    return ServiceDefinition(**base)  # type: ignore[arg-type]


def test_a_web_service_has_replicas_limits_a_health_check_and_a_start_first_rollout() -> None:
    spec = service_spec(definition(), TIMINGS)
    task = spec["TaskTemplate"]
    container = task["ContainerSpec"]
    assert spec["Name"] == "dyt-shop-web"
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert task["Resources"]["Limits"] == {"MemoryBytes": 1024**3, "Pids": 512}  # size L
    assert container["User"] == "200001:200001"
    assert container["ReadOnly"] is True and container["CapabilityDrop"] == ["ALL"]
    assert "PORT=5000" in container["Env"] and "PORT=1" not in container["Env"]
    assert "GREETING=hi" in container["Env"]
    assert container["Healthcheck"]["StartPeriod"] == 5 * 10**9
    assert spec["UpdateConfig"]["Order"] == "start-first"
    assert spec["UpdateConfig"]["FailureAction"] == "rollback"
    assert spec["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 5000, "PublishMode": "host"}
    ]


def test_a_worker_service_publishes_nothing_and_has_no_port() -> None:
    spec = service_spec(definition("worker"), TIMINGS)
    assert spec["EndpointSpec"]["Ports"] == []
    assert "Healthcheck" not in spec["TaskTemplate"]["ContainerSpec"]
    assert not any(e.startswith("PORT=") for e in spec["TaskTemplate"]["ContainerSpec"]["Env"])


def test_the_launcher_holds_sigterm_back_for_the_drain_then_passes_it_on() -> None:
    script = "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done"
    started = subprocess.Popen(
        launch_argv(script),
        env={"DOCKYARD_DRAIN": "0.3", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
    )
    try:
        assert started.stdout is not None and started.stdout.readline() == b"up\n"
        started.terminate()
        with pytest.raises(subprocess.TimeoutExpired):
            started.wait(0.15)  # still draining
        assert started.wait(5) == 0  # the command got the TERM and exited on its own
    finally:
        if started.poll() is None:
            started.kill()
            started.wait()
        assert started.stdout is not None
        started.stdout.close()


def raw_task(**status: object) -> dict[str, object]:
    base_status: dict[str, object] = {
        "State": "running",
        "Timestamp": "2026-12-06T03:03:58.529134735Z",
        "PortStatus": {"Ports": [{"PublishedPort": 30001}]},
    }
    base_status.update(status)
    return {
        "ID": "t1",
        "ServiceID": "s1",
        "Slot": 2,
        "NodeID": "n1",
        "DesiredState": "running",
        "Spec": {"ContainerSpec": {"Labels": {"dockyard.release": "r42"}}},
        "Status": base_status,
    }


def test_a_running_web_task_is_an_endpoint_at_its_nodes_address() -> None:
    task = swarm_tasks.parse_task(raw_task())
    assert (task.slot, task.release_id, task.published_port) == (2, "r42", 30001)
    assert swarm_tasks.instance_state(task) == "running"
    assert swarm_tasks.endpoints([task], {"n1": "192.0.2.2"}) == [Backend("192.0.2.2", 30001)]
    starting = swarm_tasks.parse_task(raw_task(State="starting"))
    assert swarm_tasks.instance_state(starting) == "starting"
    assert swarm_tasks.endpoints([starting], {"n1": "192.0.2.2"}) == []


def test_failed_tasks_say_why_in_words() -> None:
    crashed = swarm_tasks.parse_task(
        raw_task(State="failed", Err="task: non-zero exit (3)", ContainerStatus={"ExitCode": 3})
    )
    failure = swarm_tasks.failure_of("web", [crashed], 5.0)
    assert failure is not None and not failure.timed_out
    assert failure.message == "The web process exited with status 3 while booting."
    unhealthy = swarm_tasks.parse_task(
        raw_task(State="failed", Err="task: non-zero exit (137): dockerexec: unhealthy container")
    )
    failure = swarm_tasks.failure_of("web", [unhealthy], 5.0)
    assert failure is not None and failure.timed_out
    assert "within 5 seconds" in failure.message
    assert swarm_tasks.failure_of("web", [swarm_tasks.parse_task(raw_task())], 5.0) is None


def test_a_rollback_with_no_failed_task_says_whether_the_web_never_answered() -> None:
    # Swarm's rollback replaced the unhealthy task before it was seen failed
    never_answered = swarm_tasks.parse_task(raw_task(State="shutdown"))
    failure = swarm_tasks.rollback_failure("web", [never_answered], 5.0)
    assert failure.timed_out and "within 5 seconds" in failure.message
    exited = swarm_tasks.parse_task(raw_task(State="complete", ContainerStatus={"ExitCode": 0}))
    failure = swarm_tasks.rollback_failure("web", [exited], 5.0)
    assert not failure.timed_out and "did not keep running" in failure.message
    worker = swarm_tasks.rollback_failure("worker", [never_answered], 5.0)
    assert not worker.timed_out


def test_a_service_log_line_names_its_task() -> None:
    line = (
        b"2026-12-06T03:03:58.560576922Z com.docker.swarm.node.id=n1,"
        b"com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello world"
    )
    assert parse_line(line) == ("2026-12-06T03:03:58.560576922Z", "t1", b"hello world")
    since = since_of("2026-12-06T03:03:58.560576922Z")
    assert since is not None and abs(since % 1 - 0.560576) < 1e-5
    assert parse_line(b"garbage") is None


def test_settings_take_the_swarm_runtime_and_check_its_prefix() -> None:
    settings = Settings.from_mapping(
        {"DOCKYARD_RUNTIME": "swarm", "DOCKYARD_SWARM_PREFIX": "dyt1", "DOCKYARD_SWARM_CHECK_SECONDS": "1"}
    )
    assert (settings.runtime, settings.swarm_prefix, settings.swarm_check_seconds) == (
        "swarm",
        "dyt1",
        1.0,
    )
    with pytest.raises(SettingsError, match="DOCKYARD_SWARM_PREFIX"):
        Settings.from_mapping({"DOCKYARD_SWARM_PREFIX": "Bad_Prefix"})


class _FakeApi:
    """The two Engine API calls ``SwarmApps._pending`` makes, answering fixed states."""

    def __init__(self, tasks: list[dict[str, object]], update: str) -> None:
        self._tasks, self._update = tasks, update

    def tasks(self, filters: object = None) -> list[dict[str, object]]:
        return self._tasks

    def inspect_service(self, service_id: str) -> dict[str, object]:
        return {"UpdateStatus": {"State": self._update}} if self._update else {}


def pending_after(tasks: list[dict[str, object]], update: str) -> tuple[list[str], str | None]:
    apps = SwarmApps(
        SimpleNamespace(api=_FakeApi(tasks, update)),
        routes=SimpleNamespace(),
        store=SimpleNamespace(),
        image_for=lambda app, release: "image",
        prefix="dyt",
        timings=TIMINGS,
        logs_dir=Path("/nonexistent"),
        host_uid_for=lambda app: 200001,
    )
    launch = SwarmLaunch(
        "shop", "r42", Path("/nonexistent"), {"web": "python3 server.py"},
        {"web": Scale(1)}, {}, services={"web": "s1"}, previous={"web": {}},
    )  # fmt: skip
    pending = apps._pending(launch)
    return pending, None if launch.failure is None else launch.failure.message


def test_a_redeploy_is_done_only_once_swarm_calls_the_update_completed() -> None:
    running = [raw_task()]
    assert pending_after(running, "updating") == (["web"], None)  # still monitored
    assert pending_after(running, "completed") == ([], None)
    assert pending_after([raw_task(State="starting")], "completed") == (["web"], None)
    pending, failure = pending_after(running, "rollback_started")
    assert pending == ["web"] and failure is not None and "rolled the web service back" in failure



class _NoServicesApi:
    """A swarm with none of the app's services yet: enough for an adoption to read."""

    def services(self, filters: object = None) -> list[dict[str, object]]:
        return []

    def tasks(self, filters: object = None) -> list[dict[str, object]]:
        return []

    def nodes(self, filters: object = None) -> list[dict[str, object]]:
        return []


def test_questions_asked_while_an_app_is_adopted_wait_for_its_state(tmp_path: Path) -> None:
    """From the claim on, the api asks the adopter about the app: it must not answer that
    the app runs nothing just because it has not read the app's state yet."""
    saved = {
        "runtime": "swarm", "release_id": "r42", "process_types": {"web": "python3 server.py"},
        "formation": {"web": [2, "M"]}, "image": "image", "stopped": False,
    }  # fmt: skip
    apps = SwarmApps(
        SimpleNamespace(api=_NoServicesApi()),
        routes=SimpleNamespace(set_backends=lambda *args, **kwargs: None),
        store=SimpleNamespace(load_all=lambda: {"shop": saved}),
        image_for=lambda app, release: "image",
        prefix="dyt",
        timings=TIMINGS,
        logs_dir=tmp_path,
        host_uid_for=lambda app: 200001,
    )
    asked: list[list[str]] = []
    question = threading.Thread(
        target=lambda: asked.append([i.name for i in apps.observe("shop")])
    )

    def claim() -> bool:
        # The api's question arrives between the claim and the read of the state; it is
        # still waiting when the claim returns.
        question.start()
        question.join(timeout=0.2)
        assert question.is_alive()
        return True

    assert apps.adopt("shop", lambda app: {}, claim) is True
    question.join(timeout=5)
    assert asked == [["web-1", "web-2"]]
    assert apps.adopt("cart", lambda app: {}, lambda: False) is False  # another won it
    assert apps.observe("cart") == []
