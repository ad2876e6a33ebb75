"""The supervisor over FakeRuntime: deploy, switch, failures, restarts, restore."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard import sandbox
from dockyard.domain.formation import Scale
from dockyard.errors import BootError, Conflict
from dockyard.routetable import Backend, RouteTable
from dockyard.runtime.fake import EXITS_AT_BOOT, NEVER_BINDS, Behaviour, FakeRuntime
from dockyard.runtime.supervisor import InstanceEvent, Supervisor

APP = "sample-app"
WEB = {"web": "serve", "worker": "work"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Routes(RouteTable):
    """The real route table, also recording its calls into the runtime's event list."""

    def __init__(self, events: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.events = events

    def set_backends(
        self, app: str, backends: Iterable[Backend], *, empty: str = "crashed"
    ) -> None:
        chosen = list(backends)
        if chosen:
            shown = ",".join(f"{b.host}:{b.port}" for b in chosen)
            self.events.append(("route", app, shown))
        else:
            self.events.append(("status", app, empty))
        super().set_backends(app, chosen, empty=empty)

    def set_status(self, app: str, status: str) -> None:
        self.events.append(("status", app, status))
        super().set_status(app, status)


class Store:
    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}

    def save(self, app: str, state: dict[str, Any]) -> None:
        self.saved[app] = state

    def load_all(self) -> dict[str, dict[str, Any]]:
        return dict(self.saved)


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    runtime = FakeRuntime()
    yield runtime
    runtime.kill_all()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def routes(runtime: FakeRuntime) -> Routes:
    return Routes(runtime.events)


@pytest.fixture
def make_supervisor(
    runtime: FakeRuntime, routes: Routes, store: Store, clock: Clock, tmp_path: Path
) -> Callable[..., Supervisor]:
    def make(routes: RouteTable = routes, drain_seconds: float = 0.0) -> Supervisor:
        return Supervisor(
            runtime,
            routes,
            store,
            boot_timeout=0.2,
            stop_grace=5,
            logs_dir=tmp_path / "logs",
            host_uid_for=lambda app: 64123,
            limits=sandbox.Limits(),
            clock=clock,
            settle_seconds=0.02,
            drain_seconds=drain_seconds,
        )

    return make


