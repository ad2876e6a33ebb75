"""Kept directories: what a buildpack asks to keep lands in the cache as frozen hard links
of the app's files, and a request that names anything else is refused with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.pipeline import keep

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="freezing gives files to root")
BUILD_UID = 4321


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    app, cache = tmp_path / "app", tmp_path / "cache"
    venv = app / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib").mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "lib" / "secret.py").write_text("x = 1\n")
    (venv / "lib" / "secret.py").chmod(0o600)
    (venv / "bin" / "tool").write_text("#!/bin/sh\n")
    (venv / "bin" / "tool").chmod(0o4755)  # setuid: must not survive into a root-owned file
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    cache.mkdir()
    return app, cache


def request(cache: Path, *lines: str) -> None:
    (cache / keep.REQUESTS_FILE).write_text("".join(f"{line}\n" for line in lines))


def apply(app: Path, cache: Path, owner: int | None = BUILD_UID) -> list[str]:
    said: list[str] = []
    keep.apply_requests(cache, app, owner=owner if os.geteuid() == 0 else None, log=said.append)
    return said


@as_root
def test_a_kept_directory_is_frozen_hard_links_of_the_apps_files(dirs: tuple[Path, Path]) -> None:
    app, cache = dirs
    request(cache, "python/venv-abc .venv")
    assert apply(app, cache) == []
    kept = cache / "python" / "venv-abc"
    for name in ("pyvenv.cfg", "lib/secret.py", "bin/tool"):
        in_cache, in_app = (kept / name).stat(), (app / ".venv" / name).stat()
        assert in_cache.st_ino == in_app.st_ino, f"{name} was copied, not linked"
        assert in_cache.st_uid == 0 and keep.is_frozen(in_cache), f"{name} is writable"
    assert (kept / "pyvenv.cfg").stat().st_mode & 0o7777 == 0o444
    # Still readable by the app's uid, which no longer owns it; bin/ still runs.
    assert (kept / "lib/secret.py").stat().st_mode & 0o7777 == 0o444
    assert (kept / "bin/tool").stat().st_mode & 0o7777 == 0o555, "setuid must be dropped"
    assert os.readlink(kept / "bin/python") == "/usr/bin/python3"
    # Directories are the next build's, so that it can move the venv into /app.
    assert {(kept / d).stat().st_uid for d in ("", "bin", "lib")} == {BUILD_UID}
    assert (cache / "python").stat().st_uid == BUILD_UID
    assert not (cache / keep.REQUESTS_FILE).exists(), "a request is applied once"


@as_root
def test_keeping_again_replaces_what_was_kept(dirs: tuple[Path, Path]) -> None:
    app, cache = dirs
    request(cache, "python/venv .venv")
    apply(app, cache)
    (app / ".venv" / "lib" / "new.py").write_text("y = 2\n")
    (cache / "python" / "venv" / "stale").mkdir()
    request(cache, "python/venv .venv")
    assert apply(app, cache) == []
    kept = cache / "python" / "venv"
    assert (kept / "lib" / "new.py").read_text() == "y = 2\n"
    assert not (kept / "stale").exists()
    assert keep.is_frozen((kept / "pyvenv.cfg").stat()), "frozen files stay frozen"
    assert not [p for p in (cache / "python").iterdir() if p.name != "venv"], "no partial left"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("../outside .venv", "not a plain relative path"),
        ("/etc/dockyard .venv", "not a plain relative path"),
        ("python/venv ../..", "not a plain relative path"),
        ("python/venv .venv extra", "a path in the cache and a path in the app"),
        ("python/venv missing", "does not exist in the app"),
        ("python/venv .venv/pyvenv.cfg", "is not a directory"),
    ],
)
def test_a_request_dockyard_will_not_honour_is_refused_with_a_reason(
    dirs: tuple[Path, Path], line: str, why: str
) -> None:
    app, cache = dirs
    request(cache, line)
    said = apply(app, cache)
    assert len(said) == 1 and why in said[0] and "Not kept" in said[0]
    assert sorted(p.name for p in cache.iterdir()) == []


def test_a_symlink_is_never_followed_in_the_app_or_in_the_cache(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    app, cache = dirs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "host-file").write_text("not the build's\n")
    (app / "link").symlink_to(elsewhere)
    (cache / "python").symlink_to(elsewhere)
    request(cache, "kept link", "python/venv .venv")
    said = apply(app, cache)
    assert len(said) == 2
    assert "is not a directory (or is a symlink)" in said[0]
    assert "python in the cache is not a directory" in said[1]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["host-file"]
    assert not (cache / "kept").exists()


def test_requests_of_a_failed_or_earlier_build_are_discarded(dirs: tuple[Path, Path]) -> None:
    app, cache = dirs
    request(cache, "python/venv .venv")
    keep.discard_requests(cache)
    assert apply(app, cache) == []
    assert not (cache / "python").exists()
