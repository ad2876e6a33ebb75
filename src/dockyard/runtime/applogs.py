"""An app's logs as a user reads them: every process's file merged by time.

Layout under ``<logs_dir>/<app>/``: ``<release_id>/<type>-<index>.log`` per process (see
``logfile``) and ``dockyard.log`` for what the platform says about the app (crashes,
restarts). Lines are served as ``<timestamp> [web-1] <raw line>``, as Scalingo does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dockyard.runtime.logfile import LogLine, parse, read_tail, rotated

EVENTS_FILE = "dockyard.log"
EVENTS_NAME = "dockyard"


def process_log_path(app_dir: Path, release_id: str, process_name: str) -> Path:
    return app_dir / release_id / f"{process_name}.log"


def events_log_path(app_dir: Path) -> Path:
    return app_dir / EVENTS_FILE


def _log_files(app_dir: Path) -> list[tuple[str, Path]]:
    files = [(EVENTS_NAME, events_log_path(app_dir))]
    files += [(path.stem, path) for path in sorted(app_dir.glob("*/*.log"))]
    return files


def _format(name: str, line: LogLine) -> str:
    return f"{line.timestamp} [{name}] {line.text}"


def _merged(batches: list[tuple[str, list[LogLine]]]) -> list[str]:
    lines = [(line.timestamp, name, line) for name, batch in batches for line in batch]
    lines.sort(key=lambda item: item[0])  # stable: one file's own order is kept
    return [_format(name, line) for _, name, line in lines]


def recent_lines(app_dir: Path, lines: int) -> list[str]:
    """The app's last ``lines`` log lines, all processes and releases merged by time."""
    batches = [(name, read_tail(path, lines)) for name, path in _log_files(app_dir)]
    return _merged(batches)[-lines:] if lines > 0 else []


@dataclass
class _Position:
    inode: int
    offset: int


class Follower:
    """Lines written after it was created, as they come.

    Polls the files (cheap, and the same for every runtime, since they all write files);
    new releases' files are picked up, and a rotation loses nothing: the rest of the
    rotated file is read before the new one."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir
        # Taken now, not on first iteration: lines written in between must not be lost.
        self._positions: dict[Path, _Position] = {}
        for _, path in _log_files(app_dir):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                self._positions[path] = _Position(info.st_ino, info.st_size)

    def poll(self) -> list[str]:
        """The lines written since the last call."""
        files = _log_files(self.app_dir)
        return _merged([(name, _read_new(path, self._positions)) for name, path in files])

    def follow(self, *, stop: threading.Event, interval: float = 0.2) -> Iterator[str]:
        """Lines as they are written, until ``stop`` is set."""
        while not stop.is_set():
            yield from self.poll()
            stop.wait(interval)


def _read_new(path: Path, positions: dict[Path, _Position]) -> list[LogLine]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return []
    known = positions.get(path)
    lines: list[LogLine] = []
    if known is not None and known.inode != info.st_ino:
        old = rotated(path)
        with contextlib.suppress(FileNotFoundError):
            if old.stat().st_ino == known.inode:
                lines += _read_from(old, _Position(known.inode, known.offset))
        known = None
    position = known or _Position(info.st_ino, 0)
    lines += _read_from(path, position)
    positions[path] = position
    return lines


def _read_from(path: Path, position: _Position) -> list[LogLine]:
    """Complete lines after ``position.offset``; the offset moves past what was read."""
    try:
        with open(path, "rb") as file:
            file.seek(position.offset)
            data = file.read()
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    position.offset += len(complete)
    return [parse(record) for record in complete.decode("utf-8", "replace").splitlines()]
