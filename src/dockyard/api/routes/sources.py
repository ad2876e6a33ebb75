"""Sources: capability URLs to upload and download an archive (docs/api.md, "Sources")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from dockyard.api.auth import authenticate
from dockyard.api.routes.common import call, json_body, json_response, platform_of
from dockyard.backends.blobstore.base import BlobExists, PendingBlob
from dockyard.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from dockyard.platform import Platform
from dockyard.services import quotas
from dockyard.services import sources as sources_service
from dockyard.settings import Settings

GZIP_MAGIC = b"\x1f\x8b"
WRITE_BATCH_BYTES = 1024 * 1024
MAX_BATCH_PIECES = 256
# How long the API process that holds a source may take to start sending it.
HOLDER_TIMEOUT = httpx.Timeout(30.0)
ACCEPTED_TYPES = {
    "application/x-gzip",
    "application/gzip",
    "application/octet-stream",
    "application/x-tar",
    "",
}


async def create_source(request: Request) -> Response:
    user = await authenticate(request)
    await json_body(request)  # the client sends {}; anything else is ignored, but must be JSON
    platform = platform_of(request)
    created = await call(
        sources_service.create_source,
        db=platform.db,
        owner=user,
        ttl=platform.settings.source_ttl,
        quota=_quota(platform.settings),
    )
    base = f"{platform.settings.public_url}/v1/sources/{created.source.id}"
    return json_response(
        {
            "source": {
                "id": created.source.id,
                "upload_url": f"{base}?token={created.upload_token}",
                "download_url": f"{base}?token={created.download_token}",
            }
        },
        status=201,
    )


async def _authorized(request: Request, purpose: str) -> str:
    """The source id, once the URL's capability token grants ``purpose`` on it."""
    source_id: str = request.path_params["source_id"]
    await call(
        sources_service.authorize,
        db=platform_of(request).db,
        source_id=source_id,
        token=request.query_params.get("token", ""),
        purpose=purpose,
    )
    return source_id


async def upload(request: Request) -> Response:
    platform = platform_of(request)
    source_id = await _authorized(request, sources_service.UPLOAD)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(
            f"Upload a gzip-compressed tar archive (Content-Type: application/x-gzip), not {content_type}."
        )
    cap = platform.settings.max_source_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit()):
        raise BadRequest("Content-Length must be a number.", code="invalid_length")
    if declared is not None and int(declared) > cap:
        raise PayloadTooLarge(f"The archive is {declared} bytes; the limit is {cap} bytes.")
    too_large = f"The archive is over the {cap} bytes limit."
    quota = _quota(platform.settings)
    if declared is None:
        # Chunked: the room left is reserved, and the upload may not grow past it.
        room = await call(quotas.room_left, db=platform.db, source_id=source_id, quota=quota)
        if room < cap:
            cap = room
            too_large = (
                f"The archive is over the {room} bytes left of what your sources waiting "
                "to be deployed may hold: deploy them or let them expire, then upload again."
            )
    reserved = int(declared) if declared is not None else cap
    await call(
        quotas.reserve_upload, db=platform.db, source_id=source_id, size=reserved, quota=quota
    )
    try:
        size = await _upload(request, platform, source_id, cap, too_large, declared)
    except BaseException:
        await call(quotas.release_upload, db=platform.db, source_id=source_id)
        raise
    return json_response({"source": {"id": source_id, "size": size}})


def _quota(settings: Settings) -> quotas.SourceQuota:
    return quotas.SourceQuota(
        max_sources=settings.max_pending_sources, max_bytes=settings.max_pending_source_bytes
    )


async def _upload(
    request: Request,
    platform: Platform,
    source_id: str,
    cap: int,
    too_large: str,
    declared: str | None,
) -> int:
    """Receive the archive into the blob store and mark the source uploaded; its size."""
    pending = platform.blobs.begin(sources_service.blob_key(source_id))
    try:
        await receive(request.stream(), pending, cap, too_large)
        if pending.size == 0:
            raise UnsupportedMediaType(
                "The upload is empty: send the tar.gz archive as the request body."
            )
        if declared is not None and pending.size != int(declared):
            raise BadRequest(
                "The upload ended before Content-Length bytes arrived.", code="incomplete_upload"
            )
        try:
            pending.commit()
        except BlobExists:
            raise Conflict(
                "This source was already uploaded; sources are write-once: create a new one."
            ) from None
    except BaseException:
        pending.discard()
        raise
    try:
        # This process holds the bytes, whichever one the client's POST reached.
        await call(
            sources_service.mark_uploaded,
            db=platform.db,
            source_id=source_id,
            size=pending.size,
            holder_url=platform.settings.own_url,
        )
    except Conflict:
        # Another API process received the same upload first, and holds it.
        platform.blobs.delete(sources_service.blob_key(source_id))
        raise
    return pending.size


