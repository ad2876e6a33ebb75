"""What happens to an app's running processes and files around its lifetime."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dockyard.bootstrap import Platform
from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment, User
from dockyard.domain.status import SUCCESS
from dockyard.errors import Conflict
from dockyard.pipeline import cache, package
from dockyard.services import apps as apps_service
from dockyard.services import events


def supervisor_of(platform: Platform) -> Any:
    return platform.extras.get("supervisor")


def cache_dir(platform: Platform, app_id: str) -> Path:
    return platform.settings.data_dir / "caches" / app_id


def slug_key(deployment_id: str) -> str:
    return f"slugs/{deployment_id}{package.SLUG_SUFFIX}"


def destroy_app(*, platform: Platform, owner: User, name: str) -> None:
    """Stop the app's processes, then delete it and everything it stored."""
    app = apps_service.find_app(db=platform.db, owner=owner, name=name)
    supervisor = supervisor_of(platform)
    if supervisor is not None:
        supervisor.remove_app(app.name)
    with transaction(platform.db) as session:
        deployment_ids = list(
            session.scalars(select(Deployment.id).where(Deployment.app_id == app.id))
        )
    apps_service.delete_app(db=platform.db, owner=owner, name=name)
    # Whoever keeps something of the app in memory (its listing key) forgets it.
    platform.bus.publish(events.channel_for(app.id), {"type": events.APP_DELETED})
    for deployment_id in deployment_ids:
        platform.blobs.delete(slug_key(deployment_id))
        shutil.rmtree(platform.settings.releases_dir / deployment_id, ignore_errors=True)
        shutil.rmtree(platform.settings.builds_dir / deployment_id, ignore_errors=True)
    cache.discard(cache_dir(platform, app.id))
    shutil.rmtree(platform.settings.data_dir / "logs" / app.name, ignore_errors=True)


def release_environment(platform: Platform, app_name: str) -> dict[str, str]:
    """What the current release runs with: its buildpack defaults under the app's variables.

    Variables changed since the deployment apply here too, so a restart picks them up."""
    with transaction(platform.db) as session:
        app = session.scalar(select(App).where(App.name == app_name))
        if app is None:
            return {}
        defaults = session.scalar(
            select(Deployment.config_vars)
            .where(Deployment.app_id == app.id, Deployment.status == SUCCESS)
            .order_by(Deployment.created_at.desc())
            .limit(1)
        )
        return {**(defaults or {}), **apps_service.app_environment(session, app_id=app.id)}


def _running_app(platform: Platform, owner: User, name: str) -> tuple[Any, Any]:
    app = apps_service.find_app(db=platform.db, owner=owner, name=name)
    supervisor = supervisor_of(platform)
    if supervisor is None:
        raise Conflict("This server runs no apps (no runtime is configured).")
    return app, supervisor


def stop_app(*, platform: Platform, owner: User, name: str) -> Any:
    app, supervisor = _running_app(platform, owner, name)
    supervisor.stop_app(app.name)
    return app


def start_app(*, platform: Platform, owner: User, name: str) -> Any:
    app, supervisor = _running_app(platform, owner, name)
    supervisor.start_app(app.name)
    return app


def restart_app(*, platform: Platform, owner: User, name: str) -> Any:
    app, supervisor = _running_app(platform, owner, name)
    supervisor.restart_app(app.name)
    return app


def app_status(platform: Platform, app_name: str) -> str | None:
    supervisor = supervisor_of(platform)
    return None if supervisor is None else str(supervisor.status(app_name))


def recent_logs(*, platform: Platform, owner: User, name: str, lines: int) -> list[str]:
    app, supervisor = _running_app(platform, owner, name)
    return list(supervisor.app_logs(app.name, lines=lines))
