"""A worker's presence: it says it is alive every third of its lease and, where its
runtime lets it (swarm: the apps run on without the worker that deployed them), adopts the
apps of workers gone for good (services/presence.py)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from dockyard.errors import DockyardError
from dockyard.platform import Platform
from dockyard.services import presence

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self, platform: Platform, *, adopt: Callable[[str, Callable[[], bool]], bool] | None
    ) -> None:
        self.platform = platform
        # adopt(app, claim): takes the app over if ``claim`` makes this worker its owner.
        # None: this runtime's apps die with their worker.
        self.adopt = adopt
        settings = platform.settings
        self.name = settings.worker_name
        self.runtime = settings.runtime
        self.lease_seconds = float(settings.lease_seconds)
        self.beat_seconds = self.lease_seconds / 3
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def check_name(self) -> None:
        """Refuse to run under a name another live worker runs under: both would answer
        the api's calls for its apps, and each would take the other's for its own."""
        if presence.name_in_use(
            db=self.platform.db, name=self.name, beat_seconds=self.beat_seconds
        ):
            raise DockyardError(
                f"Another dockyard worker runs as {self.name!r}: give each worker a "
                "DOCKYARD_WORKER_NAME of its own (the default is the host name)."
            )
        self.beat()

    def beat(self) -> None:
        presence.beat(
            db=self.platform.db, name=self.name, runtime=self.runtime, instance=self.instance
        )

    def leave(self) -> None:
        presence.leave(db=self.platform.db, name=self.name, instance=self.instance)

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("saying this worker is alive failed")
            if stop.wait(self.beat_seconds):
                return

    def tick(self) -> None:
        db = self.platform.db
        self.beat()
        if self.adopt is None:
            return
        gone = presence.orphans(db=db, me=self.name, lease_seconds=self.lease_seconds)
        for app, owner in sorted(gone.items()):

            def claim(app: str = app, owner: str = owner) -> bool:
                won = presence.adopt(db=db, bus=self.platform.bus, app=app, gone=owner, me=self.name)
                if won:
                    log.warning("adopted app %s: its worker %s is gone", app, owner)
                return won

            self.adopt(app, claim)
