"""Bounded, timestamped process log files.

Every runtime appends a process's output to ``ProcessSpec.log_path`` through
``LogFile``, one line per output line, as ``<timestamp> <raw line>``. The timestamp is
fixed-width UTC (``2024-05-01T12:00:00.123456Z``) so lines from several files merge by
plain string comparison, and the raw line is kept as the app wrote it: the process name
(``[web-1]``) is added only when lines are served, from the file's name.

A file is rotated to ``<name>.1`` once it passes ``max_bytes``; one old file is kept, so a
process never uses more than about twice that much disk, however chatty it is.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

MAX_LOG_BYTES = 1024 * 1024
# A line longer than this is cut: one unterminated megabyte of output must not become
# one line held in memory and written as a single record.
MAX_LINE_BYTES = 16 * 1024
_TIMESTAMP_WIDTH = len("2024-05-01T12:00:00.123456Z")


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    text: str


def parse(record: str) -> LogLine:
    """Split a stored record; anything not in our format is kept whole as its text."""
    if len(record) > _TIMESTAMP_WIDTH and record[_TIMESTAMP_WIDTH] == " ":
        return LogLine(record[:_TIMESTAMP_WIDTH], record[_TIMESTAMP_WIDTH + 1 :])
    return LogLine("", record)


class LogFile:
    """An append-only log file with one rotation. Safe to share between threads."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self._size = self._file.tell()

    def write(self, raw: bytes | str) -> None:
        """Append one output line (its trailing newline, if any, is dropped)."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "replace")
        raw = raw.rstrip(b"\r\n")[:MAX_LINE_BYTES]
        record = timestamp().encode() + b" " + raw.replace(b"\n", b" ") + b"\n"
        with self._lock:
            if self._file.closed:
                return
            if self._size and self._size + len(record) > self.max_bytes:
                self._rotate()
            self._file.write(record)
            # Flushed per line: readers (tail, follow) look at the file, not at us.
            self._file.flush()
            self._size += len(record)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, rotated(self.path))
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0


class LogFiles:
    """Shared ``LogFile`` objects by path, counted, so two processes writing the same
    path (a restart whose predecessor's output is still draining) rotate it together."""

    def __init__(self, *, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[LogFile, int]] = {}

    def acquire(self, path: Path) -> LogFile:
        with self._lock:
            log, users = self._open.get(path, (None, 0))
            if log is None:
                log = LogFile(path, max_bytes=self.max_bytes)
            self._open[path] = (log, users + 1)
            return log

    def release(self, log: LogFile) -> None:
        with self._lock:
            current, users = self._open.get(log.path, (None, 0))
            if current is not log:
                return
            if users > 1:
                self._open[log.path] = (log, users - 1)
                return
            del self._open[log.path]
        log.close()


def read_tail(path: Path, lines: int) -> list[LogLine]:
    """The last ``lines`` records of ``path`` (reaching into its rotated file if needed)."""
    if lines <= 0:
        return []
    records = _last_records(path, lines)
    if len(records) < lines:
        records = _last_records(rotated(path), lines - len(records)) + records
    return [parse(record) for record in records]


def _last_records(path: Path, lines: int) -> list[str]:
    # Read backwards in blocks: a rotated file is at most ~1 MiB, but we only need its end.
    try:
        with open(path, "rb") as file:
            end = file.seek(0, os.SEEK_END)
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= lines:
                step = min(64 * 1024, position)
                position -= step
                file.seek(position)
                data = file.read(step) + data
    except FileNotFoundError:
        return []
    records = data.decode("utf-8", "replace").splitlines()
    return records[-lines:]


class LogTail:
    """Reads a ``LogFile`` as it grows, each record once, across its rotations.

    The file it reads stays open: a rotation renames it, so what was written to it after
    the last read is still there to read, and so is the file rotated after it, if the
    writer rotated twice (in ``<name>.1``). Records are lost only if the writer rotates
    three times between two reads (3 MiB at the default size): read often while a process
    writes fast."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._partial = b""

    def new_records(self, *, final: bool = False) -> list[str]:
        """Complete records written since the last call; with ``final``, an unterminated
        last one too (the writer is done)."""
        data = self._read()
        *complete, self._partial = (self._partial + data).split(b"\n")
        if final and self._partial:
            complete, self._partial = [*complete, self._partial], b""
        return [line.decode("utf-8", "replace") for line in complete]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read(self) -> bytes:
        if self._file is None:
            self._file = _open_existing(self.path)
            if self._file is None:
                return b""
        chunks = [self._file.read()]
        current = _inode(self.path)
        reading = os.fstat(self._file.fileno()).st_ino
        if current is None or current == reading:
            return chunks[0]
        # Rotated since it was opened: the rest of it (its writer closed it before the
        # rename), the file rotated after it if there was one, then the new file.
        chunks.append(self._file.read())
        self._file.close()
        between = rotated(self.path)
        if _inode(between) not in (None, reading, current):
            with contextlib.suppress(FileNotFoundError), open(between, "rb") as file:
                chunks.append(file.read())
        self._file = _open_existing(self.path)
        if self._file is not None:
            chunks.append(self._file.read())
        return b"".join(chunks)


def _open_existing(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")  # held across reads, closed by LogTail
    except FileNotFoundError:
        return None


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
