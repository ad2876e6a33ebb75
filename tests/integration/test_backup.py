"""``dockyard admin backup`` / ``restore`` of dockyard's own database: restored into a
fresh data dir (SQLite) or a fresh database (PostgreSQL), the users, their tokens, apps,
variables and deployments are the same."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from tests.conftest import POSTGRES_ADMIN_URL, make_settings

from dockyard.bootstrap import build_platform
from dockyard.platform import Platform
from dockyard.services import apps as apps_service
from dockyard.services import deployments as deployments_service
from dockyard.services.auth import create_user, user_for_api_token


def dockyard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockyard.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def what_it_holds(platform: Platform, token: str) -> dict[str, object]:
    user = user_for_api_token(db=platform.db, secret=token)
    apps = apps_service.list_apps(db=platform.db, owner=user)
    return {
        "user": user.username,
        "apps": sorted(app.name for app in apps),
        "variables": apps_service.list_variables(db=platform.db, owner=user, app_name="kept-app"),
        "deployments": [
            (d.id, d.status, d.git_ref)
            for d in deployments_service.list_deployments(
                db=platform.db, owner=user, app_name="kept-app", page=1, per_page=50
            ).items
        ],
    }


@pytest.fixture
def restore_target(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as ``database_url``."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'dockyard.db'}"
        return
    name = f"dockyard_restore_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_backup_restored_into_an_empty_database_holds_the_same_platform(
    tmp_path: Path, database_url: str, restore_target: str
) -> None:
    settings = make_settings(tmp_path / "live", database_url)
    platform = build_platform(settings)
    issued = create_user(db=platform.db, username="rita", email="rita@example.com")
    app = apps_service.create_app(db=platform.db, owner=issued.user, name="kept-app")
    apps_service.set_variables(
        db=platform.db, owner=issued.user, app_name=app.name, values=[("COLOR", "teal")]
    )
    for ref in ("v1", "v2"):
        deployments_service.create_deployment(
            db=platform.db,
            bus=platform.bus,
            owner=issued.user,
            app_name=app.name,
            request=deployments_service.DeploymentRequest(
                source_url=f"https://code.example.com/{ref}.tar.gz", git_ref=ref
            ),
            public_url=settings.public_url,
        )
    before = what_it_holds(platform, issued.secret)

    live_env = {"DOCKYARD_DATA_DIR": str(settings.data_dir), "DOCKYARD_DATABASE_URL": database_url}
    backup = tmp_path / "backups" / "dockyard.backup"
    made = dockyard("admin", "backup", str(backup), env=live_env)  # the live database in use
    assert made.returncode == 0, made.stderr
    assert backup.stat().st_mode & 0o077 == 0  # it holds token digests and variables

    fresh_dir = tmp_path / "restored"
    fresh_env = {"DOCKYARD_DATA_DIR": str(fresh_dir), "DOCKYARD_DATABASE_URL": restore_target}
    restored = dockyard("admin", "restore", str(backup), env=fresh_env)
    assert restored.returncode == 0, restored.stderr
    again = dockyard("admin", "restore", str(backup), env=fresh_env)
    assert again.returncode == 1
    assert "empty" in again.stderr  # never over a live database

    asyncio.run(platform.bus.close())  # its NOTIFY connection
    platform.engine.dispose()
    restored_platform = build_platform(make_settings(fresh_dir, restore_target))
    assert what_it_holds(restored_platform, issued.secret) == before
    restored_platform.engine.dispose()


def test_a_restore_refuses_a_file_that_is_no_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("not a backup")
    env = {"DOCKYARD_DATA_DIR": str(tmp_path / "data")}
    refused = dockyard("admin", "restore", str(junk), env=env)
    assert refused.returncode == 1
    assert "is not a backup of a SQLite database" in refused.stderr
