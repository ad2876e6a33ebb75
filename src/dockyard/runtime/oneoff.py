"""One-off commands (``scalingo run``): an instance of the app's current release that runs
one command, then goes away.

An attached one-off runs on a fresh pseudo-terminal that a client reads and writes through
the attach server (``dockyard.attach``); if no client attaches within ``attach_timeout``,
or the client goes away, it is stopped. A detached one-off writes to the app's logs as
``one-off-<n>`` and runs to its end (or until ``stop``). Either way it runs in the same
sandbox, with the same limits, as the app's instances: the runtime starts it from a
``ProcessSpec`` the supervisor makes (``Supervisor.one_off_spec``).

One-offs live in this process's memory only: the sandbox dies with the server that
started it, so there is nothing to re-attach to after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dockyard.errors import NotFound
from dockyard.runtime.base import Instance, ProcessHandle, ProcessSpec, Runtime

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
ATTACH_TIMEOUT_SECONDS = 60.0
PREFIX = "one-off-"


class SpecMaker(Protocol):
    """What makes a one-off's spec (``Supervisor.one_off_spec``)."""

    def __call__(
        self,
        app: str,
        *,
        index: int,
        command: str,
        env: Mapping[str, str],
        size: str,
        terminal: bool,
    ) -> ProcessSpec: ...


