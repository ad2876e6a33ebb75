"""Packing a directory for deploy: ignore files, one root folder, links, .git."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dockyard.cli.client.archive import pack_directory
from dockyard.cli.client.errors import ClientError


def write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def pack(source: Path, tmp_path: Path) -> tuple[dict[str, tarfile.TarInfo], list[str]]:
    warnings: list[str] = []
    result = pack_directory(source, tmp_path / "out.tar.gz", warn=warnings.append)
    with tarfile.open(result.path) as tar:
        members = {member.name: member for member in tar.getmembers()}
    return members, warnings


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "my project"
    write(root / "app.py", "print('hi')")
    write(root / "Procfile", "web: python app.py")
    return root


def test_one_root_folder_named_after_the_directory(project: Path, tmp_path: Path) -> None:
    members, _ = pack(project, tmp_path)
    assert {name.split("/")[0] for name in members} == {"my-project"}
    assert members["my-project"].isdir()
    assert members["my-project/app.py"].isfile()
    assert members["my-project/app.py"].uid == 0 and members["my-project/app.py"].uname == ""


def test_git_directory_is_always_skipped(project: Path, tmp_path: Path) -> None:
    write(project / ".git" / "HEAD", "ref: refs/heads/main")
    write(project / "vendor" / "lib" / ".git", "gitdir: ../.git/modules/lib")  # a submodule
    members, _ = pack(project, tmp_path)
    assert not any(".git" in name.split("/") for name in members)
    assert "my-project/vendor/lib" in members


def test_ignore_files_are_honoured(project: Path, tmp_path: Path) -> None:
    write(project / ".gitignore", "node_modules/\n*.log\n!keep.log\n/build\n")
    write(project / ".slugignore", "docs\n")
    write(project / ".dockyardignore", "*.bin\n")
    for name in [
        "node_modules/a/b.js",
        "x.log",
        "keep.log",
        "build/out",
        "src/build/kept",
        "docs/a.md",
        "big.bin",
    ]:
        write(project / name)
    members, _ = pack(project, tmp_path)
    names = {name.removeprefix("my-project/") for name in members}
    assert {"keep.log", "src/build/kept", "app.py", ".gitignore"} <= names
    assert not names & {
        "node_modules",
        "node_modules/a/b.js",
        "x.log",
        "build",
        "build/out",
        "docs/a.md",
        "big.bin",
    }


def test_nested_gitignore_applies_below_its_directory(project: Path, tmp_path: Path) -> None:
    write(project / "web" / ".gitignore", "*.tmp\n!web-only.tmp\n")
    write(project / ".gitignore", "web-only.tmp\n")
    for name in ["web/a.tmp", "web/web-only.tmp", "b.tmp", "web-only.tmp"]:
        write(project / name)
    members, _ = pack(project, tmp_path)
    names = {name.removeprefix("my-project/") for name in members}
    assert "web/a.tmp" not in names
    assert "web/web-only.tmp" in names  # the deeper file re-includes it
    assert "b.tmp" in names
    assert "web-only.tmp" not in names


def test_links_are_stored_as_links_and_escaping_ones_skipped(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    write(outside, "secret")
    (project / "static").mkdir()
    os.symlink("../app.py", project / "static" / "app-link.py")
    os.symlink(str(project / "Procfile"), project / "abs-inside")
    os.symlink(str(outside), project / "abs-outside")
    os.symlink("../../secret.txt", project / "rel-outside")
    os.symlink("static", project / "static-dir-link")
    os.symlink("static-dir-link/app-link.py", project / "through-link")
    members, warnings = pack(project, tmp_path)
    assert members["my-project/static/app-link.py"].issym()
    assert members["my-project/static/app-link.py"].linkname == "../app.py"
    assert members["my-project/abs-inside"].linkname == "Procfile"  # rewritten relative
    assert members["my-project/static-dir-link"].issym()  # stored, not followed
    assert "my-project/static-dir-link/app-link.py" not in members
    for skipped in ["abs-outside", "rel-outside", "through-link"]:
        assert f"my-project/{skipped}" not in members
        assert any(skipped in warning for warning in warnings)
    assert not any("secret" in name for name in members)


def test_executable_bit_is_kept_and_hard_links_are_plain_files(
    project: Path, tmp_path: Path
) -> None:
    script = project / "bin" / "run"
    write(script, "#!/bin/sh\n")
    script.chmod(0o755)
    os.link(project / "app.py", project / "hard.py")
    members, _ = pack(project, tmp_path)
    assert members["my-project/bin/run"].mode & 0o111
    assert members["my-project/hard.py"].isfile()
    assert members["my-project/hard.py"].size == len("print('hi')")


def test_special_files_are_skipped_with_a_warning(project: Path, tmp_path: Path) -> None:
    os.mkfifo(project / "pipe")
    members, warnings = pack(project, tmp_path)
    assert "my-project/pipe" not in members
    assert any("pipe" in warning for warning in warnings)


def test_unreadable_file_is_an_error_in_words(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "app.py":
            raise PermissionError(13, "Permission denied")  # chmod 0 does not stop root
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ClientError) as caught:
        pack(project, tmp_path)
    assert caught.value.message == "Cannot pack app.py: Permission denied."
    assert ".dockyardignore" in caught.value.hint