@pytest.fixture
def supervisor(make_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return make_supervisor()


def deploy(
    supervisor: Supervisor,
    release_id: str,
    process_types: dict[str, str] = WEB,
    *,
    log: list[str] | None = None,
    formation: dict[str, Scale] | None = None,
) -> None:
    supervisor.deploy(
        APP,
        release_id,
        Path("/releases") / release_id,
        process_types,
        {"SECRET_KEY": "s3cret"},
        log=(log if log is not None else []).append,
        formation=formation,
    )


def serving(routes: RouteTable, runtime: FakeRuntime) -> str | None:
    """The release of the process the route points at."""
    backend = routes.lookup(APP)
    for handle_spec in runtime.running():
        if handle_spec.is_web and backend is not None:
            return handle_spec.release_id
    return None


def wait_for(condition: Callable[[], bool], tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        tick()
        time.sleep(0.005)


def test_a_release_that_boots_is_routed_and_persisted_without_its_variables(
    supervisor: Supervisor, routes: Routes, store: Store, runtime: FakeRuntime
) -> None:
    log: list[str] = []
    deploy(supervisor, "r1", log=log)

    assert supervisor.status(APP) == "running"
    backend = routes.lookup(APP)
    assert backend is not None
    assert {(spec.container, spec.release_id) for spec in runtime.running()} == {
        ("sample-app-web-1", "r1"),
        ("sample-app-worker-1", "r1"),
    }
    saved = store.saved[APP]
    assert saved["release_id"] == "r1"
    assert saved["process_types"] == WEB
    assert set(saved["processes"]) == {"web-1", "worker-1"}
    assert "s3cret" not in repr(saved)
    assert "Release r1 is up and serving." in log


def test_switch_routes_to_the_new_release_before_stopping_the_old_one(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes
) -> None:
    deploy(supervisor, "r1")
    runtime.events.clear()

    deploy(supervisor, "r2")
    supervisor.wait_retired()  # the old release is stopped in the background

    kinds = [(kind, name) for kind, name, _ in runtime.events]
    route_at = kinds.index(("route", APP))
    assert kinds[:route_at] == [("start", "sample-app-web-1"), ("start", "sample-app-worker-1")]
    assert sorted(kinds[route_at + 1 :]) == [
        ("stop", "sample-app-web-1"),
        ("stop", "sample-app-worker-1"),
    ]
    assert all(release == "r1" for kind, _, release in runtime.events if kind == "stop")
    assert runtime.stop_graces == [5, 5]  # the old release is stopped gracefully
    assert {spec.release_id for spec in runtime.running()} == {"r2"}


def test_the_old_release_drains_before_it_is_stopped_unless_the_server_exits(
    make_supervisor: Callable[..., Supervisor], runtime: FakeRuntime
) -> None:
    supervisor = make_supervisor(drain_seconds=0.3)
    deploy(supervisor, "r1")
    # Taken before the deploy: the drain starts inside it, at the switch
    switching = time.monotonic()
    deploy(supervisor, "r2")
    assert {spec.release_id for spec in runtime.running()} == {"r1", "r2"}
    assert supervisor.retiring_releases(APP) == {"r1"}  # its files must stay meanwhile
    assert not supervisor.wait_release_stopped(APP, "r1", timeout=0.01)
    assert supervisor.wait_release_stopped(APP, "r1", timeout=5)
    supervisor.wait_retired()
    assert time.monotonic() - switching >= 0.3
    assert {spec.release_id for spec in runtime.running()} == {"r2"}
    assert supervisor.retiring_releases(APP) == set()

    deploy(supervisor, "r3")
    exiting = time.monotonic()
    supervisor.shutdown()  # does not wait for the drain
    assert time.monotonic() - exiting < 0.3
    assert runtime.running() == []


@pytest.mark.parametrize(
    ("behaviour", "timed_out", "message"),
    [
        (EXITS_AT_BOOT, False, "The web-1 process exited with status 1 while booting."),
        (NEVER_BINDS, True, "The web-1 process did not accept connections on $PORT within 0.2"),
    ],
)
def test_a_release_that_does_not_boot_leaves_the_current_one_serving(
    supervisor: Supervisor,
    runtime: FakeRuntime,
    routes: Routes,
    store: Store,
    behaviour: Behaviour,
    timed_out: bool,
    message: str,
) -> None:
    deploy(supervisor, "r1")
    before = (routes.lookup(APP), dict(store.saved[APP]))
    runtime.behaviours["broken"] = behaviour
    log: list[str] = []

    with pytest.raises(BootError) as raised:
        deploy(supervisor, "r2", {"web": "broken", "worker": "work"}, log=log)

    assert raised.value.timed_out is timed_out
    assert raised.value.message.startswith(message)
    assert (routes.lookup(APP), store.saved[APP]) == before
    assert supervisor.status(APP) == "running"
    assert {spec.release_id for spec in runtime.running()} == {"r1"}
    assert ("stop", "sample-app-web-1", "r1") not in runtime.events
    if behaviour is EXITS_AT_BOOT:
        assert log[-2:] == ["Last lines written by web-1:", "[web-1] Error: something is missing"]


def test_a_worker_that_dies_at_boot_fails_the_deployment(
    supervisor: Supervisor, runtime: FakeRuntime
) -> None:
    runtime.behaviours["bad-worker"] = Behaviour(exit_after=0.0, exit_status=3)

    with pytest.raises(BootError, match="worker-1 process exited with status 3"):
        deploy(supervisor, "r1", {"web": "serve", "worker": "bad-worker"})

    assert runtime.running() == []
    assert supervisor.status(APP) == "new"


def test_an_app_without_web_succeeds_once_its_processes_stay_up(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes
) -> None:
    deploy(supervisor, "r1", {"worker": "work"})

    assert supervisor.status(APP) == "running"
    assert routes.lookup(APP) is None
    assert [spec.name for spec in runtime.running()] == ["worker-1"]


def test_a_release_without_processes_is_refused(supervisor: Supervisor) -> None:
    with pytest.raises(BootError, match="no process types"):
        deploy(supervisor, "r1", {})


def test_a_crashed_process_is_restarted_with_exponential_backoff(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes, clock: Clock
) -> None:
    deploy(supervisor, "r1")

    def web_handle() -> Any:
        process = supervisor._apps[APP].processes["web-1"]
        return process.handle

    delays = []
    for _ in range(6):
        runtime.crash(web_handle())
        supervisor.tick()
        assert routes.lookup(APP) is None
        assert routes.status(APP) == "crashed"
        crashed_at = clock.now
        process = supervisor._apps[APP].processes["web-1"]
        assert process.restart_at is not None
        delays.append(process.restart_at - crashed_at)
        clock.now = process.restart_at - 0.01
        supervisor.tick()
        assert web_handle() is None
        clock.now = process.restart_at
        wait_for(lambda: routes.lookup(APP) is not None, supervisor.tick)

    assert delays == [1, 2, 4, 8, 16, 30]
    assert supervisor.status(APP) == "running"

    # Up for a minute: the next crash is restarted after a second again.
    clock.now += 60
    supervisor.tick()
    runtime.crash(web_handle())
    supervisor.tick()
    process = supervisor._apps[APP].processes["web-1"]
    assert process.restart_at == clock.now + 1


def test_status_says_restarting_then_crashed_while_a_process_keeps_failing(
    supervisor: Supervisor, runtime: FakeRuntime, clock: Clock
) -> None:
    deploy(supervisor, "r1")
    runtime.behaviours["work"] = EXITS_AT_BOOT
    worker = supervisor._apps[APP].processes["worker-1"]
    assert worker.handle is not None
    runtime.crash(worker.handle)

    statuses = []
    for _ in range(3):
        supervisor.tick()  # notices the exit
        statuses.append(supervisor.status(APP))
        assert worker.restart_at is not None
        clock.now = worker.restart_at
        supervisor.tick()  # starts it again; it exits at once

    assert statuses == ["restarting", "restarting", "crashed"]
    assert "worker-1 exited with status 1; restarting in 4 s" in "\n".join(
        supervisor.app_logs(APP, lines=10)
    )


def test_a_process_killed_for_memory_is_logged_as_such_and_restarted(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes, clock: Clock
) -> None:
    deploy(supervisor, "r1")
    web = supervisor._apps[APP].processes["web-1"]
    assert web.handle is not None
    runtime.crash(web.handle, out_of_memory=True)
    supervisor.tick()
    assert "web-1 was killed: it used more than its memory limit; restarting in 1 s" in (
        "\n".join(supervisor.app_logs(APP, lines=10))
    )
    assert web.restart_at is not None
    clock.now = web.restart_at
    wait_for(lambda: routes.lookup(APP) is not None, supervisor.tick)


def test_stop_start_restart_and_remove(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes, store: Store, tmp_path: Path
) -> None:
    with pytest.raises(Conflict):
        supervisor.start_app(APP)
    deploy(supervisor, "r1")

    supervisor.stop_app(APP)
    assert supervisor.status(APP) == "stopped"
    assert routes.status(APP) == "stopped"
    assert runtime.running() == []
    assert store.saved[APP]["stopped"] is True
    supervisor.tick()
    assert runtime.running() == []  # a stopped app is not restarted

    supervisor.start_app(APP)
    wait_for(lambda: supervisor.status(APP) == "running", supervisor.tick)
    assert routes.lookup(APP) is not None
    assert len(runtime.running()) == 2

    old_port = routes.lookup(APP)
    supervisor.restart_app(APP)
    wait_for(lambda: supervisor.status(APP) == "running", supervisor.tick)
    assert routes.lookup(APP) != old_port
    assert len(runtime.running()) == 2

    supervisor.remove_app(APP)
    assert supervisor.status(APP) == "new"
    assert routes.status(APP) == "none"
    assert runtime.running() == []
    assert store.saved[APP] == {}
    assert not (tmp_path / "logs" / APP).exists()


def test_restore_reattaches_to_processes_that_survived(
    supervisor: Supervisor,
    make_supervisor: Callable[..., Supervisor],
    runtime: FakeRuntime,
) -> None:
    deploy(supervisor, "r1")
    before = sorted(spec.container for spec in runtime.running())
    runtime.events.clear()

    fresh_routes = RouteTable()
    restarted = make_supervisor(fresh_routes)
    restarted.restore(env_for=lambda app: {"SECRET_KEY": "s3cret"})
    wait_for(lambda: restarted.status(APP) == "running", restarted.tick)

    assert fresh_routes.lookup(APP) is not None
    assert [kind for kind, _, _ in runtime.events if kind == "start"] == []
    assert sorted(spec.container for spec in runtime.running()) == before


def test_restore_starts_again_what_died_with_the_server(
    supervisor: Supervisor,
    make_supervisor: Callable[..., Supervisor],
    runtime: FakeRuntime,
) -> None:
    deploy(supervisor, "r1")
    runtime.kill_all()

    fresh_routes = RouteTable()
    restarted = make_supervisor(fresh_routes)
    restarted.restore(env_for=lambda app: {"SECRET_KEY": "from-config"})
    wait_for(lambda: restarted.status(APP) == "running", restarted.tick)

    assert fresh_routes.lookup(APP) is not None
    handle = restarted._apps[APP].processes["web-1"].handle
    assert handle is not None
    assert runtime.env_of(handle)["SECRET_KEY"] == "from-config"


def test_restore_keeps_a_stopped_app_stopped(
    supervisor: Supervisor, make_supervisor: Callable[..., Supervisor], runtime: FakeRuntime
) -> None:
    deploy(supervisor, "r1")
    supervisor.stop_app(APP)

    fresh_routes = RouteTable()
    restarted = make_supervisor(fresh_routes)
    restarted.restore(env_for=lambda app: {})

    assert restarted.status(APP) == "stopped"
    assert fresh_routes.status(APP) == "stopped"
    assert runtime.running() == []


@pytest.mark.timeout(10)
def test_logs_are_merged_prefixed_and_followed(
    supervisor: Supervisor, runtime: FakeRuntime
) -> None:
    runtime.behaviours["serve"] = Behaviour(output=("web says hi",))
    runtime.behaviours["work"] = Behaviour(output=("worker says hi",))
    deploy(supervisor, "r1")

    lines = supervisor.app_logs(APP, lines=10)
    # Four date fields first (the official client's format), then the name.
    assert [line.split(" ", 4)[4] for line in lines] == [
        "[web-1] web says hi",
        "[worker-1] worker says hi",
        "[dockyard] release r1 started",
    ]

    stop = threading.Event()
    followed = supervisor.follow_logs(APP, stop=stop, lines=1, interval=0.01)
    assert next(followed).endswith("[dockyard] release r1 started")
    runtime.behaviours["serve"] = Behaviour(output=("r2 web says hi",))
    deploy(supervisor, "r2", {"web": "serve"})
    assert next(followed).endswith("[web-1] r2 web says hi")
    assert next(followed).endswith("[dockyard] release r2 started")
    stop.set()
    assert list(followed) == []


def test_the_supervision_thread_restarts_and_shutdown_stops_everything(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes
) -> None:
    deploy(supervisor, "r1")
    supervisor.clock = time.monotonic
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,))
    thread.start()
    try:
        supervisor.restart_app(APP)
        deadline = time.monotonic() + 5
        while supervisor.status(APP) != "running":
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()

    supervisor.shutdown()
    assert runtime.running() == []


