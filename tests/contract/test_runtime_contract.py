"""What every runtime does, checked on each implementation alike: the fake (for the tests
of everything above the runtime) and the local one (real bubblewrap sandboxes).

Two levels. The instance driver: ``start`` returns where a process listens, ``poll``
says whether it runs, ``stop`` ends it (SIGTERM, grace, kill), ``load`` re-attaches after
a restart. The desired state over it (the last section): an app's release and formation
are applied, ``observe`` reports its instances and their endpoints, and the supervisor's
reconciliation keeps them there through scaling, crashes and server restarts.

How a test app behaves is said once, with the fake's ``Behaviour``: the fake runtime acts
it out, the local kit renders it into a small Python program run in the sandbox. A new
runtime (docker, swarm) joins by adding a kit to ``KITS``: how to build a spec that does a
``Behaviour``, how to kill an app from outside, and what a restarted server gets.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import docker
import pytest

from dockyard import sandbox
from dockyard.domain.formation import Scale
from dockyard.errors import BootError
from dockyard.routetable import Backend, RouteTable
from dockyard.runtime.base import ProcessHandle, ProcessSpec, Runtime
from dockyard.runtime.boot import accepts_connections, tail_log, wait_for_boot
from dockyard.runtime.docker.images import ReleaseImages
from dockyard.runtime.docker.runtime import DockerRuntime
from dockyard.runtime.fake import (
    BOOTS,
    EXITS_AT_BOOT,
    FAILS_TO_START,
    KILLED,
    NEVER_BINDS,
    TERMINATED,
    Behaviour,
    FakeRuntime,
    slow_to_bind,
)
from dockyard.runtime.local import LocalRuntime, signal_inside
from dockyard.runtime.supervisor import Supervisor
from tests.dockerenv import RunningRegistry

APP_UID = 64123
LIMITS = sandbox.Limits(max_processes=64, memory_bytes=512 * 1024**2)
BOOT_SECONDS = 10  # far above a real boot here; only a broken runtime waits that long


class RuntimeKit(Protocol):
    runtime: Runtime
    reattaches: bool  # whether load() finds processes that an earlier server started

    def spec(
        self, behaviour: Behaviour, *, process_type: str = "web", env: dict[str, str] | None = None
    ) -> ProcessSpec:
        """A spec whose process does ``behaviour``."""

    def release(self, behaviour: Behaviour) -> tuple[Path, str]:
        """A release directory and the Procfile command that does ``behaviour`` in it."""

    def crash(self, handle: ProcessHandle) -> None:
        """SIGKILL the app from outside, as the OOM killer would."""

    def restarted(self) -> Runtime:
        """The runtime as the next server process gets it."""


class _Specs:
    """Spec building shared by the kits: one release and one command per spec."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.count = 0

    def make(
        self, command: str, release: Path, process_type: str, env: dict[str, str] | None
    ) -> ProcessSpec:
        return ProcessSpec(
            app="sample-app",
            release_id="r1",
            process_type=process_type,
            index=1,
            command=command,
            env=env or {},
            release_dir=release,
            host_uid=APP_UID,
            limits=LIMITS,
            log_path=self.base / "logs" / f"{process_type}-{self.count}.log",
        )


class FakeKit:
    reattaches = True

    def __init__(self, base: Path) -> None:
        self.fake = FakeRuntime()
        self.runtime: Runtime = self.fake
        self._specs = _Specs(base)

    def spec(
        self, behaviour: Behaviour, *, process_type: str = "web", env: dict[str, str] | None = None
    ) -> ProcessSpec:
        release, command = self.release(behaviour)
        return self._specs.make(command, release, process_type, env)

    def release(self, behaviour: Behaviour) -> tuple[Path, str]:
        self._specs.count += 1
        command = f"python3 app-{self._specs.count}.py"
        self.fake.behaviours[command] = behaviour
        return self._specs.base, command

    def crash(self, handle: ProcessHandle) -> None:
        self.fake.crash(handle)

    def restarted(self) -> Runtime:
        return self.fake  # fake processes live in the runtime object, not the server


