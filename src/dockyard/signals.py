"""A signal: a few callables run, in order, each time something happened.

It lets the API say "a deployment was queued" without knowing who listens (the worker pool
of this process, or nobody in a control-plane-only process).
"""

from __future__ import annotations

from collections.abc import Callable


class Signal:
    def __init__(self) -> None:
        self._receivers: list[Callable[[], None]] = []

    def connect(self, receiver: Callable[[], None]) -> None:
        self._receivers.append(receiver)

    def send(self) -> None:
        for receiver in self._receivers:
            receiver()
