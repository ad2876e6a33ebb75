"""The ``dockyard`` command: server side (serve, worker, admin) and client side."""

from __future__ import annotations

import logging
import sys

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
    from dockyard.server import serve as run_server

    try:
        run_server(Settings.from_mapping(env))
    except DockyardError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from None


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
