"""What addon servers are started with: limits from the plan, secrets never on a command line."""

from __future__ import annotations

import pytest

from dockyard.addons import recipes
from dockyard.addons.base import AddonError, AddonSpec

SPEC = AddonSpec(
    id="ad-1", app_name="shop-app", app_uid=200001, host_uid=1000001, provider="postgresql",
    resource_id="shop_app_1", password="s3cretpassw0rd", port=5432, memory_mb=512,
    max_connections=20,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    monkeypatch.setattr(recipes, "postgresql_bin", lambda: Path("/usr/lib/postgresql/15/bin"))
    monkeypatch.setattr(recipes, "redis_server", lambda: Path("/usr/bin/redis-server"))


def test_postgresql_listens_on_loopback_with_the_plan_s_limits_and_no_socket() -> None:
    argv = recipes.postgresql_run(SPEC)
    settings = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["unix_socket_directories"] == ""
    assert settings["max_connections"] == "23"
    assert settings["shared_buffers"] == "128MB"
    assert settings["password_encryption"] == "scram-sha-256"


def test_secrets_are_never_in_an_argv() -> None:
    argvs = [
        recipes.postgresql_run(SPEC),
        recipes.postgresql_dump(SPEC),
        recipes.postgresql_load(SPEC),
        recipes.redis_run(),
        recipes.redis_dump(SPEC, "/backup/dump.rdb"),
        *[step.argv for step in recipes.postgresql_init(SPEC)],
    ]
    assert all(SPEC.password not in " ".join(argv) for argv in argvs)
    # The password reaches PostgreSQL on the single-user session's standard input.
    init = recipes.postgresql_init(SPEC)
    assert SPEC.password.encode() in init[1].stdin
    assert b"CREATE DATABASE shop_app_1 OWNER shop_app_1" in init[1].stdin
    assert b"SUPERUSER" not in init[1].stdin


def test_only_password_authentication_over_tcp() -> None:
    rules = [line.split() for line in recipes.PG_HBA.splitlines() if not line.startswith("#")]
    assert rules and all(rule[0] == "host" and rule[-1] == "scram-sha-256" for rule in rules)


def test_redis_config_has_the_password_and_the_plan_s_limits() -> None:
    config = recipes.redis_config(SPEC).splitlines()
    assert f"requirepass {SPEC.password}" in config
    assert "bind 127.0.0.1" in config and "maxmemory 512mb" in config
    assert "appendonly yes" in config and "maxclients 20" in config


def test_a_snapshot_becomes_the_base_of_a_new_append_only_file_set() -> None:
    files = recipes.redis_aof_from_snapshot(b"REDIS0010...")
    assert files[recipes.AOF_BASE] == b"REDIS0010..."
    assert files["appendonly.aof.manifest"] == f"file {recipes.AOF_BASE} seq 1 type b\n".encode()
    with pytest.raises(AddonError, match="not a Redis snapshot"):
        recipes.redis_aof_from_snapshot(b"-- PostgreSQL database dump")