# -- formations ------------------------------------------------------------------------


def web_backends(routes: RouteTable) -> set[Backend]:
    return set(routes.backends(APP))


def test_a_release_starts_its_whole_formation_and_routes_every_web_instance(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes
) -> None:
    deploy(supervisor, "r1", formation={"web": Scale(3, "L"), "worker": Scale(2, "S")})

    instances = supervisor.observe(APP)
    assert [i.name for i in instances] == ["web-1", "web-2", "web-3", "worker-1", "worker-2"]
    assert {i.state for i in instances} == {"running"}
    assert {i.size for i in instances} == {"L", "S"}
    assert len(web_backends(routes)) == 3
    assert {i.endpoint for i in instances if i.process_type == "web"} == web_backends(routes)
    containers = {spec.container for spec in runtime.running()}
    assert {"sample-app-web-3", "sample-app-worker-2"} <= containers
    memory = {spec.name: spec.limits.memory_bytes for spec in runtime.running()}
    assert memory["web-1"] == 1024 * 1024**2 and memory["worker-1"] == 256 * 1024**2
    seen = {routes.lookup(APP) for _ in range(6)}
    assert seen == web_backends(routes), "requests go to every web instance in turn"


def test_scaling_up_adds_instances_to_the_rotation_once_they_answer(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes
) -> None:
    deploy(supervisor, "r1")
    assert len(web_backends(routes)) == 1

    supervisor.scale(APP, {"web": Scale(4), "worker": Scale(1)})
    assert not supervisor.converged(APP)
    wait_for(lambda: supervisor.converged(APP), supervisor.tick)

    assert len(web_backends(routes)) == 4
    assert [i.name for i in supervisor.observe(APP) if i.process_type == "web"] == [
        "web-1",
        "web-2",
        "web-3",
        "web-4",
    ]


