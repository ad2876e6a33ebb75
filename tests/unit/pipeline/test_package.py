"""Packaging a built app into a slug never follows symlinks and drops privileges bits."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from dockyard.errors import BuildError
from dockyard.pipeline import package
from dockyard.pipeline.package import make_slug


def test_slug_holds_the_app_with_links_as_links_and_no_setuid(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "app.py").write_text("print('hi')\n")
    (app / "pkg" / "mod.py").write_text("x = 1\n")
    (app / "-dash-first.txt").write_text("names starting with a dash are files, not options\n")
    os.chmod(app / "app.py", 0o4755)  # noqa: S103 - the setuid bit the slug must drop
    secret = tmp_path / "secret.key"
    secret.write_text("platform secret")
    os.symlink(secret, app / "leak")
    os.symlink("pkg/mod.py", app / "alias.py")

    size = make_slug(app, tmp_path / "slug.tar.zst")

    assert size == (tmp_path / "slug.tar.zst").stat().st_size
    # Any zstd reads it (here the command-line one: Python 3.11 has no zstd module).
    unpacked = subprocess.run(
        ["zstd", "-d", "-c", str(tmp_path / "slug.tar.zst")], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(unpacked)) as slug:
        members = {m.name: m for m in slug.getmembers()}
        assert set(members) == {
            "app.py",
            "pkg",
            "pkg/mod.py",
            "-dash-first.txt",
            "leak",
            "alias.py",
        }
        assert members["leak"].issym() and members["leak"].linkname == str(secret)
        assert members["alias.py"].issym()
        assert members["app.py"].mode & 0o7000 == 0
        assert all(m.uid == 0 and m.gid == 0 for m in members.values())
        payload = b"".join(slug.extractfile(m).read() for m in members.values() if m.isfile())  # type: ignore[union-attr]
    assert b"platform secret" not in payload


def test_a_missing_packaging_tool_is_named_with_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tar").symlink_to(shutil.which("tar") or "/usr/bin/tar")
    monkeypatch.setattr(package, "TOOLS_PATH", str(tmp_path))
    with pytest.raises(BuildError, match=r"^zstd is not installed .*apt-get install -y zstd"):
        package.check_tools()
    monkeypatch.setattr(package, "TOOLS_PATH", "/usr/bin:/bin")
    package.check_tools()
