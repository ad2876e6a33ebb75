"""Event bus over PostgreSQL LISTEN/NOTIFY, so a stream served by one process sees a
deployment run by another. Every event, including this process's own, arrives through
the LISTEN connection: one path, one order."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from dockyard.backends.eventbus.base import Event
from dockyard.backends.eventbus.memory import FanoutBus
from dockyard.db.engine import normalise_url

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "dockyard_events"
# PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more: batches are cut below that.
MAX_PAYLOAD_BYTES = 7_000
# A message split in parts is cut in pieces that stay under the limit even when every
# character needs escaping again inside the part's JSON string.
PART_CHARS = 3_400
MAX_PARTIAL_MESSAGES = 64
MAX_PARTS = 64  # far above what a batch of capped log lines can need


def _conninfo(url: str) -> str:
    # psycopg wants a libpq URL, not SQLAlchemy's driver-qualified one.
    return normalise_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


class PostgresEventBus(FanoutBus):
    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.conninfo = _conninfo(database_url)
        self._publisher: psycopg.Connection | None = None
        self._publish_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._parts: dict[str, list[str]] = {}  # message id -> parts so far (listener thread)

    async def start(self) -> None:
        self.fanout.loop = asyncio.get_running_loop()
        self._stop.clear()
        self._listener = threading.Thread(
            target=self._listen, name="dockyard-pg-listen", daemon=True
        )
        self._listener.start()
        await asyncio.to_thread(self._listening.wait, 10)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Whatever was notified while we were not listening is lost: whoever
                    # keeps state from events must start over.
                    self._parts.clear()
                    self._observed_gap()
                    self._listening.set()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            self._dispatch(notify.payload)
            except psycopg.Error:
                log.exception("the event bus lost its PostgreSQL connection; reconnecting")
                self._stop.wait(1)
            except Exception:
                # Never let one bad notification end the listening for good.
                log.exception("the event bus failed on a notification; listening again")
                self._stop.wait(1)

    def _dispatch(self, payload: str) -> None:
        message = _parse(payload)
        if message is not None and "part" in message:
            message = self._reassemble(message)
        if message is None:
            return
        channel, events = message["channel"], message["events"]
        if not isinstance(channel, str) or not isinstance(events, list):
            log.warning("the event bus ignored a malformed notification")
            return
        events = [event for event in events if isinstance(event, dict)]
        self._observed(channel, events)
        self.fanout.deliver_threadsafe(channel, events)

    def _reassemble(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """One part of a notification too big for one NOTIFY; the whole once all arrived.
        Parts of one message come in order, from one publisher's connection."""
        try:
            message_id, index, count = str(message["part"][0]), *map(int, message["part"][1:])
            data = message["data"]
        except (KeyError, TypeError, ValueError, IndexError):
            log.warning("the event bus ignored a malformed notification part")
            return None
        if not 0 < count <= MAX_PARTS or not isinstance(data, str):
            return None
        parts = self._parts.setdefault(message_id, [])
        if index == len(parts) - 1 and parts[-1] == data:
            return None  # sent again by a publisher retrying after a lost reply
        if index != len(parts):
            self._parts.pop(message_id, None)  # a part went missing (publisher died)
            return None
        parts.append(data)
        if len(parts) < count:
            while len(self._parts) > MAX_PARTIAL_MESSAGES:
                self._parts.pop(next(iter(self._parts)))
            return None
        del self._parts[message_id]
        return _parse("".join(parts))

    def publish_many(self, channel: str, events: Sequence[Event]) -> None:
        # Observed here at once (and again when our own notification comes back), even if
        # notifying fails: what this process changed is committed, and must be seen before
        # it answers the request that changed it.
        self._observed(channel, events)
        for payload in _payloads(channel, events):
            self._notify(payload)

    def _notify(self, payload: str) -> None:
        with self._publish_lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher.closed:
                        self._publisher = psycopg.connect(self.conninfo, autocommit=True)
                    self._publisher.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))
                    return
                except psycopg.OperationalError:
                    self._publisher = None
                    if attempt == 2:
                        raise

    async def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)
        with self._publish_lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None
        self.fanout.loop = None


def _parse(payload: str) -> dict[str, Any] | None:
    try:
        message = json.loads(payload)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not (
        "part" in message or ("channel" in message and "events" in message)
    ):
        log.warning("the event bus ignored a malformed notification")
        return None
    return message


def _payloads(channel: str, events: Sequence[Event]) -> Iterator[str]:
    """``events`` as few NOTIFY payloads as fit, in order. A batch is cut before the
    limit; a single event too big for one payload (a long line of escaped characters)
    is sent in parts that the listener puts back together."""
    head = json.dumps(channel)

    def message(encoded_events: list[str]) -> str:
        return f'{{"channel": {head}, "events": [{", ".join(encoded_events)}]}}'

    batch: list[str] = []
    size = 0
    for event in events:
        encoded = json.dumps(event)  # ASCII only: its length is its size in bytes
        if batch and size + len(encoded) > MAX_PAYLOAD_BYTES:
            yield message(batch)
            batch, size = [], 0
        batch.append(encoded)
        size += len(encoded) + 2
        if size > MAX_PAYLOAD_BYTES:
            yield from _parts(message(batch))
            batch, size = [], 0
    if batch:
        yield message(batch)


def _parts(whole: str) -> Iterator[str]:
    message_id = uuid.uuid4().hex
    pieces = [whole[i : i + PART_CHARS] for i in range(0, len(whole), PART_CHARS)]
    for index, piece in enumerate(pieces):
        yield json.dumps({"part": [message_id, index, len(pieces)], "data": piece})