async def receive(
    chunks: AsyncIterator[bytes], pending: PendingBlob, cap: int, too_large: str
) -> None:
    first = True
    received = 0
    writer = _OverlappedWriter(pending)
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            if first:
                # Checked on the first bytes so a wrong file is refused before it is stored.
                if not chunk.startswith(GZIP_MAGIC[: len(chunk)]):
                    raise UnsupportedMediaType(
                        "The upload is not a gzip archive (it does not start with the gzip magic bytes 1f 8b): send a .tar.gz file."
                    )
                first = False
            received += len(chunk)
            if received > cap:
                raise PayloadTooLarge(too_large)
            await writer.write(chunk)
        await writer.finish()
    except ClientDisconnect:
        raise BadRequest(
            "The client disconnected before the upload finished.", code="incomplete_upload"
        ) from None
    finally:
        # Nothing may write once the caller discards the blob; a failure of that last
        # write is moot next to the error already on its way.
        with contextlib.suppress(Exception):
            await writer.settle()


class _OverlappedWriter:
    """Writes an upload to disk from a thread while the event loop reads the next bytes.

    Chunks are gathered (not copied) into batches of ``WRITE_BATCH_BYTES``; a batch is
    written in a thread, in one vectored write, while the next one fills, and at most
    one write is in flight, so memory stays at two batches whatever the upload's size.
    Writing on the event loop serialised the socket reads and the disk writes: they took
    a third of the loop's time.
    """

    def __init__(self, pending: PendingBlob) -> None:
        self.pending = pending
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.in_flight: asyncio.Future[None] | None = None

    async def write(self, chunk: bytes) -> None:
        self.batch.append(chunk)
        self.batch_bytes += len(chunk)
        if len(self.batch) >= MAX_BATCH_PIECES:
            # A client trickling tiny segments: keep the batch a few pieces long (each
            # piece costs far more memory than its bytes, and writev takes ~1,000).
            self.batch = [b"".join(self.batch)]
        if self.batch_bytes >= WRITE_BATCH_BYTES:
            await self._flush()

    async def finish(self) -> None:
        await self._flush()
        await self.settle()

    async def settle(self) -> None:
        """Wait for the write in flight (if any) so nothing writes after this returns.
        Shielded: cancelling the request does not stop a thread's write, so it stays
        in flight (and is waited for again) until it has really finished."""
        if self.in_flight is not None:
            await asyncio.shield(self.in_flight)
            self.in_flight = None

    async def _flush(self) -> None:
        await self.settle()
        if self.batch:
            batch, self.batch, self.batch_bytes = self.batch, [], 0
            loop = asyncio.get_running_loop()
            self.in_flight = loop.run_in_executor(None, self.pending.write_all, batch)


async def download(request: Request) -> Response:
    platform = platform_of(request)
    source_id = await _authorized(request, sources_service.DOWNLOAD)
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Disposition": 'attachment; filename="source.tar.gz"',
    }
    holder = await call(sources_service.holder_of, db=platform.db, source_id=source_id)
    if holder is not None and holder != platform.settings.own_url:
        # Behind a load balancer, the download URL may reach an API process that does not
        # hold the archive: it passes on the holder's (workers ask the holder directly).
        url = f"{holder}{request.url.path}?{request.url.query}"
        return await _from_holder(request.method, url, headers)
    try:
        path = platform.blobs.local_path(sources_service.blob_key(source_id))
    except FileNotFoundError:
        raise NotFound("source") from None
    return FileResponse(path, media_type="application/x-gzip", headers=headers)


async def _from_holder(method: str, url: str, headers: dict[str, str]) -> Response:
    client = httpx.AsyncClient(timeout=HOLDER_TIMEOUT)
    try:
        answer = await client.send(client.build_request(method, url), stream=True)
    except httpx.HTTPError:
        await client.aclose()
        raise Conflict(sources_service.HOLDER_GONE) from None
    if answer.status_code != 200:
        await answer.aclose()
        await client.aclose()
        raise Conflict(sources_service.HOLDER_GONE)

    async def close() -> None:
        await answer.aclose()
        await client.aclose()

    length = answer.headers.get("content-length")
    return StreamingResponse(
        answer.aiter_raw(),
        media_type="application/x-gzip",
        headers={**headers, **({"Content-Length": length} if length else {})},
        background=BackgroundTask(close),
    )


routes = [
    Route("/v1/sources", create_source, methods=["POST"]),
    Route("/v1/sources/{source_id}", upload, methods=["PUT"]),
    Route("/v1/sources/{source_id}", download, methods=["GET", "HEAD"]),
]
