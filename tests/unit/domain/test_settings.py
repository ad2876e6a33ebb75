"""Settings read from the environment, and the defaults derived from the machine."""

from __future__ import annotations

import os

import pytest

from dockyard import settings
from dockyard.settings import Settings, SettingsError

GIB = 1024**3


@pytest.mark.parametrize(
    ("cores", "memory_gib", "expected"),
    [
        (2, 24, 6),  # memory-bound: six builds of 4 GiB fit
        (2, 64, 8),  # core-bound: four per core
        (1, 2, 2),  # never fewer than two
        (32, 64, 16),
        (64, 1024, 32),  # at most 32, whatever the machine
    ],
)
def test_default_workers_follow_cores_and_memory(
    cores: int, memory_gib: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = 4096
    pages = memory_gib * GIB // page
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    monkeypatch.setattr(
        os, "sysconf", lambda name: {"SC_PHYS_PAGES": pages, "SC_PAGE_SIZE": page}[name]
    )
    assert settings.default_workers(4 * GIB) == expected
    assert Settings.from_mapping({}).workers == expected
    assert Settings.from_mapping({"DOCKYARD_WORKERS": "3"}).workers == 3


def test_a_bad_worker_count_is_refused_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="DOCKYARD_WORKERS"):
        Settings.from_mapping({"DOCKYARD_WORKERS": "zero"})
