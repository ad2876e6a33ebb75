"""The docker runtime's pure parts: the stack's tag, the registry setting, the rule that
CI never passes by skipping the docker tests, a build container's output stream, and the
layers of a release image."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest
from tests import dockerenv

from dockyard.errors import BuildError, DockyardError
from dockyard.runtime.docker import builds, images, stack
from dockyard.runtime.docker.registry import RegistryAccess


def test_the_stack_tag_changes_with_its_recipe_and_only_with_it() -> None:
    reordered = dataclasses.replace(stack.MINIMAL, packages=tuple(reversed(stack.MINIMAL.packages)))
    more = dataclasses.replace(stack.MINIMAL, packages=(*stack.MINIMAL.packages, "curl"))
    assert reordered.tag == stack.MINIMAL.tag
    assert more.tag != stack.MINIMAL.tag
    assert stack.MINIMAL.tag.startswith("dockyard/stack:minimal-")


def test_an_unknown_stack_name_says_which_exist() -> None:
    with pytest.raises(DockyardError, match="full, minimal"):
        stack.recipe_named("alpine")


def test_the_registry_setting_takes_an_address_with_or_without_a_scheme() -> None:
    plain = RegistryAccess.parse("registry.example:5000", username="u", password="p")
    loopback = RegistryAccess.parse("http://127.0.0.1:5000/", username="u", password="p")
    assert (plain.scheme, plain.address) == ("https", "registry.example:5000")
    assert (loopback.scheme, loopback.address) == ("http", "127.0.0.1:5000")
    with pytest.raises(DockyardError, match="host:port"):
        RegistryAccess.parse("ftp://x:1/path", username="u", password="p")


def test_a_missing_docker_part_skips_but_fails_when_docker_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCKYARD_REQUIRE_DOCKER", raising=False)
    with pytest.raises(pytest.skip.Exception):
        dockerenv.unavailable("no dockerd")
    monkeypatch.setenv("DOCKYARD_REQUIRE_DOCKER", "1")
    with pytest.raises(pytest.fail.Exception, match="DOCKYARD_REQUIRE_DOCKER=1"):
        dockerenv.unavailable("no dockerd")


def _frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def test_a_build_containers_stream_is_split_into_stdout_and_stderr_as_it_comes() -> None:
    ours, engine = socket.socketpair()
    said: list[tuple[str, bytes]] = []
    stream = _frame(2, b"compiling\n") + _frame(1, b"compiled 0\n") + _frame(2, b"do")
    # Frames cut anywhere (even inside a header) are put back together.
    for cut in (3, 9, 20, len(stream)):
        engine.sendall(stream[:cut])
        stream = stream[cut:]
    engine.sendall(_frame(2, b"ne\n"))
    engine.close()
    with ours:
        builds._pump(
            ours,
            {
                1: lambda data: said.append(("out", data)),
                2: lambda data: said.append(("err", data)),
            },
            check=lambda: None,
            running=lambda: True,
        )
    assert said == [
        ("err", b"compiling\n"),
        ("out", b"compiled 0\n"),
        ("err", b"do"),
        ("err", b"ne\n"),
    ]


def test_a_build_containers_stream_stops_at_the_check_that_raises() -> None:
    ours, engine = socket.socketpair()
    checks = iter([None, None, BuildError("The build was cancelled.")])

    def check() -> None:
        raised = next(checks)
        if raised is not None:
            raise raised

    with ours, engine, pytest.raises(BuildError, match="cancelled"):
        builds._pump(ours, {2: lambda data: None}, check=check, running=lambda: True)


def test_the_dependencies_layer_is_named_by_what_it_holds(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "dep.py").write_text("x = 1\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    first = images._tree_digest(tmp_path, [".venv"], "stack:a")
    (tmp_path / "app.py").write_text("print(2)\n")  # the app's own code: not a dependency
    assert images._tree_digest(tmp_path, [".venv"], "stack:a") == first
    assert images._tree_digest(tmp_path, [".venv"], "stack:b") != first
    (venv / "lib" / "dep.py").write_text("x = 22\n")
    assert images._tree_digest(tmp_path, [".venv"], "stack:a") != first
    (venv / "link").symlink_to("/etc")
    assert images._plain_dir(tmp_path, ".venv") and not images._plain_dir(tmp_path, ".venv/link")
    # Restored from the cache, links and directories are made anew: the same name still.
    linked = images._tree_digest(tmp_path, [".venv"], "stack:a")
    (venv / "link").unlink()
    os.utime(venv / "lib", ns=(1, 1))
    (venv / "link").symlink_to("/etc")
    assert images._tree_digest(tmp_path, [".venv"], "stack:a") == linked


def test_the_apps_layer_leaves_its_dependencies_to_the_layer_below(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "dep.py").write_text("x = 1\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    for only, leave_out, expected in (
        ((), (".venv",), {"Dockerfile", "app", "app/app.py"}),
        (
            (".venv",),
            (),
            {"Dockerfile", "app", "app/.venv", "app/.venv/lib", "app/.venv/lib/dep.py"},
        ),
    ):
        context = io.BytesIO()
        images._write_context(context, tmp_path, "base:1", {}, only=only, leave_out=leave_out)
        context.seek(0)
        with tarfile.open(fileobj=context) as archive:
            assert set(archive.getnames()) == expected
            dockerfile = archive.extractfile("Dockerfile")
            assert dockerfile is not None and dockerfile.read().startswith(b"FROM base:1\n")
