"""The ``dockyard`` command: server side (serve, worker, admin) and client side."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from dockyard.errors import DockyardError
from dockyard.settings import Settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="dockyard: deploy apps from archives."
)
admin = typer.Typer(
    no_args_is_help=True, help="Administer a dockyard server (runs on the server machine)."
)
app.add_typer(admin, name="admin")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str = typer.Option(None, help="API listen address (DOCKYARD_HOST)."),
    port: int = typer.Option(None, help="API port (DOCKYARD_PORT)."),
    data_dir: str = typer.Option(None, help="Data directory (DOCKYARD_DATA_DIR)."),
    router_port: int = typer.Option(None, help="Router port (DOCKYARD_ROUTER_PORT)."),
) -> None:
    """Run the API, the workers, the runtime supervisor and the router."""
    import os

    overrides = {
        "DOCKYARD_HOST": host,
        "DOCKYARD_PORT": port,
        "DOCKYARD_DATA_DIR": data_dir,
        "DOCKYARD_ROUTER_PORT": router_port,
    }
    env = dict(os.environ)
    env.update({key: str(value) for key, value in overrides.items() if value is not None})
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from dockyard.allocator import keep_freed_buffers
    from dockyard.server import serve as run_server

    keep_freed_buffers()  # before the server allocates anything big (see allocator.py)
    try:
        run_server(Settings.from_mapping(env))
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _run_process(command: str) -> None:
    """Run one of the separate processes with the settings from the environment."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from dockyard import processes

    run = {"api": processes.run_api, "worker": processes.run_worker, "router": processes.run_router}
    try:
        run[command](_settings())
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@app.command()
def api() -> None:
    """Run the API alone (separate processes on PostgreSQL; README, "Running on several machines")."""
    _run_process("api")


@app.command()
def worker() -> None:
    """Run a worker alone: builds deployments and runs the apps it deployed (PostgreSQL)."""
    _run_process("worker")


@app.command()
def router() -> None:
    """Run a router alone: serves the apps from the route table in PostgreSQL."""
    _run_process("router")


@admin.command("backup")
def backup(
    path: str = typer.Argument(..., help="File to write the backup to."),
) -> None:
    """Back up dockyard's own database (SQLite: online backup; PostgreSQL: pg_dump)."""
    from dockyard.backup import backup_database

    settings = _settings()
    try:
        kind = backup_database(settings.database_url, Path(path))
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Backed up the {kind} database to {path}.")


@admin.command("restore")
def restore(
    path: str = typer.Argument(..., help="A file written by 'dockyard admin backup'."),
) -> None:
    """Restore dockyard's database from a backup into an empty data dir or database."""
    from dockyard.backup import restore_database

    settings = _settings()
    try:
        kind = restore_database(settings.database_url, Path(path))
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Restored the {kind} database from {path}.")


@admin.command("create-user")
def create_user(
    username: str = typer.Option(..., help="Login name."),
    email: str = typer.Option(..., help="Email address."),
    fullname: str = typer.Option("", help="Full name."),
) -> None:
    """Create a user; the API token is printed as the last line (shown only once)."""
    from dockyard.bootstrap import build_platform
    from dockyard.services.auth import create_user as create

    platform = build_platform(_settings())
    try:
        issued = create(db=platform.db, username=username, email=email, fullname=fullname)
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Created user {username} ({email}). Their API token (shown once):")
    typer.echo(issued.secret)


@admin.command("build-stack")
def build_stack(
    force: bool = typer.Option(False, help="Rebuild even if the engine has this recipe's image."),
) -> None:
    """Build the docker runtime's stack image from Debian packages (mmdebstrap), tagged by
    its recipe's hash; nothing to do when the engine already has it."""
    from dockyard.runtime.docker import engine, stack

    settings = _settings()
    try:
        recipe = stack.recipe_named(settings.stack)
        client = engine.connect(settings.docker_host)
        if stack.present(client, recipe) and not force:
            typer.echo(f"The stack {recipe.tag} is already built.")
            return
        typer.echo(f"Building the stack {recipe.tag} (mmdebstrap {recipe.suite}; minutes)...")
        tarball = settings.data_dir / "stack" / f"{recipe.name}-{recipe.digest}.tar"
        stack.build_tarball(recipe, tarball)
        stack.import_tarball(client, recipe, tarball)
        tarball.unlink()
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Built the stack {recipe.tag}.")


def _register_client_commands() -> None:
    try:
        from dockyard.cli.client import register
    except ImportError:
        return
    register(app)


def main() -> None:
    _register_client_commands()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
