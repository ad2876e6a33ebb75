"""Event bus over PostgreSQL LISTEN/NOTIFY, so a stream served by one process sees a
deployment run by another. Every event, including this process's own, arrives through
the LISTEN connection: one path, one order."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import psycopg

from dockyard.backends.eventbus.base import Event
from dockyard.backends.eventbus.memory import FanoutBus
from dockyard.db.engine import normalise_url

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "dockyard_events"


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
                    self._listening.set()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            self._dispatch(notify.payload)
            except psycopg.Error:
                log.exception("the event bus lost its PostgreSQL connection; reconnecting")
                self._stop.wait(1)

    def _dispatch(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        self.fanout.deliver_threadsafe(message["channel"], message["event"])

    def publish(self, channel: str, event: Event) -> None:
        payload = json.dumps({"channel": channel, "event": event})
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
