"""What only the PostgreSQL event bus has to get right: notifications from elsewhere that
are garbage, and parts of a big message sent twice. Batches, order and big events, which
every bus must get right, are in tests/contract/test_eventbus_contract.py."""

from __future__ import annotations

import asyncio

import psycopg

from dockyard.backends.eventbus.postgres import NOTIFY_CHANNEL, PostgresEventBus, _payloads


def test_malformed_notifications_are_ignored_and_listening_goes_on(postgres_url: str) -> None:
    async def scenario() -> list[dict[str, object]]:
        bus = PostgresEventBus(postgres_url)
        await bus.start()
        try:
            subscription = bus.subscribe("app:1")
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                for garbage in (
                    "not json",
                    "[1, 2]",
                    '{"channel": 5, "events": []}',
                    '{"channel": "app:1", "events": [1, "two"]}',
                    '{"part": ["x", "zero", 2], "data": "{"}',
                    '{"part": ["y", 0, 100000], "data": "{"}',
                ):
                    conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, garbage))
            await asyncio.to_thread(bus.publish, "app:1", {"type": "status", "seq": 1})
            return [await asyncio.wait_for(subscription.get(), timeout=10)]
        finally:
            await bus.close()

    assert asyncio.run(scenario()) == [{"type": "status", "seq": 1}]


def test_a_part_sent_twice_by_a_retrying_publisher_is_taken_once() -> None:
    bus = PostgresEventBus("postgresql://unused")
    delivered: list[tuple[str, list[dict[str, object]]]] = []
    bus.fanout.deliver_threadsafe = lambda channel, events: delivered.append(  # type: ignore[method-assign]
        (channel, list(events))
    )
    event = {"type": "log", "data": {"content": "é" * 4000}}
    parts = list(_payloads("app:1", [event]))
    assert len(parts) > 1
    for index, payload in enumerate(parts):
        bus._dispatch(payload)
        if index == 0:
            bus._dispatch(payload)  # the reply was lost, the publisher sent it again
    assert delivered == [("app:1", [event])]
