"""What an API process beside workers relies on: calls on the bus answered by the worker
that runs the app, log lines followed by asking again, and cache resets told to every
worker."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import wait_for

from dockyard.backends.eventbus.memory import MemoryEventBus
from dockyard.pipeline import cache
from dockyard.services import lifecycle
from dockyard.services.remote import _after, _process_of
from dockyard.settings import Settings


def test_a_follower_gets_only_the_lines_written_since_it_last_asked() -> None:
    seen = ["t1 [web-1] a", "t2 [web-1] b"]
    assert _after(seen, [*seen, "t3 [web-2] c"]) == ["t3 [web-2] c"]
    assert _after(seen, ["t2 [web-1] b"]) == []
    # The last line seen scrolled out of the window: everything is new.
    assert _after(seen, ["t9 [web-1] z"]) == ["t9 [web-1] z"]
    assert _after([], ["t1 [web-1] a"]) == ["t1 [web-1] a"]
    assert _process_of("2026-12-06 03:00:00 [worker-2] hello [x]") == "worker-2"
    assert _process_of("no brackets") == ""


def test_a_cache_reset_reaches_every_worker_process(tmp_path: Path) -> None:
    bus = MemoryEventBus()
    settings = Settings.from_mapping({"DOCKYARD_DATA_DIR": str(tmp_path)})
    lifecycle.follow_cache_changes(bus, settings)
    saved = lifecycle.cache_dir(settings, "app-1")
    saved.mkdir(parents=True)
    (saved / "pip-wheel").write_text("cached")
    before = cache.generation(saved)
    bus.publish(lifecycle.CACHES_CHANNEL, {"type": lifecycle.CACHE_RESET, "app_id": "app-1"})
    wait_for(lambda: cache.generation(saved) != before, timeout=5, what="the reset")
    wait_for(lambda: not (saved / "pip-wheel").exists(), timeout=5, what="the files to go")


def test_a_deleted_apps_cache_and_releases_leave_every_worker(tmp_path: Path) -> None:
    bus = MemoryEventBus()
    settings = Settings.from_mapping({"DOCKYARD_DATA_DIR": str(tmp_path)})
    lifecycle.follow_cache_changes(bus, settings)
    saved = lifecycle.cache_dir(settings, "app-1")
    saved.mkdir(parents=True)
    (settings.releases_dir / "d-1").mkdir(parents=True)
    (settings.releases_dir / "d-other").mkdir()
    bus.publish(
        lifecycle.CACHES_CHANNEL,
        {"type": lifecycle.CACHE_DISCARDED, "app_id": "app-1", "releases": ["d-1", "../x"]},
    )
    wait_for(lambda: not saved.exists(), timeout=5, what="the cache to go")
    wait_for(lambda: not (settings.releases_dir / "d-1").exists(), timeout=5, what="d-1 to go")
    assert (settings.releases_dir / "d-other").is_dir()
