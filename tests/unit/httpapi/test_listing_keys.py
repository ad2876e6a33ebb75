"""The in-memory listing keys: served until a change to their app is published."""

from __future__ import annotations

from dockyard.api.listing_keys import ListingKeys
from dockyard.backends.eventbus.base import ALL_CHANNELS
from dockyard.services.deployments import ListingKey
from dockyard.services.events import channel_for

KEY = ("owner-1", "web")
V1 = ListingKey(app_id="a1", version=1)
V2 = ListingKey(app_id="a1", version=2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stored_key_is_served_until_its_app_changes() -> None:
    keys = ListingKeys()
    _, generation = keys.get(KEY)
    keys.put(KEY, V1, generation)
    assert keys.get(KEY)[0] == V1
    keys.observe(channel_for("a1"), [{"type": "log", "data": {"content": "x"}}])
    assert keys.get(KEY)[0] == V1, "a log line does not change the version"
    keys.observe(channel_for("other-app"), [{"type": "status", "data": {"status": "success"}}])
    assert keys.get(KEY)[0] == V1, "another app's change does not touch this one"
    keys.observe(channel_for("a1"), [{"type": "log"}, {"type": "status"}])
    assert keys.get(KEY)[0] is None


def test_a_value_read_before_a_change_is_not_stored_after_it() -> None:
    keys = ListingKeys()
    _, generation = keys.get(KEY)  # a request starts reading the database…
    keys.observe(channel_for("a1"), [{"type": "new", "id": "d2"}])  # …a deployment lands…
    keys.put(KEY, V1, generation)  # …and the version it read is already the old one
    assert keys.get(KEY)[0] is None
    _, generation = keys.get(KEY)
    keys.put(KEY, V2, generation)
    assert keys.get(KEY)[0] == V2


def test_a_deleted_app_is_forgotten_and_entries_expire() -> None:
    clock = Clock()
    keys = ListingKeys(ttl=5, clock=clock)
    keys.put(KEY, V1, keys.get(KEY)[1])
    keys.observe(channel_for("a1"), [{"type": "_app_deleted"}])
    assert keys.get(KEY)[0] is None
    keys.put(KEY, V2, keys.get(KEY)[1])
    clock.now += 4.9
    assert keys.get(KEY)[0] == V2
    clock.now += 0.2
    assert keys.get(KEY)[0] is None


def test_missed_events_make_every_key_go() -> None:
    keys = ListingKeys()
    keys.put(KEY, V1, keys.get(KEY)[1])
    _, generation = keys.get(KEY)
    keys.observe(ALL_CHANNELS, [])  # the PostgreSQL bus reconnected
    assert keys.get(KEY)[0] is None
    keys.put(KEY, V2, generation)
    assert keys.get(KEY)[0] is None, "read before the gap: not stored"
