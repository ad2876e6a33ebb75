"""Steps run beside others (the cache checkout, the slug): their result, and their failure."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dockyard.pipeline import cache
from dockyard.worker.background import Background


def test_the_checkout_gives_the_build_the_cache_and_its_generation(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    (saved / "uv").mkdir(parents=True)
    (saved / "uv" / "wheel").write_text("cached")
    cache.reset(tmp_path / "other")  # unrelated: its generation marker is its own
    working = tmp_path / "work" / "cache"
    checkout = Background(lambda: cache.checkout(saved, working), name="test-checkout")
    assert checkout.wait() == cache.generation(saved)
    assert (working / "uv" / "wheel").read_text() == "cached"


def test_a_failure_is_raised_to_the_caller_once_joined(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    checkout = Background(
        lambda: cache.checkout(tmp_path / "saved", tmp_path / "a-file" / "cache"), name="test"
    )
    checkout.join()  # what the runner does when the build already failed: no second error
    with pytest.raises(OSError):
        checkout.wait()


def test_the_work_runs_while_the_caller_goes_on() -> None:
    release = threading.Event()
    work = Background(lambda: release.wait(5) and 42, name="test-overlap")
    release.set()  # only reachable because the constructor did not wait for the work
    assert work.wait() == 42
