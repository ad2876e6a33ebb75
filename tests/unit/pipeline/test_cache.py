"""The deployment cache: builds work on a linked copy, saved only on success, never over a
reset that happened meanwhile, and never following symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers import wait_for

from dockyard.pipeline import cache


def test_a_build_gets_the_saved_cache_and_saves_its_own(tmp_path: Path) -> None:
    saved, first, second = tmp_path / "saved", tmp_path / "w1", tmp_path / "w2"
    seen = cache.checkout(saved, first)
    assert list(first.iterdir()) == []
    (first / "uv").mkdir()
    (first / "uv" / "wheel").write_text("cached wheel")
    assert cache.save(first, saved, seen_generation=seen)
    seen = cache.checkout(saved, second)
    assert (second / "uv" / "wheel").read_text() == "cached wheel"


def test_a_failed_build_leaves_the_saved_cache_as_it_was(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    (saved / "npm").mkdir(parents=True)
    (saved / "npm" / "index").write_text("v1")
    working = tmp_path / "w"
    cache.checkout(saved, working)
    (working / "junk").write_text("half a download")
    # The build failed: nothing calls save, and the next build sees the old cache only.
    again = tmp_path / "w2"
    cache.checkout(saved, again)
    assert sorted(p.name for p in again.iterdir()) == ["npm"]


def test_a_reset_during_a_build_is_not_undone_by_its_save(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    (saved / "pip").mkdir(parents=True)
    working = tmp_path / "w"
    seen = cache.checkout(saved, working)
    cache.reset(saved)
    assert not saved.exists()
    assert not cache.save(working, saved, seen_generation=seen)
    assert not saved.exists()
    # The next build starts empty and may save again.
    fresh = tmp_path / "w2"
    seen = cache.checkout(saved, fresh)
    assert list(fresh.iterdir()) == []
    assert cache.save(fresh, saved, seen_generation=seen)


def test_symlinks_are_copied_as_links_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("platform secret")
    saved = tmp_path / "saved"
    saved.mkdir()
    os.symlink(outside, saved / "dir-link")
    os.symlink(outside / "secret", saved / "file-link")
    working = tmp_path / "w"
    cache.checkout(saved, working)
    assert (working / "dir-link").is_symlink() and (working / "file-link").is_symlink()
    assert os.readlink(working / "file-link") == str(outside / "secret")
    assert not any(p.is_file() and not p.is_symlink() for p in working.rglob("*"))


def test_replaced_caches_are_removed_off_the_build_path(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    # What a server killed while removing an old cache left behind.
    leftover = tmp_path / f".removing-saved-{'0' * 32}"
    (leftover / "npm").mkdir(parents=True)
    other_app = tmp_path / f".removing-saved-other-{'0' * 32}"
    other_app.mkdir()
    for round_ in range(2):
        working = tmp_path / f"w{round_}"
        seen = cache.checkout(saved, working)
        (working / f"file{round_}").write_text("x")
        assert cache.save(working, saved, seen_generation=seen)
    assert sorted(p.name for p in saved.iterdir()) == ["file0", "file1"]
    wait_for(
        lambda: sorted(p.name for p in tmp_path.iterdir()) == [other_app.name, "saved"],
        timeout=10,
        what="the replaced caches to be removed",
    )
    cache.discard(saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other_app.name]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
def test_a_checkout_is_handed_to_the_build_user_whole(tmp_path: Path) -> None:
    build_uid = 243_219
    saved = tmp_path / "saved"
    (saved / "venv" / "bin").mkdir(parents=True)
    (saved / "venv" / "bin" / "python").write_text("#!")
    os.symlink("bin/python", saved / "venv" / "python-link")
    (saved / "venv" / "bin" / "python").chmod(0o755)
    working = tmp_path / "w"
    cache.checkout(saved, working, owner=build_uid)
    owners = {
        str(path.relative_to(working)): path.lstat().st_uid
        for path in [working, *working.rglob("*")]
    }
    assert owners == {
        ".": build_uid,
        "venv": build_uid,
        "venv/bin": build_uid,
        "venv/bin/python": build_uid,
        "venv/python-link": build_uid,
    }


def test_files_a_release_shares_with_the_saved_cache_get_copies_before_the_next_checkout(
    tmp_path: Path,
) -> None:
    saved, release = tmp_path / "saved", tmp_path / "release"
    (saved / "python" / "venv").mkdir(parents=True)
    (saved / "uv").mkdir()
    shared = saved / "python" / "venv" / "module.py"
    shared.write_text("print('cached')\n")
    shared.chmod(0o640)
    os.utime(shared, (1_000_000, 1_000_000))
    (saved / "uv" / "wheel").write_text("only in the cache")
    release.mkdir()
    os.link(shared, release / "module.py")  # what a build linking from its cache leaves
    wheel_inode = (saved / "uv" / "wheel").stat().st_ino

    cache.settle_in_background(saved, release)
    cache.checkout(saved, tmp_path / "next-build")  # waits for the copies

    kept, served = shared.stat(), (release / "module.py").stat()
    assert kept.st_ino != served.st_ino, "the next build could write to the release"
    assert served.st_nlink == 1
    assert shared.read_text() == "print('cached')\n"
    assert (kept.st_mode & 0o777, kept.st_mtime) == (0o640, 1_000_000)
    assert (saved / "uv" / "wheel").stat().st_ino == wheel_inode  # not shared: left alone
    assert not list(saved.rglob("*.dockyard-copy"))
    next_build = (tmp_path / "next-build" / "python" / "venv" / "module.py").stat()
    assert next_build.st_ino == kept.st_ino != served.st_ino


@pytest.mark.skipif(os.geteuid() != 0, reason="frozen files are root's")
def test_a_frozen_file_stays_frozen_and_shared_through_checkout_and_unshare(
    tmp_path: Path,
) -> None:
    saved, release = tmp_path / "saved", tmp_path / "release"
    (saved / "python" / "venv").mkdir(parents=True)
    release.mkdir()
    frozen = saved / "python" / "venv" / "module.py"
    frozen.write_text("print('kept')\n")
    frozen.chmod(0o444)  # what keep.apply_requests leaves: root's and read-only
    os.link(frozen, release / "module.py")

    cache.settle_in_background(saved, release)
    cache.checkout(saved, tmp_path / "next-build", owner=4321)

    checked_out = (tmp_path / "next-build" / "python" / "venv" / "module.py").stat()
    assert checked_out.st_ino == (release / "module.py").stat().st_ino, "not copied"
    assert (checked_out.st_uid, checked_out.st_mode & 0o777) == (0, 0o444)
    assert (tmp_path / "next-build" / "python").stat().st_uid == 4321


def test_the_next_build_gets_a_copy_made_ahead_and_still_cannot_poison_the_cache(
    tmp_path: Path,
) -> None:
    saved, release = tmp_path / "saved", tmp_path / "release"
    release.mkdir()
    first = tmp_path / "w1"
    cache.checkout(saved, first)
    (first / "uv").mkdir()
    (first / "uv" / "wheel").write_text("cached wheel")
    assert cache.save(first, saved, seen_generation="")
    cache.settle_in_background(saved, release)

    second = tmp_path / "w2"
    cache.checkout(saved, second)  # the copy made ahead: a rename
    assert (second / "uv" / "wheel").read_text() == "cached wheel"
    assert (second / "uv" / "wheel").stat().st_ino == (saved / "uv" / "wheel").stat().st_ino
    assert not list(tmp_path.glob("saved.next*")), "the copy was used, not left behind"
    # That build fails after changing its copy: the saved cache is as it was.
    (second / "uv" / "wheel").unlink()
    (second / "junk").write_text("half a download")
    third = tmp_path / "w3"
    cache.checkout(saved, third)
    assert sorted(p.name for p in third.iterdir()) == ["uv"]
    assert (third / "uv" / "wheel").read_text() == "cached wheel"


def test_a_reset_drops_the_copy_made_ahead(tmp_path: Path) -> None:
    saved, release = tmp_path / "saved", tmp_path / "release"
    release.mkdir()
    (saved / "npm").mkdir(parents=True)
    (saved / "npm" / "index").write_text("v1")
    cache.settle_in_background(saved, release)
    cache.reset(saved)
    working = tmp_path / "w"
    cache.checkout(saved, working)
    assert list(working.iterdir()) == []
    assert not list(tmp_path.glob("saved.next*"))
