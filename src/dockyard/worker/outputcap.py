"""How much of a deployment's output is stored: a cap, keeping the last lines.

Before the cap, a buildpack printing 100 MB had all of it stored (the database grew by
361 MB, the server's memory by 100 MB, and the API's p99 went to 207 ms). Now a
deployment stores its output as it comes until ``max_bytes`` less a tail's worth; past
that, lines are held back in a ring of the last ``tail_bytes`` (the end of a failing
build is where its error is) and stored at the next status change, after a line saying
how much was cut and why. The steps after a cut get ``STEP_BYTES`` more each, live and
tail alike, so dockyard's own progress lines and a failing boot's last lines still show.
Memory per deployment is bounded by the ring, whatever the build prints.
"""

from __future__ import annotations

from collections import deque

STEP_BYTES = 64 * 1024
MAX_TAIL_BYTES = 1024 * 1024
MARKER_BYTES = 256  # room kept in the tail for the line saying what was cut


def _size(line: str) -> int:
    return len(line.encode("utf-8", "surrogatepass")) + 1  # its line ending, as rendered


class OutputCap:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.stored = 0  # bytes of lines let through (live, and tails taken)
        self._tail_budget = min(MAX_TAIL_BYTES, max_bytes // 4)
        self._live_limit = max_bytes - self._tail_budget
        self._cutting = False
        self._tail: deque[tuple[str, int]] = deque()
        self._tail_bytes = 0
        self._cut_lines = 0
        self._cut_bytes = 0

    def admit(self, line: str) -> bool:
        """Whether to store ``line`` now; if not, it is held back (or cut)."""
        size = _size(line)
        if not self._cutting and self.stored + size <= self._live_limit:
            self.stored += size
            return True
        self._cutting = True
        self._tail.append((line, size))
        self._tail_bytes += size
        while self._tail_bytes > self._tail_budget - MARKER_BYTES and self._tail:
            _, dropped = self._tail.popleft()
            self._tail_bytes -= dropped
            self._cut_lines += 1
            self._cut_bytes += dropped
        return False

    def take_tail(self) -> list[str]:
        """At a status change (or the end): the lines held back, after a line saying what
        was cut; storing continues with a step's allowance."""
        if not self._cutting:
            return []
        lines = []
        if self._cut_lines:
            lines.append(
                f"-----> {self._cut_lines} lines of output ({_human(self._cut_bytes)}) were "
                f"cut here: a deployment stores at most {_human(self.max_bytes)} of output. "
                "The last lines follow."
            )
        lines += [line for line, _ in self._tail]
        self.stored += sum(_size(line) for line in lines)
        self._tail.clear()
        self._tail_bytes = self._cut_lines = self._cut_bytes = 0
        self._cutting = False
        self._live_limit = self.stored + STEP_BYTES
        self._tail_budget = STEP_BYTES
        return lines


def _human(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / 1024 / 1024:.1f} MiB"
    return f"{size / 1024:.0f} KiB"