# The local kit's test app: a Behaviour acted out by a real process.
_APP = """
import os, signal, socket, sys, time
b = {behaviour}
for line in b["output"]:
    print(line, flush=True)
for name in b["echo_env"]:
    print(name + "=" + os.environ.get(name, ""), flush=True)
if b["on_sigterm"] == "exits":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
elif b["on_sigterm"] == "ignores":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
began = time.monotonic()
listener = None
while True:
    elapsed = time.monotonic() - began
    port = os.environ.get("PORT")
    if listener is None and port and b["bind_after"] is not None and elapsed >= b["bind_after"]:
        listener = socket.create_server(("0.0.0.0", int(port)))
    if b["exit_after"] is not None and elapsed >= b["exit_after"]:
        sys.exit(b["exit_status"])
    time.sleep(0.01)
"""


class LocalKit:
    reattaches = False  # sandboxes die with the server that started them

    def __init__(self, base: Path) -> None:
        self.runtime: Runtime = LocalRuntime()
        self._specs = _Specs(base)

    def spec(
        self, behaviour: Behaviour, *, process_type: str = "web", env: dict[str, str] | None = None
    ) -> ProcessSpec:
        release, command = self.release(behaviour)
        return self._specs.make(command, release, process_type, env)

    def release(self, behaviour: Behaviour) -> tuple[Path, str]:
        self._specs.count += 1
        name = f"app-{self._specs.count}"
        parent = self._specs.base / "releases"
        if behaviour.fails_to_start:
            parent = self._specs.base / "private"  # the app's uid cannot reach it
        release = parent / name
        release.mkdir(parents=True)
        fields = {
            key: getattr(behaviour, key)
            for key in ("bind_after", "exit_after", "exit_status", "on_sigterm")
        }
        fields.update(output=list(behaviour.output), echo_env=list(behaviour.echo_env))
        (release / "app.py").write_text(textwrap.dedent(_APP).format(behaviour=repr(fields)))
        (release / "app.py").chmod(0o644)
        for directory in (parent, release):
            directory.chmod(0o700 if behaviour.fails_to_start else 0o755)
        return release, "/usr/bin/python3 app.py"

    def crash(self, handle: ProcessHandle) -> None:
        assert signal_inside(handle.state["pid"], signal.SIGKILL)

    def restarted(self) -> Runtime:
        return LocalRuntime()


_NEEDS_SANDBOX = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap"),
    pytest.mark.skipif(os.geteuid() != 0, reason="switches to an app uid: needs root"),
]
class DockerKit:
    """Containers of one image (the minimal stack plus an empty app, pushed to the test
    registry once per session): each behaviour's program travels in its command."""

    reattaches = True  # containers outlive the server that started them

    def __init__(self, base: Path, client: docker.DockerClient, image: str) -> None:
        self._client = client
        self._image = image
        self._missing: set[Path] = set()
        self.runtime: Runtime = self._new_runtime()
        self._specs = _Specs(base)

    def _new_runtime(self) -> Runtime:
        return DockerRuntime(self._client, image_for=self._image_for)

    def _image_for(self, spec: ProcessSpec) -> str:
        if spec.release_dir in self._missing:
            return "dockyard/no-such-image:absent"
        return self._image

    def spec(
        self, behaviour: Behaviour, *, process_type: str = "web", env: dict[str, str] | None = None
    ) -> ProcessSpec:
        release, command = self.release(behaviour)
        return self._specs.make(command, release, process_type, env)

    def release(self, behaviour: Behaviour) -> tuple[Path, str]:
        self._specs.count += 1
        release = self._specs.base / "releases" / f"app-{self._specs.count}"
        release.mkdir(parents=True)
        if behaviour.fails_to_start:
            self._missing.add(release)
        program = base64.b64encode(_rendered(behaviour).encode()).decode()
        return release, f"exec python3 -c 'import base64; exec(base64.b64decode(\"{program}\"))'"

    def crash(self, handle: ProcessHandle) -> None:
        init_pid = self._client.api.inspect_container(handle.state["container"])["State"]["Pid"]
        children = [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _parent_pid(entry) == init_pid
        ]
        assert children, "the app's process was not found under the container's init"
        for pid in children:
            os.kill(pid, signal.SIGKILL)

    def restarted(self) -> Runtime:
        return self._new_runtime()


