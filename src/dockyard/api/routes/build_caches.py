"""Build caches between worker processes (docs/api.md, "Build caches of worker processes";
services/build_caches.py has the why)."""

from __future__ import annotations

import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from dockyard.api.routes.common import call, json_response, platform_of
from dockyard.api.routes.sources import receive
from dockyard.errors import BadRequest, NotFound, PayloadTooLarge
from dockyard.platform import Platform
from dockyard.services import build_caches


async def _authorized(request: Request) -> build_caches.Grant:
    """What the URL's deployment token opens."""
    platform = platform_of(request)
    return await call(
        build_caches.authorize,
        db=platform.db,
        key=platform.jwt_key,
        deployment_id=request.path_params["deployment_id"],
        token=request.query_params.get("token", ""),
    )


def _etag(path: os.PathLike[str]) -> str:
    """Changes with each upload: the blob is replaced by a rename (a new inode)."""
    st = os.stat(path)
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


async def download(request: Request) -> Response:
    platform = platform_of(request)
    grant = await _authorized(request)
    held = await call(build_caches.held, db=platform.db, app_id=grant.app_id)
    if held is None or held.holder_url != platform.settings.own_url:
        # Workers ask the holder the database names; a copy here that is not the one
        # recorded is stale (a reset, or a newer one elsewhere), and never served.
        raise NotFound("build cache")
    try:
        path = platform.blobs.local_path(build_caches.blob_key(grant.app_id))
        etag = _etag(path)
    except FileNotFoundError:
        raise NotFound("build cache") from None
    headers = {"ETag": etag, "Cache-Control": "no-store"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type="application/gzip", headers=headers)


async def upload(request: Request) -> Response:
    platform = platform_of(request)
    grant = await _authorized(request)
    cap = platform.settings.max_cache_bytes
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise BadRequest("Send the cache archive with a Content-Length.", code="invalid_length")
    too_large = (
        f"The build cache is over the {cap} bytes limit (DOCKYARD_MAX_CACHE_BYTES): "
        "the next build on another worker starts without it."
    )
    if int(declared) > cap:
        raise PayloadTooLarge(too_large)
    key = build_caches.blob_key(grant.app_id)
    # Received under a key of its own, then swapped in whole: a download never sees half
    # of it, and a failed upload leaves the previous cache.
    incoming = f"{key}.{os.urandom(8).hex()}.incoming"
    pending = platform.blobs.begin(incoming)
    try:
        await receive(request.stream(), pending, cap, too_large)
        if pending.size != int(declared):
            raise BadRequest(
                "The upload ended before Content-Length bytes arrived.", code="incomplete_upload"
            )
        pending.commit()
    except BaseException:
        pending.discard()
        raise
    etag = await run_in_threadpool(_publish, platform, incoming, key, grant)
    return json_response({"build_cache": {"size": pending.size, "etag": etag}})


def _publish(platform: Platform, incoming: str, key: str, grant: build_caches.Grant) -> str:
    """Swap the received cache in and record this process as its holder; the previous
    holder, told, drops its copy."""
    blobs = platform.blobs

    def swap() -> str:
        blobs.put_file(key, blobs.local_path(incoming))
        return _etag(blobs.local_path(key))

    try:
        etag, previous = build_caches.install(
            db=platform.db, grant=grant, holder_url=platform.settings.own_url, swap=swap
        )
    finally:
        blobs.delete(incoming)
    if previous is not None:
        platform.bus.publish(
            build_caches.HOLDERS_CHANNEL,
            {"type": build_caches.CACHE_MOVED, "app_id": grant.app_id},
        )
    return etag


routes = [
    Route("/v1/internal/build-caches/{deployment_id}", download, methods=["GET"]),
    Route("/v1/internal/build-caches/{deployment_id}", upload, methods=["PUT"]),
]