def test_scaling_down_takes_instances_out_of_the_rotation_before_stopping_them(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes
) -> None:
    deploy(supervisor, "r1", formation={"web": Scale(3), "worker": Scale(1)})
    runtime.events.clear()

    supervisor.scale(APP, {"web": Scale(1), "worker": Scale(0)})
    supervisor.wait_retired()

    kinds = [kind for kind, _, _ in runtime.events]
    assert kinds.index("route") < kinds.index("stop"), "out of the rotation, then stopped"
    assert [i.name for i in supervisor.observe(APP)] == ["web-1"]
    assert [spec.name for spec in runtime.running()] == ["web-1"]
    assert len(web_backends(routes)) == 1


def test_web_scaled_to_zero_shows_its_own_page_and_comes_back(
    supervisor: Supervisor, routes: Routes
) -> None:
    deploy(supervisor, "r1")

    supervisor.scale(APP, {"web": Scale(0), "worker": Scale(1)})
    supervisor.wait_retired()
    assert routes.lookup(APP) is None
    assert routes.status(APP) == "scaled-down"

    supervisor.scale(APP, {"web": Scale(2), "worker": Scale(1)})
    wait_for(lambda: len(web_backends(routes)) == 2, supervisor.tick)


def test_a_dead_instance_leaves_the_rotation_and_comes_back_after_its_restart(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes, clock: Clock
) -> None:
    deploy(supervisor, "r1", formation={"web": Scale(3)})
    web2 = supervisor._apps[APP].processes["web-2"]
    assert web2.handle is not None
    dead = Backend(web2.handle.host, web2.handle.port or 0)

    runtime.crash(web2.handle)
    supervisor.tick()

    assert dead not in web_backends(routes) and len(web_backends(routes)) == 2
    assert routes.status(APP) == "running", "the others go on serving"
    assert {i.name: i.state for i in supervisor.observe(APP)}["web-2"] == "crashed"
    clock.now += 1
    wait_for(lambda: len(web_backends(routes)) == 3, supervisor.tick)


