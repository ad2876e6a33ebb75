"""The cache checkout that runs beside detection: its generation, and its failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.pipeline import cache
from dockyard.worker.runner import _Checkout


def test_the_checkout_gives_the_build_the_cache_and_its_generation(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    (saved / "uv").mkdir(parents=True)
    (saved / "uv" / "wheel").write_text("cached")
    cache.reset(tmp_path / "other")  # unrelated: its generation marker is its own
    checkout = _Checkout(saved, tmp_path / "work" / "cache", None)
    assert checkout.wait() == cache.generation(saved)
    assert (tmp_path / "work" / "cache" / "uv" / "wheel").read_text() == "cached"


def test_a_failed_checkout_is_raised_to_the_build_once_joined(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    checkout = _Checkout(tmp_path / "saved", tmp_path / "a-file" / "cache", None)
    checkout.join()  # what the runner does when the build already failed: no second error
    with pytest.raises(OSError):
        checkout.wait()
