"""Which app a command is about: ``--app``, else the ``.dockyard`` file of this directory tree.

``dockyard create`` writes ``.dockyard`` in the current directory (as ``git remote add``
does for other clients), so later commands run anywhere below it need no ``--app``. The
file is JSON (``{"app": "name"}``); a hand-written ``app = name`` line is read too.
"""

from __future__ import annotations

import json
from pathlib import Path

from dockyard.cli.client.errors import UsageError

APP_FILE = ".dockyard"


def find_app_file(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / APP_FILE
        if candidate.is_file():
            return candidate
    return None


def read_app_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    name = _from_json(text) if text.lstrip().startswith("{") else _from_lines(text)
    if not name:
        raise UsageError(
            f"{path} does not name an app.",
            'Write {"app": "NAME"} in it, or pass --app NAME.',
        )
    return name


def _from_json(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    name = data.get("app") if isinstance(data, dict) else None
    return name.strip() if isinstance(name, str) else ""


def _from_lines(text: str) -> str:
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "app":
            return value.strip().strip("\"'")
    return ""


def write_app_file(directory: Path, name: str) -> Path:
    path = directory / APP_FILE
    path.write_text(json.dumps({"app": name}) + "\n", encoding="utf-8")
    return path


def resolve_app(option: str | None, cwd: Path | None = None) -> str:
    if option:
        return option
    here = Path.cwd() if cwd is None else cwd
    found = find_app_file(here)
    if found is None:
        raise UsageError(
            "No app selected.",
            f"Pass --app NAME, or run the command in a directory where `dockyard create NAME` "
            f"wrote a {APP_FILE} file (searched {here} and its parents).",
        )
    return read_app_file(found)