def test_a_size_change_restarts_that_types_instances_at_the_new_size(
    supervisor: Supervisor, runtime: FakeRuntime
) -> None:
    deploy(supervisor, "r1")

    supervisor.scale(APP, {"web": Scale(1, "XL"), "worker": Scale(1)})
    wait_for(lambda: supervisor.converged(APP), supervisor.tick)

    memory = {spec.name: spec.limits.memory_bytes for spec in runtime.running()}
    assert memory == {"web-1": 2048 * 1024**2, "worker-1": 512 * 1024**2}


def test_restart_of_one_type_or_instance_leaves_the_others_running(
    supervisor: Supervisor, runtime: FakeRuntime
) -> None:
    deploy(supervisor, "r1", formation={"web": Scale(2), "worker": Scale(1)})
    before = {spec.name: spec for spec in runtime.running()}
    starts = len([e for e in runtime.events if e[0] == "start"])

    assert supervisor.restart_app(APP, ["worker"]) == ["worker-1"]
    assert supervisor.restart_app(APP, ["web-2"]) == ["web-2"]
    wait_for(lambda: supervisor.converged(APP), supervisor.tick)

    assert len([e for e in runtime.events if e[0] == "start"]) == starts + 2
    assert {spec.name for spec in runtime.running()} == set(before)
    with pytest.raises(Conflict, match="Nothing to restart named clock"):
        supervisor.restart_app(APP, ["clock"])


