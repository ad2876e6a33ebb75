"""``deploy``: a directory, a tar.gz archive or an archive URL, then follow the build."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.archive import pack_directory
from dockyard.cli.client.console import human_bytes, stderr, stdout
from dockyard.cli.client.errors import UsageError
from dockyard.cli.client.http import ApiClient
from dockyard.cli.client.options import AppOption
from dockyard.cli.client.session import open_api
from dockyard.cli.client.upload import upload_archive
from dockyard.cli.client.watch import watch

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def deploy(
    source: Annotated[
        str,
        typer.Argument(help="A directory, a .tar.gz/.tgz archive or an http(s):// archive URL."),
    ] = ".",
    app: AppOption = None,
    git_ref: Annotated[str | None, typer.Option("--git-ref", help="The version label.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Stream the build log.")
    ] = True,
) -> None:
    """Deploy an app from a directory (packed, honouring ignore files), an archive or a URL."""
    name = resolve_app(app)
    with open_api() as api:
        source_url = _source_url(api, source)
        body = {"deployment": {"source_url": source_url, "git_ref": git_ref}}
        deployment = api.post(f"/v1/apps/{name}/deployments", body)["deployment"]
        deployment_id = deployment["id"]
        stdout().print(f"Deployment [bold]{escape(deployment_id)}[/] of {escape(name)} created.")
        if not follow:
            stdout().print(f"Follow it with `dockyard deployment-follow {escape(deployment_id)}`.")
            return
        watch(api, name, deployment_id)


def _source_url(api: ApiClient, source: str) -> str:
    if source.startswith(("http://", "https://")):
        return source
    path = Path(source)
    if path.is_dir():
        with tempfile.TemporaryDirectory(prefix="dockyard-deploy-") as scratch:
            archive = Path(scratch) / "source.tar.gz"
            err = stderr()
            packed = pack_directory(
                path,
                archive,
                warn=lambda message: err.print(f"[yellow]Warning:[/] {escape(message)}"),
            )
            err.print(
                f"Packed {packed.files} file{'' if packed.files == 1 else 's'} ({human_bytes(packed.bytes)}) from "
                f"{escape(str(path))} into {human_bytes(archive.stat().st_size)}."
            )
            return _upload(api, archive)
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return _upload(api, path)
    if path.exists():
        raise UsageError(f"{source} is neither a directory nor a .tar.gz/.tgz archive.")
    raise UsageError(
        f"{source} does not exist.", "Give a directory, a .tar.gz archive or an http(s):// URL."
    )


def _upload(api: ApiClient, archive: Path) -> str:
    uploaded = upload_archive(api, archive)
    stderr().print(f"Uploaded {uploaded.size} bytes ({human_bytes(uploaded.size)}).")
    return uploaded.download_url


COMMANDS = {"deploy": deploy}