@dataclass(eq=False)
class OneOff:
    id: str
    app: str
    index: int
    command: str
    detached: bool
    handle: ProcessHandle
    started_at: float  # Unix time
    operation_id: str | None = None
    exit_code: int | None = None
    attached: bool = False  # a client took the terminal (or it was given up)
    ended: threading.Event = field(default_factory=threading.Event)
    _attach_seen: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def label(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def terminal(self) -> int | None:
        return self.handle.terminal

    def instance(self) -> Instance:
        """As ``ps`` lists it."""
        return Instance(
            name=self.label,
            process_type="one-off",
            index=self.index,
            command=self.command,
            size=self.handle.spec.size,
            state="stopped" if self.ended.is_set() else "running",
            release_id=self.handle.spec.release_id,
            started_at=self.started_at,
            endpoint=None,
        )


class OneOffs:
    """The one-offs running on this server, by id; each is watched by a thread of its own
    until it exits, then its sandbox is cleaned up and its exit code kept for a while."""

    def __init__(
        self,
        runtime: Runtime,
        spec_for: SpecMaker,
        *,
        stop_grace: float,
        attach_timeout: float = ATTACH_TIMEOUT_SECONDS,
        keep_ended: int = 100,
    ) -> None:
        self.runtime = runtime
        self.spec_for = spec_for
        self.stop_grace = stop_grace
        self.attach_timeout = attach_timeout
        self.keep_ended = keep_ended
        self._lock = threading.Lock()
        self._by_id: dict[str, OneOff] = {}
        self._counters: dict[str, int] = {}

    def start(
        self,
        app: str,
        *,
        command: str,
        env: Mapping[str, str],
        size: str,
        detached: bool,
        operation_id: str | None = None,
    ) -> OneOff:
        """Start ``command`` as the app's next one-off (``one-off-<n>``); raises
        ``Conflict`` for an app never deployed, ``BootError`` if it cannot start."""
        with self._lock:
            index = self._counters.get(app, 0) + 1
            self._counters[app] = index
        spec = self.spec_for(
            app, index=index, command=command, env=env, size=size, terminal=not detached
        )
        handle = self.runtime.start(spec)
        one_off = OneOff(
            id=uuid.uuid4().hex,
            app=app,
            index=index,
            command=command,
            detached=detached,
            handle=handle,
            started_at=time.time(),
            operation_id=operation_id,
        )
        with self._lock:
            self._by_id[one_off.id] = one_off
        threading.Thread(
            target=self._watch, args=(one_off,), name=f"one-off {app} {index}", daemon=True
        ).start()
        return one_off

    def get(self, one_off_id: str) -> OneOff:
        with self._lock:
            one_off = self._by_id.get(one_off_id)
        if one_off is None:
            raise NotFound("one-off")
        return one_off

    def by_operation(self, operation_id: str) -> OneOff | None:
        with self._lock:
            return next((o for o in self._by_id.values() if o.operation_id == operation_id), None)

    def find(self, app: str, label: str) -> OneOff | None:
        with self._lock:
            return next(
                (
                    o
                    for o in self._by_id.values()
                    if o.app == app and o.label == label and not o.ended.is_set()
                ),
                None,
            )

    def observe(self, app: str) -> list[Instance]:
        """The app's running one-offs, as ``ps`` lists them."""
        with self._lock:
            running = [o for o in self._by_id.values() if o.app == app and not o.ended.is_set()]
        return [o.instance() for o in sorted(running, key=lambda o: o.index)]

    def stop(self, one_off: OneOff) -> None:
        """SIGTERM, grace, SIGKILL; the watcher then records how it ended."""
        self.runtime.stop(one_off.handle, grace=self.stop_grace)

    def stop_soon(self, one_off: OneOff) -> None:
        """``stop`` in a thread of its own: the caller need not wait for the grace period."""
        threading.Thread(
            target=self.stop, args=(one_off,), name=f"stop {one_off.label}", daemon=True
        ).start()

    def stop_app(self, app: str) -> None:
        with self._lock:
            running = [o for o in self._by_id.values() if o.app == app and not o.ended.is_set()]
        for one_off in running:
            self.stop(one_off)

    def shutdown(self) -> None:
        with self._lock:
            running = [o for o in self._by_id.values() if not o.ended.is_set()]
        for one_off in running:
            self.runtime.stop(one_off.handle, grace=0)

    def attach(self, one_off: OneOff) -> int | None:
        """Hand the terminal's master side to a client, once: None if it was already
        taken, given up (nobody came in time) or there is none (a detached one-off). The
        caller closes it with ``release_terminal`` when done."""
        with self._lock:
            if one_off.attached or one_off.handle.terminal is None:
                return None
            one_off.attached = True
        one_off._attach_seen.set()
        return one_off.handle.terminal

    def release_terminal(self, one_off: OneOff) -> None:
        fd = one_off.handle.terminal
        one_off.handle.terminal = None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _watch(self, one_off: OneOff) -> None:
        attach_deadline = time.monotonic() + self.attach_timeout
        try:
            while (status := self.runtime.poll(one_off.handle)) is None:
                if (
                    not one_off.detached
                    and not one_off._attach_seen.is_set()
                    and (time.monotonic() > attach_deadline)
                ):
                    log.info("one-off %s of %s: nobody attached", one_off.label, one_off.app)
                    self.runtime.stop(one_off.handle, grace=0)
                time.sleep(POLL_SECONDS)
            one_off.exit_code = status
            self.runtime.stop(one_off.handle, grace=0)  # releases the sandbox's cgroup
        except Exception:
            log.exception("one-off %s of %s could not be watched", one_off.label, one_off.app)
            with contextlib.suppress(Exception):
                self.runtime.stop(one_off.handle, grace=0)
        finally:
            if one_off.exit_code is None:
                one_off.exit_code = -1
            one_off.ended.set()
        if not one_off.detached:
            # What it wrote before exiting waits in the terminal for the client, which
            # attaches only once it has seen the operation done: keep it until then.
            one_off._attach_seen.wait(max(0.0, attach_deadline - time.monotonic()))
            with self._lock:
                unclaimed = not one_off.attached
                one_off.attached = True
            if unclaimed:
                self.release_terminal(one_off)
        self._forget_old()

    def _forget_old(self) -> None:
        # Ended one-offs are kept so that ``/wait`` can still read the exit code; only the
        # last ``keep_ended`` of them.
        with self._lock:
            ended = [o for o in self._by_id.values() if o.ended.is_set()]
            for one_off in sorted(ended, key=lambda o: o.started_at)[: -self.keep_ended]:
                del self._by_id[one_off.id]
