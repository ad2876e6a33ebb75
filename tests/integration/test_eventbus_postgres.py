"""The PostgreSQL event bus over real LISTEN/NOTIFY: batches, order, and events too big
for one notification (PostgreSQL refuses payloads of 8,000 bytes or more)."""

from __future__ import annotations

import asyncio

import psycopg

from dockyard.backends.eventbus.postgres import NOTIFY_CHANNEL, PostgresEventBus, _payloads


def _round_trip(url: str, batches: list[list[dict[str, object]]]) -> list[dict[str, object]]:
    async def scenario() -> list[dict[str, object]]:
        bus = PostgresEventBus(url)
        await bus.start()
        try:
            subscription = bus.subscribe("app:1")
            other = bus.subscribe("app:2")
            for batch in batches:
                await asyncio.to_thread(bus.publish_many, "app:1", batch)
            expected = sum(len(batch) for batch in batches)
            received = [
                await asyncio.wait_for(subscription.get(), timeout=10) for _ in range(expected)
            ]
            assert other.queue.empty()
            return received
        finally:
            await bus.close()

    return asyncio.run(scenario())


def test_a_batch_of_thousands_of_lines_arrives_whole_and_in_order(postgres_url: str) -> None:
    batch = [{"type": "log", "seq": n, "data": {"content": f"line {n}"}} for n in range(3000)]
    assert _round_trip(postgres_url, [batch[:10], batch[10:]]) == batch


def test_events_too_big_for_one_notification_still_arrive(postgres_url: str) -> None:
    # Each escapes to ~24 KB of JSON (\\u00e9, \\", \\u0001): three notifications' worth.
    huge = [
        {"type": "log", "seq": 1, "data": {"content": "é" * 4000}},
        {"type": "log", "seq": 2, "data": {"content": '"' * 4000 + "\\" * 4000}},
        {"type": "log", "seq": 3, "data": {"content": "\x01" * 4000}},
        {"type": "status", "seq": 4, "data": {"status": "success"}},
    ]
    assert _round_trip(postgres_url, [huge]) == huge


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
