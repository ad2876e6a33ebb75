"""``FakeAddonServers``: addon servers in memory, for tests of what is built on them.

It keeps what a real server would hold (the addon's "data": a dict) so that a backup and
a restore carry rows across addons, and it fails where asked (``fail_next``)."""

from __future__ import annotations

import json
from pathlib import Path

from dockyard.addons.base import AddonError, AddonSpec
from dockyard.domain import addons as catalogue


class FakeAddonServers:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}  # addon id -> its "rows"
        self.specs: dict[str, AddonSpec] = {}
        self.fail_next = ""  # the next provision fails with this message
        self.started = False

    def start(self) -> None:
        self.started = True

    def shutdown(self) -> None:
        self.started = False

    def host(self, app_uid: int) -> str:
        return "127.0.0.1"

    def free_port(self, provider: str) -> int:
        return catalogue.PROVIDERS[provider].default_port

    def provision(self, spec: AddonSpec) -> None:
        if self.fail_next:
            message, self.fail_next = self.fail_next, ""
            raise AddonError(message)
        self.data[spec.id] = {}
        self.specs[spec.id] = spec

    def ensure_running(self, spec: AddonSpec) -> None:
        self.specs[spec.id] = spec
        self.data.setdefault(spec.id, {})

    def wait_until_ready(self, timeout: float) -> list[str]:
        return []

    def restart(self, spec: AddonSpec) -> None:
        self.specs[spec.id] = spec

    def remove(self, spec: AddonSpec) -> None:
        self.data.pop(spec.id, None)
        self.specs.pop(spec.id, None)

    def backup(self, spec: AddonSpec, target: Path) -> None:
        target.write_text(json.dumps(self.data[spec.id]))

    def restore(self, spec: AddonSpec, source: Path) -> None:
        self.data[spec.id] = json.loads(source.read_text())

    def version(self, provider: str) -> str:
        return "15.4" if provider == catalogue.POSTGRESQL else "7.0.15"
