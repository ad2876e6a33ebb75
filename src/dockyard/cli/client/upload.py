"""Uploading an archive: ``POST /v1/sources``, then a plain PUT of the file to its URL.

The PUT carries no Authorization header (the URL's token is the authorisation, and a
token must not travel where it is not needed), states the exact Content-Length, and
streams from disk in chunks so a 300 MB archive never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dockyard.cli.client.console import stderr
from dockyard.cli.client.http import (
    USER_AGENT,
    ApiClient,
    parsed_body,
    raise_for_status,
    redact,
    transport_error,
)

CHUNK_SIZE = 256 * 1024
# Long enough for the server to store the last chunk of a large archive on a slow disk.
UPLOAD_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


@dataclass(frozen=True)
class Uploaded:
    download_url: str
    size: int  # as the server counted it


def upload_archive(api: ApiClient, archive: Path) -> Uploaded:
    source = api.post("/v1/sources")["source"]
    size = put_file(source["upload_url"], archive)
    return Uploaded(download_url=source["download_url"], size=size)


def put_file(url: str, archive: Path, *, transport: httpx.BaseTransport | None = None) -> int:
    size = archive.stat().st_size
    console = stderr()
    progress = Progress(
        TextColumn("Uploading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # A bar redrawn into a log file or a pipe is noise; the size is printed after.
        disable=not console.is_terminal,
    )
    headers = {
        "Content-Type": "application/x-gzip",
        "Content-Length": str(size),
        "User-Agent": USER_AGENT,
    }
    with progress, httpx.Client(timeout=UPLOAD_TIMEOUT, transport=transport) as http:
        task = progress.add_task("upload", total=size)

        def chunks() -> Iterator[bytes]:
            with archive.open("rb") as handle:
                while chunk := handle.read(CHUNK_SIZE):
                    progress.advance(task, len(chunk))
                    yield chunk

        try:
            response = http.put(url, content=chunks(), headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(exc, "PUT", redact(url)) from None
    raise_for_status(response)
    body = parsed_body(response)
    counted = body.get("source", {}).get("size") if isinstance(body, dict) else None
    return counted if isinstance(counted, int) else size