def test_restore_brings_back_the_formation(
    make_supervisor: Callable[..., Supervisor], runtime: FakeRuntime
) -> None:
    first = make_supervisor()
    deploy(first, "r1", formation={"web": Scale(2, "L"), "worker": Scale(0)})
    runtime.kill_all()

    second = make_supervisor()
    second.restore(lambda app: {})
    wait_for(lambda: second.converged(APP), second.tick)

    assert [(i.name, i.size) for i in second.observe(APP)] == [("web-1", "L"), ("web-2", "L")]


def test_instance_events_tell_each_state_change(
    supervisor: Supervisor, runtime: FakeRuntime, clock: Clock
) -> None:
    events: list[InstanceEvent] = []
    supervisor.subscribe(events.append)
    deploy(supervisor, "r1")
    web = supervisor._apps[APP].processes["web-1"]
    assert web.handle is not None

    runtime.crash(web.handle)
    supervisor.tick()
    clock.now += 1
    wait_for(lambda: supervisor.converged(APP), supervisor.tick)
    supervisor.scale(APP, {"web": Scale(1), "worker": Scale(0)})

    seen = [(e.instance, e.state) for e in events]
    assert seen == [
        ("web-1", "crashed"),
        ("web-1", "starting"),
        ("web-1", "running"),
        ("worker-1", "stopped"),
    ]
    assert "exited with status 137" in events[0].detail


def test_rename_moves_the_route_state_and_logs_and_restarts_under_the_new_name(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes, store: Store, tmp_path: Path
) -> None:
    deploy(supervisor, "r1")
    assert (tmp_path / "logs" / APP).is_dir()

    supervisor.rename_app(APP, "renamed-app")
    wait_for(lambda: supervisor.status("renamed-app") == "running", supervisor.tick)
    assert routes.lookup("renamed-app") is not None
    assert routes.status(APP) == "none"
    assert supervisor.status(APP) == "new"
    assert {spec.container for spec in runtime.running()} == {
        "renamed-app-web-1",
        "renamed-app-worker-1",
    }
    assert store.saved["renamed-app"]["release_id"] == "r1"
    assert not (tmp_path / "logs" / APP).exists()
    assert (tmp_path / "logs" / "renamed-app" / "r1").is_dir()
    # A name in use by another running app is refused, and nothing moves.
    supervisor.deploy("other-app", "r2", Path("/releases/r2"), WEB, {}, log=lambda _: None)
    with pytest.raises(Conflict):
        supervisor.rename_app("renamed-app", "other-app")
    assert routes.lookup("renamed-app") is not None


def test_an_app_handed_over_to_another_supervisor_stops_here_and_leaves_its_route(
    supervisor: Supervisor, runtime: FakeRuntime, routes: Routes, store: Store
) -> None:
    """Worker processes: another worker switched the app to a release of its own; this
    one stops its instances but writes neither the route nor the saved state."""
    deploy(supervisor, "r1")
    runtime.events.clear()
    saved = dict(store.saved[APP])

    supervisor.hand_over(APP)
    supervisor.wait_retired()

    assert runtime.running() == []
    assert not [event for event in runtime.events if event[0] in ("route", "status")]
    assert routes.lookup(APP) is not None  # the route is the new owner's to change
    assert store.saved[APP] == saved
    assert supervisor.status(APP) == "new"
    supervisor.hand_over(APP)  # told twice (the bus may repeat): nothing more to do


def test_a_supervisor_takes_an_app_over_before_it_routes_a_release(
    make_supervisor: Callable[..., Supervisor], runtime: FakeRuntime, routes: Routes
) -> None:
    supervisor = make_supervisor()
    taken: list[tuple[str, str | None]] = []
    supervisor.take_over = lambda app: taken.append((app, routes.status(app)))
    deploy(supervisor, "r1")
    assert taken == [(APP, "none")]  # before the first route was written
