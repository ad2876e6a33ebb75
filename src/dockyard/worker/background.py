"""One step of a deployment run in a thread of its own, beside the steps that follow."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """``work()`` started now in a daemon thread; ``wait`` returns its result, or raises
    what it raised. ``join`` only waits (for a caller already failing for another
    reason, that must not leave the work running while it cleans up)."""

    def __init__(self, work: Callable[[], T], *, name: str) -> None:
        self._work = work
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._work()
        except BaseException as exc:
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def wait(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # set when no error was raised