def _parent_pid(proc_entry: Path) -> int | None:
    try:
        data = (proc_entry / "stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[1])


def _rendered(behaviour: Behaviour) -> str:
    fields: dict[str, object] = {
        key: getattr(behaviour, key)
        for key in ("bind_after", "exit_after", "exit_status", "on_sigterm")
    }
    fields.update(output=list(behaviour.output), echo_env=list(behaviour.echo_env))
    return textwrap.dedent(_APP).format(behaviour=repr(fields))


KITS: dict[str, Callable[[Path], RuntimeKit]] = {"fake": FakeKit, "local": LocalKit}


@pytest.fixture(scope="session")
def contract_image(
    docker_client: docker.DockerClient, test_stack: str, test_registry: RunningRegistry
) -> str:
    """The docker kit's image, published as a release is (built, pushed, then run)."""
    return _published_image(docker_client, test_stack, test_registry, app="contract")


def _published_image(
    client: docker.DockerClient, stack_tag: str, test_registry: RunningRegistry, *, app: str
) -> str:
    empty_release = Path(tempfile.mkdtemp(prefix="dockyard-contract-image-"))
    (empty_release / "README").write_text("the contract suite's programs come in commands\n")
    registry = test_registry.client()
    try:
        images = ReleaseImages(client, registry, stack=stack_tag)
        images.publish(app=app, release_id="r1", release_dir=empty_release, process_types={})
        return images.reference(app, "r1")
    finally:
        registry.close()
        shutil.rmtree(empty_release)


_GONE_ADDRESS_TESTS = {
    "test_stop_kills_what_ignores_sigterm_once_the_grace_is_over",
    "test_stop_without_grace_kills_at_once_and_may_be_repeated",
}


def _upstream_answers_anything() -> bool:
    """Whether a connection to an address that exists nowhere (TEST-NET-3) is accepted:
    a transparent proxy upstream, as on the machines these tests were written on."""
    return accepts_connections("203.0.113.5", 80)


@pytest.fixture(scope="session")
def podman_contract_image(
    podman_client: docker.DockerClient, podman_stack: str, test_registry: RunningRegistry
) -> str:
    """The same image for the kit on Podman, published through Podman's socket."""
    return _published_image(podman_client, podman_stack, test_registry, app="contract-podman")


@pytest.fixture(
    params=[
        "fake",
        pytest.param("local", marks=_NEEDS_SANDBOX),
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("podman", marks=pytest.mark.docker),
    ]
)
def kit(request: pytest.FixtureRequest) -> Iterator[RuntimeKit]:
    # Not pytest's tmp_path: it sits under a 0700 directory the app's uid cannot
    # traverse. Releases live where a data directory puts them: parents searchable.
    base = Path(tempfile.mkdtemp(prefix="dockyard-runtime-contract-"))
    base.chmod(0o711)
    chosen: RuntimeKit
    if request.param == "docker":
        chosen = DockerKit(
            base,
            request.getfixturevalue("docker_client"),
            request.getfixturevalue("contract_image"),
        )
    elif request.param == "podman":
        if request.node.originalname in _GONE_ADDRESS_TESTS and _upstream_answers_anything():
            request.applymarker(
                pytest.mark.xfail(
                    strict=True,
                    reason="Podman (netavark) deletes an app's bridge with its last container,"
                    " so the stopped container's address is routed out of the host, and this"
                    " machine's upstream accepts connections to any address",
                )
            )
        chosen = DockerKit(
            base,
            request.getfixturevalue("podman_client"),
            request.getfixturevalue("podman_contract_image"),
        )
    else:
        chosen = KITS[request.param](base)
    started: list[ProcessHandle] = []
    original_start = chosen.runtime.start

    def start(spec: ProcessSpec) -> ProcessHandle:
        handle = original_start(spec)
        started.append(handle)
        return handle

    chosen.runtime.start = start  # type: ignore[method-assign]  # stopped after the test
    yield chosen
    for handle in started:
        chosen.runtime.stop(handle, grace=0)
    shutil.rmtree(base, ignore_errors=True)


def wait_until(condition: Callable[[], object], *, what: str) -> None:
    deadline = time.monotonic() + BOOT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def logged(spec: ProcessSpec, expected: list[str]) -> Callable[[], bool]:
    return lambda: tail_log(spec.log_path) == expected


# -- starting ------------------------------------------------------------------------------


def test_a_web_process_listens_on_the_port_it_was_given(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    handle = runtime.start(kit.spec(BOOTS))

    wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)

    assert isinstance(handle.port, int)
    assert accepts_connections(handle.host, handle.port)
    assert runtime.poll(handle) is None
    assert json.loads(json.dumps(handle.state)) == handle.state  # persisted as JSON


def test_web_processes_get_ports_of_their_own(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    handles = [runtime.start(kit.spec(BOOTS)) for _ in range(3)]
    for handle in handles:
        wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)
    assert len({h.port for h in handles}) == 3


def test_a_slow_web_process_passes_the_boot_check_once_it_listens(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    began = time.monotonic()
    handle = runtime.start(kit.spec(slow_to_bind(0.3)))
    wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)
    assert time.monotonic() - began >= 0.3


def test_the_process_sees_the_apps_variables_and_the_platforms(
    kit: RuntimeKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = kit.runtime
    monkeypatch.setenv("LAUNCHER_ONLY", "the launcher's own")
    names = ("GREETING", "PORT", "CONTAINER", "HOME", "LAUNCHER_ONLY")
    web = kit.spec(
        Behaviour(output=("booting",), echo_env=names),
        env={"GREETING": "hi", "PORT": "1", "CONTAINER": "mine"},
    )
    worker = kit.spec(Behaviour(bind_after=None, echo_env=("PORT",)), process_type="worker")
    web_handle, worker_handle = runtime.start(web), runtime.start(worker)

    expected = [
        "booting",
        "GREETING=hi",
        f"PORT={web_handle.port}",  # the platform's, whatever the app set
        "CONTAINER=sample-app-web-1",
        "HOME=/tmp",
        "LAUNCHER_ONLY=",
    ]
    wait_until(logged(web, expected), what="the web process's output")
    assert worker_handle.port is None
    wait_until(logged(worker, ["PORT="]), what="the worker's output")


# -- ending --------------------------------------------------------------------------------


def test_an_exit_is_reported_with_its_status(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    handle = runtime.start(kit.spec(Behaviour(bind_after=None, exit_after=0.0, exit_status=3)))
    wait_until(lambda: runtime.poll(handle) is not None, what="the exit")
    assert runtime.poll(handle) == 3
    runtime.stop(handle, grace=5)  # what the supervisor does to clean up after it
    assert runtime.poll(handle) == 3


def test_a_crash_at_boot_fails_the_boot_check_with_its_output(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    spec = kit.spec(EXITS_AT_BOOT)
    handle = runtime.start(spec)

    with pytest.raises(BootError) as raised:
        wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)

    assert not raised.value.timed_out
    assert "web-1 process exited with status 1 while booting" in raised.value.message
    runtime.stop(handle, grace=0)  # drains what it printed
    assert tail_log(spec.log_path) == ["Error: something is missing"]


def test_a_process_that_never_listens_times_out_and_is_stopped(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    handle = runtime.start(kit.spec(NEVER_BINDS))

    with pytest.raises(BootError) as raised:
        wait_for_boot(runtime, handle, timeout=0.5)

    assert raised.value.timed_out
    assert "did not accept connections on $PORT within 0.5 seconds" in raised.value.message
    assert runtime.poll(handle) is not None


def test_stop_asks_with_sigterm_first(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    graceful = runtime.start(kit.spec(Behaviour(on_sigterm="exits")))
    plain = runtime.start(kit.spec(BOOTS))
    for handle in (graceful, plain):
        wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)

    began = time.monotonic()
    runtime.stop(graceful, grace=10)
    runtime.stop(plain, grace=10)

    assert time.monotonic() - began < 5  # neither waited out its grace
    assert runtime.poll(graceful) == 0
    assert runtime.poll(plain) == TERMINATED


def test_stop_kills_what_ignores_sigterm_once_the_grace_is_over(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    handle = runtime.start(kit.spec(Behaviour(on_sigterm="ignores")))
    wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)
    assert handle.port is not None

    began = time.monotonic()
    runtime.stop(handle, grace=0.3)

    assert 0.3 <= time.monotonic() - began < 5
    assert runtime.poll(handle) not in (None, 0)
    assert not accepts_connections(handle.host, handle.port)


def test_stop_without_grace_kills_at_once_and_may_be_repeated(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    handle = runtime.start(kit.spec(Behaviour(on_sigterm="ignores")))
    wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)
    assert handle.port is not None

    began = time.monotonic()
    runtime.stop(handle, grace=0)
    runtime.stop(handle, grace=0)

    assert time.monotonic() - began < 5
    assert runtime.poll(handle) not in (None, 0)
    assert not accepts_connections(handle.host, handle.port)


def test_an_app_killed_from_outside_is_reported_as_killed(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    handle = runtime.start(kit.spec(BOOTS))
    wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)

    kit.crash(handle)

    wait_until(lambda: runtime.poll(handle) is not None, what="the crash to show")
    assert runtime.poll(handle) == KILLED


def test_a_process_that_cannot_be_started_is_a_boot_error(kit: RuntimeKit) -> None:
    with pytest.raises(BootError) as raised:
        kit.runtime.start(kit.spec(FAILS_TO_START))
    assert not raised.value.timed_out
    assert raised.value.message


# -- re-attaching after a restart -----------------------------------------------------------


def test_load_re_attaches_to_a_process_that_survived_the_server(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    spec = kit.spec(BOOTS)
    handle = runtime.start(spec)
    wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)
    state = json.loads(json.dumps(handle.state))  # as the state store keeps it

    after_restart = kit.restarted()
    loaded = after_restart.load(spec, state)

    if not kit.reattaches:
        assert loaded is None  # the caller starts the release again
        return
    assert loaded is not None
    assert (loaded.host, loaded.port) == (handle.host, handle.port)
    assert after_restart.poll(loaded) is None
    after_restart.stop(loaded, grace=0)
    assert runtime.poll(handle) is not None  # the same process


def test_load_of_a_process_that_has_ended_finds_nothing(kit: RuntimeKit) -> None:
    runtime = kit.runtime
    spec = kit.spec(BOOTS)
    handle = runtime.start(spec)
    wait_for_boot(runtime, handle, timeout=BOOT_SECONDS)
    runtime.stop(handle, grace=0)

    assert kit.restarted().load(spec, json.loads(json.dumps(handle.state))) is None


# -- the desired state, reconciled over the runtime ------------------------------------------


class _Store:
    def __init__(self) -> None:
        self.saved: dict[str, dict[str, object]] = {}

    def save(self, app: str, state: dict[str, object]) -> None:
        self.saved[app] = json.loads(json.dumps(state))  # as the database keeps it

    def load_all(self) -> dict[str, dict[str, object]]:
        return dict(self.saved)


def _reconciler(runtime: Runtime, routes: RouteTable, store: _Store, base: Path) -> Supervisor:
    return Supervisor(
        runtime,
        routes,
        store,
        boot_timeout=BOOT_SECONDS,
        stop_grace=2,
        logs_dir=base / "app-logs",
        host_uid_for=lambda app: APP_UID,
        limits=LIMITS,
        drain_seconds=0.0,
    )


def _ticked(supervisor: Supervisor, condition: Callable[[], bool]) -> Callable[[], bool]:
    """``condition``, after a supervision pass (what the server's thread does)."""

    def check() -> bool:
        supervisor.tick()
        return condition()

    return check


def _converge(supervisor: Supervisor, app: str) -> None:
    wait_until(_ticked(supervisor, lambda: supervisor.converged(app)), what="convergence")


def _answering(supervisor: Supervisor, app: str) -> set[Backend]:
    endpoints = {i.endpoint for i in supervisor.observe(app) if i.endpoint is not None}
    assert all(accepts_connections(e.host, e.port) for e in endpoints)
    return endpoints


def test_a_formation_is_applied_observed_and_scaled(kit: RuntimeKit, tmp_path: Path) -> None:
    release, command = kit.release(BOOTS)
    routes, store = RouteTable(), _Store()
    supervisor = _reconciler(kit.runtime, routes, store, release.parent)
    types = {"web": command, "worker": command}
    try:
        supervisor.deploy(
            "sample-app",
            "r1",
            release,
            types,
            {},
            log=lambda line: None,
            formation={"web": Scale(2, "S"), "worker": Scale(1, "S")},
        )
        observed = supervisor.observe("sample-app")
        assert [(i.name, i.state) for i in observed] == [
            ("web-1", "running"),
            ("web-2", "running"),
            ("worker-1", "running"),
        ]
        assert _answering(supervisor, "sample-app") == set(routes.backends("sample-app"))
        assert len(routes.backends("sample-app")) == 2

        supervisor.scale("sample-app", {"web": Scale(3, "S"), "worker": Scale(0, "S")})
        _converge(supervisor, "sample-app")
        assert [i.name for i in supervisor.observe("sample-app")] == ["web-1", "web-2", "web-3"]
        assert len(_answering(supervisor, "sample-app")) == 3

        before = _answering(supervisor, "sample-app")
        supervisor.scale("sample-app", {"web": Scale(1, "S"), "worker": Scale(0, "S")})
        supervisor.wait_retired()
        (kept,) = _answering(supervisor, "sample-app")
        gone = before - {kept}
        wait_until(
            lambda: not any(accepts_connections(e.host, e.port) for e in gone),
            what="the removed instances to stop",
        )
    finally:
        supervisor.shutdown()


def test_an_instance_killed_from_outside_is_restarted_and_routed_again(
    kit: RuntimeKit, tmp_path: Path
) -> None:
    release, command = kit.release(BOOTS)
    routes = RouteTable()
    supervisor = _reconciler(kit.runtime, routes, _Store(), release.parent)
    try:
        supervisor.deploy(
            "sample-app",
            "r1",
            release,
            {"web": command},
            {},
            log=lambda line: None,
            formation={"web": Scale(2, "S")},
        )
        victim = supervisor._apps["sample-app"].processes["web-2"].handle
        assert victim is not None
        kit.crash(victim)
        wait_until(
            _ticked(supervisor, lambda: len(routes.backends("sample-app")) == 1),
            what="the dead instance to leave the rotation",
        )
        assert {i.name: i.state for i in supervisor.observe("sample-app")}["web-2"] == "crashed"
        _converge(supervisor, "sample-app")
        assert len(_answering(supervisor, "sample-app")) == 2
        assert len(routes.backends("sample-app")) == 2
    finally:
        supervisor.shutdown()


def test_a_restarted_server_brings_the_formation_back(kit: RuntimeKit, tmp_path: Path) -> None:
    release, command = kit.release(BOOTS)
    store = _Store()
    first = _reconciler(kit.runtime, RouteTable(), store, release.parent)
    first.deploy(
        "sample-app",
        "r1",
        release,
        {"web": command},
        {},
        log=lambda line: None,
        formation={"web": Scale(2, "S")},
    )
    if not kit.reattaches:
        first.shutdown()  # its sandboxes die with it

    routes = RouteTable()
    second = _reconciler(kit.restarted(), routes, store, release.parent)
    try:
        second.restore(lambda app: {})
        _converge(second, "sample-app")
        assert [i.name for i in second.observe("sample-app")] == ["web-1", "web-2"]
        assert len(_answering(second, "sample-app")) == 2
        assert len(routes.backends("sample-app")) == 2
    finally:
        second.shutdown()
        first.shutdown()
