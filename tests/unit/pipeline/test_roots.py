"""Build sandboxes' roots are reused: a finished build's root goes to the next build only
if nothing of the build is left in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard import sandbox
from dockyard.pipeline import roots

# Roots are reused only by a server running as root (it runs builds as other users).
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="roots are reused only as root")


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    return tmp_path / "pool"


def bare_root(path: Path) -> Path:
    """A root as a build's sandboxes have it: mount points, system links, a file mount
    point (a tool bound over an empty file)."""
    path.parent.mkdir(parents=True)
    tool = path.parent / "uv"
    tool.write_text("#!/bin/sh\n")
    spec = sandbox.SandboxSpec(
        host_uid=os.geteuid(),
        mounts=[
            sandbox.Mount(path.parent, "/buildpack"),
            sandbox.Mount(tool, "/opt/dockyard/bin/uv"),
        ],
        env={},
        cwd="/",
        root=path,
    )
    sandbox.prepare_root(spec)
    return path


def test_a_build_gets_an_empty_root_when_none_is_pooled(tmp_path: Path, pool: Path) -> None:
    root = tmp_path / "build" / "root"
    root.parent.mkdir()
    roots.take(pool, root)
    assert root.is_dir() and not any(root.iterdir())
    assert oct(root.stat().st_mode & 0o777) == oct(0o755)


def test_a_bare_root_goes_to_the_next_build(tmp_path: Path, pool: Path) -> None:
    first = bare_root(tmp_path / "first" / "root")
    made = sorted(str(p.relative_to(first)) for p in first.rglob("*"))
    inode = first.stat().st_ino
    assert roots.give_back(pool, first)
    assert not first.exists()

    second = tmp_path / "second" / "root"
    second.parent.mkdir()
    roots.take(pool, second)
    assert second.stat().st_ino == inode
    assert sorted(str(p.relative_to(second)) for p in second.rglob("*")) == made
    assert not any(pool.iterdir())


@pytest.mark.parametrize(
    "leftover",
    ["app", "cache", "a file", "a group-writable dir", "a file in a mount point"],
)
def test_a_root_with_anything_of_a_build_left_in_it_is_not_reused(
    tmp_path: Path, pool: Path, leftover: str
) -> None:
    root = bare_root(tmp_path / "build" / "root")
    if leftover in ("app", "cache"):
        (root / leftover).mkdir()
    elif leftover == "a file":
        (root / "notes").write_text("left by a build\n")
    elif leftover == "a group-writable dir":
        (root / "tmp").chmod(0o775)
    else:
        (root / "tmp" / "x").write_text("x")
    assert not roots.give_back(pool, root)
    assert root.is_dir(), "left where it is, to be removed with its build"
    fresh = tmp_path / "next" / "root"
    fresh.parent.mkdir()
    roots.take(pool, fresh)
    assert not any(fresh.iterdir())


@pytest.mark.parametrize("owned", ["opt", "bin", "opt/dockyard/bin/uv"])
def test_a_root_another_user_owns_anything_of_is_not_reused(
    tmp_path: Path, pool: Path, owned: str
) -> None:
    root = bare_root(tmp_path / "build" / "root")
    os.lchown(root / owned, 4321, 4321)  # "bin" is a link: its owner counts too
    assert not roots.give_back(pool, root)


def test_a_root_is_not_reused_by_a_server_that_does_not_run_as_root(
    tmp_path: Path, pool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its builds run as its own user, who could have written to the root.
    root = bare_root(tmp_path / "build" / "root")
    monkeypatch.setattr(roots.os, "geteuid", lambda: 1000)
    assert not roots.give_back(pool, root)


def test_a_root_that_is_gone_or_a_pool_that_cannot_be_made_is_not_an_error(
    tmp_path: Path, pool: Path
) -> None:
    assert not roots.give_back(pool, tmp_path / "never-made")
    pool.write_text("not a directory\n")
    assert not roots.give_back(pool, bare_root(tmp_path / "build" / "root"))


def test_the_pool_keeps_a_bounded_number_of_roots(
    tmp_path: Path, pool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roots, "POOL_SIZE", 2)
    given = [roots.give_back(pool, bare_root(tmp_path / f"b{i}" / "root")) for i in range(3)]
    assert given == [True, True, False]
    assert len(list(pool.iterdir())) == 2
