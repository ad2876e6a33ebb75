"""The client's configuration file: API URL, API token and the cached JWT.

Where it lives: ``$DOCKYARD_CONFIG``, else ``$XDG_CONFIG_HOME/dockyard/config.json``, else
``~/.config/dockyard/config.json``. It holds a secret, so it is written 0600 (in a 0700
directory) through a temporary file and a rename: a reader never sees half a file, and
the token is never readable by others, not even for a moment.
``DOCKYARD_API_URL`` and ``DOCKYARD_API_TOKEN`` override what the file says (CI use).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.cli.client.errors import ClientError, NotLoggedIn

DEFAULT_API_URL = "http://127.0.0.1:8088"


@dataclass(frozen=True)
class Credentials:
    api_url: str
    api_token: str


def config_path(env: Mapping[str, str]) -> Path:
    explicit = env.get("DOCKYARD_CONFIG", "")
    if explicit:
        return Path(explicit).expanduser()
    base = env.get("XDG_CONFIG_HOME", "") or str(
        Path(env.get("HOME", "") or Path.home()) / ".config"
    )
    return Path(base).expanduser() / "dockyard" / "config.json"


def load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClientError(f"Cannot read the configuration file {path}: {exc.strerror}.") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ClientError(
            f"The configuration file {path} is not a JSON object.",
            "Run `dockyard login` to write it again.",
        )
    return data


def save(path: Path, data: Mapping[str, Any]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    except OSError as exc:
        raise ClientError(f"Cannot write the configuration file {path}: {exc.strerror}.") from None
    try:
        # mkstemp already creates 0600; fchmod states it, whatever the umask did.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ClientError(f"Cannot write the configuration file {path}: {exc.strerror}.") from None


def credentials(env: Mapping[str, str], data: Mapping[str, Any]) -> Credentials:
    """The environment first, then the file; :class:`NotLoggedIn` when either part is missing."""
    url = env.get("DOCKYARD_API_URL", "") or _text(data.get("api_url"))
    token = env.get("DOCKYARD_API_TOKEN", "") or _text(data.get("api_token"))
    if not url or not token:
        raise NotLoggedIn()
    return Credentials(api_url=normalize_url(url), api_token=token)


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"The API URL {url!r} must start with http:// or https://.")
    return url


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
