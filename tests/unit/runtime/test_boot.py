from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard import sandbox
from dockyard.errors import BootError
from dockyard.runtime.base import ProcessSpec
from dockyard.runtime.boot import BootCancelled, tail_log, wait_for_boot
from dockyard.runtime.fake import EXITS_AT_BOOT, NEVER_BINDS, FakeRuntime, slow_to_bind


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    runtime = FakeRuntime()
    yield runtime
    runtime.kill_all()


def spec(tmp_path: Path, command: str = "web") -> ProcessSpec:
    return ProcessSpec(
        app="sample-app",
        release_id="r1",
        process_type="web",
        index=1,
        command=command,
        env={"SECRET": "value"},
        release_dir=tmp_path,
        host_uid=64123,
        limits=sandbox.Limits(),
        log_path=tmp_path / "logs" / "web-1.log",
    )


def test_boot_succeeds_once_the_port_accepts_connections(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    runtime.default = slow_to_bind(0.05)
    handle = runtime.start(spec(tmp_path))

    began = time.monotonic()
    wait_for_boot(runtime, handle, timeout=5)

    assert 0.05 <= time.monotonic() - began < 1
    assert runtime.poll(handle) is None


def test_exit_while_booting_is_a_boot_error_and_its_output_is_kept(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    runtime.default = EXITS_AT_BOOT
    process = spec(tmp_path)
    handle = runtime.start(process)

    with pytest.raises(BootError) as raised:
        wait_for_boot(runtime, handle, timeout=5)

    assert raised.value.message == "The web-1 process exited with status 1 while booting."
    assert not raised.value.timed_out
    assert tail_log(process.log_path) == ["Error: something is missing"]


def test_never_binding_times_out_and_stops_the_process(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    runtime.default = NEVER_BINDS
    handle = runtime.start(spec(tmp_path))

    with pytest.raises(BootError) as raised:
        wait_for_boot(runtime, handle, timeout=0.05)

    assert raised.value.timed_out
    assert "did not accept connections on $PORT within 0.05 seconds" in raised.value.message
    assert runtime.poll(handle) is not None


def test_cancelling_stops_waiting(tmp_path: Path, runtime: FakeRuntime) -> None:
    runtime.default = NEVER_BINDS
    handle = runtime.start(spec(tmp_path))

    with pytest.raises(BootCancelled):
        wait_for_boot(runtime, handle, timeout=5, cancelled=lambda: True)


def test_the_platform_sets_port_and_container_and_the_app_cannot_override_them(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    process = ProcessSpec(
        **{**spec(tmp_path).__dict__, "env": {"PORT": "1", "CONTAINER": "x", "HOME": "/h"}}
    )
    handle = runtime.start(process)

    env = runtime.env_of(handle)

    assert env["PORT"] == str(handle.port)
    assert env["CONTAINER"] == "sample-app-web-1"
    assert env["HOME"] == "/h"  # a default the app may change


def test_a_spec_never_shows_its_variables(tmp_path: Path) -> None:
    assert "value" not in repr(spec(tmp_path))
