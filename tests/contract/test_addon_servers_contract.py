"""What every addon-servers implementation does, checked on each alike: the real one
(sandboxed PostgreSQL and Redis servers) and the fake the API tests use.

The real one runs here without network isolation (each server on a port of the host's
loopback), which is all this contract needs; isolation is e2e/test_addons.py's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.addons import recipes
from dockyard.addons.base import AddonServers, AddonSpec
from dockyard.addons.fake import FakeAddonServers
from dockyard.addons.local import LocalAddonServers
from dockyard.domain import addons as catalogue
from tests.conftest import server_data_dir


def _real_servers_available() -> None:
    try:
        recipes.postgresql_bin()
        recipes.redis_server()
        if shutil.which("bwrap") is None:
            raise RuntimeError("bubblewrap is not installed")
    except Exception as exc:
        if os.environ.get("DOCKYARD_REQUIRE_ADDONS") == "1":
            pytest.fail(f"addon tests are required (DOCKYARD_REQUIRE_ADDONS=1): {exc}")
        pytest.skip(str(exc))


@pytest.fixture(params=["fake", pytest.param("local", marks=pytest.mark.sandbox)])
def servers(request: pytest.FixtureRequest) -> Iterator[AddonServers]:
    if request.param == "fake":
        yield FakeAddonServers()
        return
    _real_servers_available()
    root = server_data_dir()
    root.chmod(0o711)  # traversable by the addons' uids, as a server's data dir is
    local = LocalAddonServers(root=root / "addons", isolation=None)
    local.start()
    try:
        yield local
    finally:
        local.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def _spec(servers: AddonServers, provider: str, number: int) -> AddonSpec:
    plan = catalogue.PROVIDERS[provider].plans[0]
    return AddonSpec(
        id=f"ad-contract{provider}{number}",
        app_name="contract-app",
        app_uid=200_000 + number,
        host_uid=1_900_000 + number,
        provider=provider,
        resource_id=f"contract_app_{number}",
        password=catalogue.new_password(),
        port=servers.free_port(provider),
        memory_mb=plan.memory_mb,
        max_connections=plan.max_connections,
    )


@pytest.mark.parametrize("provider", ["postgresql", "redis"])
def test_provision_back_up_restore_change_and_remove(
    servers: AddonServers, provider: str, tmp_path: Path
) -> None:
    spec = _spec(servers, provider, 1)
    servers.provision(spec)
    servers.ensure_running(spec)  # already running: nothing happens
    assert servers.wait_until_ready(10) == []
    assert servers.version(provider)[0].isdigit()
    backup = tmp_path / "backup"
    servers.backup(spec, backup)
    assert backup.stat().st_size > 0
    servers.restore(spec, backup)  # its own backup is always accepted
    bigger = catalogue.PROVIDERS[provider].plans[1]
    servers.restart(
        AddonSpec(
            **{
                **spec.__dict__,
                "memory_mb": bigger.memory_mb,
                "max_connections": bigger.max_connections,
            }
        )
    )
    servers.backup(spec, tmp_path / "again")  # still running, on its data
    servers.remove(spec)
    servers.remove(spec)  # removing what is gone is fine
