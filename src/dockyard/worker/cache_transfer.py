"""A worker process's deployment cache, carried through the API (``dockyard worker``:
no disk is shared, and the app's next build may run on another machine).

Before a build, the worker asks the API process that holds the app's cache (the database
records which) for it, unless it holds that copy already (its ETag, remembered beside the
cache with the local generation it belongs to); a newer one replaces the local cache
(``cache.save``). After a build saved its cache, the worker sends it to any API process
(the public URL), which becomes its holder. Either failing costs a cold build, never the
deployment: the log says so.
The URL carries a capability token of the deployment (services/build_caches.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy.exc import SQLAlchemyError

from dockyard.errors import DockyardError
from dockyard.pipeline import archive, cache, package
from dockyard.platform import Platform
from dockyard.services import build_caches

TIMEOUT_SECONDS = 300.0
COPY_CHUNK_BYTES = 1024 * 1024


def _url(platform: Platform, deployment_id: str, api_url: str | None = None) -> str:
    """The deployment's cache URL at ``api_url`` (the holder), else at the public URL
    (any API process, to send the cache)."""
    token = build_caches.token_for(platform.jwt_key, deployment_id)
    base = api_url or platform.settings.public_url
    return f"{base}/v1/internal/build-caches/{deployment_id}?token={token}"


def _marker(saved: Path) -> Path:
    return saved.with_name(f"{saved.name}.api-etag")


def _known_etag(saved: Path) -> str | None:
    """The API's ETag of the local cache, if it is still the cache that was sent or
    fetched (a reset changes the generation; a discard removes the cache)."""
    try:
        seen_generation, etag = _marker(saved).read_text().split("\n", 1)
    except (FileNotFoundError, ValueError):
        return None
    if seen_generation != cache.generation(saved) or not saved.is_dir():
        return None
    return etag


def _remember(saved: Path, etag: str) -> None:
    marker = _marker(saved)
    partial = marker.with_name(f".{marker.name}.partial")
    partial.write_text(f"{cache.generation(saved)}\n{etag}")
    partial.replace(marker)


def pull(
    platform: Platform,
    deployment_id: str,
    app_id: str,
    saved: Path,
    workdir: Path,
    log: Callable[[str], None],
) -> None:
    """Make ``saved`` the API's copy of the app's cache, if it differs: asked of the API
    process that holds it, as the database says."""
    known = _known_etag(saved)
    held = _to_fetch(platform, app_id, saved, known, log)
    if held is None:
        return
    headers = {} if known is None else {"If-None-Match": known}
    download = workdir / "cache-download.tar.gz"
    restored = workdir / "cache-restored"
    cap = platform.settings.max_cache_bytes
    try:
        with httpx.stream(
            "GET",
            _url(platform, deployment_id, held.holder_url),
            headers=headers,
            timeout=TIMEOUT_SECONDS,
        ) as response:
            if response.status_code == 304:  # ours is the API's
                return
            if response.status_code == 404:  # reset, or replaced, since it was looked up
                return
            if response.status_code != 200:
                response.read()
                raise DockyardError(_said(response))
            etag = response.headers.get("ETag", "")
            received = 0
            with download.open("wb") as out:
                for chunk in response.iter_bytes(COPY_CHUNK_BYTES):
                    received += len(chunk)
                    if received > cap:
                        raise DockyardError(f"it is over the {cap} bytes limit")
                    out.write(chunk)
        seen = cache.generation(saved)
        archive.unpack(
            download,
            restored,
            limits=archive.ArchiveLimits(max_bytes=4 * cap, max_entries=1_000_000),
        )
        if cache.save(restored, saved, seen_generation=seen):
            _remember(saved, etag)
            log(f"-----> Restored the deployment cache from the API ({_mib(received)})")
    except (OSError, httpx.HTTPError, DockyardError) as exc:
        log(f"       The deployment cache could not be fetched from the API: {_reason(exc)}")
    finally:
        download.unlink(missing_ok=True)
        shutil.rmtree(restored, ignore_errors=True)


def _to_fetch(
    platform: Platform, app_id: str, saved: Path, known: str | None, log: Callable[[str], None]
) -> build_caches.Held | None:
    """Where the app's cache is to be fetched from, or None when there is nothing to fetch."""
    try:
        held = build_caches.held(db=platform.db, app_id=app_id)
    except SQLAlchemyError as exc:
        log(f"       The deployment cache could not be looked up: {exc.__class__.__name__}")
        return None
    if held is None:  # none sent yet, or reset
        if known is not None:
            # The API dropped the copy this worker had: the cache was reset (the bus
            # tells it too, but maybe after this build started).
            cache.reset(saved)
        return None
    return None if held.etag == known else held  # the same ETag: ours is the API's


def push(
    platform: Platform, deployment_id: str, saved: Path, workdir: Path, log: Callable[[str], None]
) -> None:
    """Send the saved cache to the API, for the app's next build on any worker."""
    upload = workdir / "cache-upload.tar.gz"
    seen = cache.generation(saved)
    try:
        size = package.make_cache_archive(saved, upload)
        if size > platform.settings.max_cache_bytes:
            log(
                f"       The deployment cache ({_mib(size)}) is over the limit the API takes "
                "(DOCKYARD_MAX_CACHE_BYTES): a build on another worker starts without it."
            )
            return
        with upload.open("rb") as body:
            response = httpx.put(
                _url(platform, deployment_id),
                content=body,
                headers={"Content-Type": "application/gzip"},  # its length: httpx measures the file
                timeout=TIMEOUT_SECONDS,
            )
        if response.status_code != 200:
            raise DockyardError(_said(response))
        if cache.generation(saved) == seen:
            _remember(saved, str(response.json()["build_cache"]["etag"]))
    except (OSError, httpx.HTTPError, DockyardError, ValueError, KeyError) as exc:
        log(f"       The deployment cache could not be sent to the API: {_reason(exc)}")
    finally:
        upload.unlink(missing_ok=True)


def _said(response: httpx.Response) -> str:
    try:
        message = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase
    return f"the API answered HTTP {response.status_code}: {message}"


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, DockyardError) else str(exc)


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
