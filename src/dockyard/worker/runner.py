"""Running one claimed deployment through its named steps.

    building  fetch → unpack → buildpacks (sandboxed)
    pushing   slug into the blob store, cache saved
    starting  the supervisor starts the release and checks that it boots
    success   routed; the previous release stopped

Every failure ends in a final status with a sentence in the log saying why; the previous
release keeps serving because nothing touches it before the new one has booted.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from dockyard import sandbox
from dockyard.bootstrap import Platform
from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment
from dockyard.domain import status as st
from dockyard.errors import ArchiveError, BootError, BuildError, FetchError, PipelineError
from dockyard.pipeline import archive, buildpacks, cache, fetch, keep, package, roots
from dockyard.runtime.boot import BootCancelled
from dockyard.runtime.supervisor import Supervisor
from dockyard.services import apps as apps_service
from dockyard.services import deployments as deployments_service
from dockyard.services.events import DeploymentLog
from dockyard.services.lifecycle import cache_dir, slug_key, supervisor_of
from dockyard.services.sources import blob_key
from dockyard.worker.background import Background
from dockyard.worker.logbatch import BatchingLog

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The deployment was cancelled by its user or by a server shutdown."""


@dataclass
class Job:
    deployment_id: str
    app_id: str
    app_name: str
    sandbox_uid: int
    source_url: str
    source_id: str | None
    env: dict[str, str]
    cache_generation: str = ""


def _load_job(platform: Platform, deployment: Deployment) -> Job:
    with transaction(platform.db) as session:
        app = session.get(App, deployment.app_id)
        assert app is not None
        return Job(
            deployment_id=deployment.id,
            app_id=app.id,
            app_name=app.name,
            sandbox_uid=app.sandbox_uid,
            source_url=deployment.source_url,
            source_id=deployment.source_id,
            env=apps_service.app_environment(session, app_id=app.id),
        )


class CancelCheck:
    """Polled by long steps; reads the database at most every half second."""

    def __init__(self, platform: Platform, deployment_id: str, stopping: threading.Event) -> None:
        self.platform = platform
        self.deployment_id = deployment_id
        self.stopping = stopping
        self._checked_at = 0.0
        self._cancelled = False

    def __call__(self) -> bool:
        if self._cancelled or self.stopping.is_set():
            return True
        now = time.monotonic()
        if now - self._checked_at >= 0.5:
            self._checked_at = now
            self._cancelled = deployments_service.cancel_requested(
                db=self.platform.db, deployment_id=self.deployment_id
            )
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self():
            raise Cancelled()


def run_deployment(platform: Platform, deployment: Deployment, *, stopping: threading.Event) -> str:
    """Take a deployment claimed as ``building`` to a final status; returns that status."""
    job = _load_job(platform, deployment)
    write = BatchingLog(
        DeploymentLog(
            db=platform.db, bus=platform.bus, app_id=job.app_id, deployment_id=job.deployment_id
        )
    )
    cancelled = CancelCheck(platform, job.deployment_id, stopping)
    workdir = platform.settings.builds_dir / job.deployment_id
    current = st.BUILDING

    def finish(final: str, *lines: str, **fields: object) -> str:
        # Every line written so far comes before the status change, stored with it.
        earlier = write.take_unstored()
        try:
            deployments_service.transition(
                db=platform.db,
                bus=platform.bus,
                deployment_id=job.deployment_id,
                new_status=final,
                lines=(*earlier, *lines),
                **fields,
            )
        except BaseException:
            write.put_back(earlier)  # not stored with the status: the writer stores them
            raise
        return final

    try:
        workdir.mkdir(parents=True, exist_ok=True)
        result = _build(platform, job, workdir, write, cancelled)
        current = st.PUSHING
        finish(st.PUSHING)

        def pushed(image_size: int) -> None:
            nonlocal current
            cancelled.raise_if_cancelled()
            current = st.STARTING
            finish(
                st.STARTING,
                image_size=image_size,
                process_types=result.process_types,
                config_vars=result.config_vars,
            )

        _push_and_start(platform, job, workdir, result, write, cancelled, pushed)
        _prune_releases(platform, job)
        return finish(
            st.SUCCESS,
            "-----> Your app is up and running.",
            f"       {platform.settings.app_url(job.app_name)}",
        )
    except Cancelled:
        return finish(st.ABORTED, _abort_reason(stopping))
    except BootError as exc:
        if current == st.PUSHING:
            finish(st.STARTING)  # the processes failed to launch while the slug was made
        if isinstance(exc, BootCancelled) or cancelled():
            return finish(
                st.ABORTED,
                _abort_reason(stopping),
                " !     The previous release, if any, is still serving.",
            )
        final = st.TIMEOUT_ERROR if exc.timed_out else st.CRASHED_ERROR
        return finish(
            final, f" !     {exc.message}", " !     The previous release, if any, is still serving."
        )
    except (FetchError, ArchiveError, BuildError, PipelineError) as exc:
        if cancelled():
            return finish(st.ABORTED, _abort_reason(stopping))
        final = st.BUILD_ERROR if current in (st.BUILDING, st.PUSHING) else st.CRASHED_ERROR
        return finish(final, *(f" !     {line}" for line in exc.message.splitlines()))
    except Exception:
        log.exception("deployment %s failed unexpectedly", job.deployment_id)
        final = st.BUILD_ERROR if current in (st.BUILDING, st.PUSHING) else st.CRASHED_ERROR
        return finish(
            final,
            " !     dockyard hit an internal error while deploying; the server log has the details.",
        )
    finally:
        try:
            write.close()
        finally:
            if platform.settings.sandbox:  # unsandboxed, a build could write to its root
                roots.give_back(_roots_pool(platform), _app_dir(workdir).parent)
            _remove_in_background(workdir)


def _build(
    platform: Platform, job: Job, workdir: Path, write: BatchingLog, cancelled: CancelCheck
) -> buildpacks.BuildResult:
    # The cache's hard-linked copy (tens of ms for a virtualenv and uv's cache, more for
    # node_modules) is made while the source is fetched and unpacked and the buildpacks
    # are detected, none of which see it.
    owner = job.sandbox_uid if os.geteuid() == 0 else None  # only root can give files away
    saved = cache_dir(platform, job.app_id)
    working_cache = _working_cache(workdir)
    checkout = Background(
        lambda: cache.checkout(saved, working_cache, owner=owner), name="dockyard-cache-checkout"
    )
    try:
        _fetch_and_unpack(platform, job, workdir, write, cancelled)
        result = _run_buildpacks(platform, job, workdir, write, cancelled, checkout.wait)
    except BaseException:
        checkout.join()  # done with the directory before it is removed; its error is moot
        raise
    job.cache_generation = checkout.wait()
    return result


def _fetch_and_unpack(
    platform: Platform, job: Job, workdir: Path, write: BatchingLog, cancelled: CancelCheck
) -> None:
    settings = platform.settings
    write("-----> Fetching source code")
    archive_path = workdir / "source.tar.gz"
    if job.source_id is not None:
        try:
            archive_path = platform.blobs.local_path(blob_key(job.source_id))
        except FileNotFoundError:
            raise FetchError(
                "The uploaded source is gone (it expired before the deployment started): upload it again."
            ) from None
    else:
        fetch.fetch_to_file(
            job.source_url,
            archive_path,
            allow=settings.fetch_allow,
            max_bytes=settings.max_source_bytes,
            timeout=min(600.0, settings.build_timeout),
        )
    write(f"       {_size(archive_path.stat().st_size)} received")
    cancelled.raise_if_cancelled()
    write("-----> Unpacking the archive")
    app_dir = _app_dir(workdir)
    roots.take(_roots_pool(platform), app_dir.parent)  # root's: a build cannot write to it
    archive.unpack(
        archive_path,
        app_dir,
        limits=archive.ArchiveLimits(
            max_bytes=settings.max_unpacked_bytes, max_entries=settings.max_archive_entries
        ),
        owner_uid=job.sandbox_uid if settings.sandbox else None,
    )
    cancelled.raise_if_cancelled()


def _run_buildpacks(
    platform: Platform,
    job: Job,
    workdir: Path,
    write: BatchingLog,
    cancelled: CancelCheck,
    cache_ready: Callable[[], str],
) -> buildpacks.BuildResult:
    settings = platform.settings
    scratch = workdir / "scratch"
    scratch.mkdir()
    # run_buildpacks hands the app and cache directories to the sandbox uid.
    app_dir = _app_dir(workdir)
    context = buildpacks.BuildContext(
        app_dir=app_dir,
        cache_dir=_working_cache(workdir),
        scratch_dir=scratch,
        env=job.env,
        host_uid=job.sandbox_uid,
        limits=sandbox.Limits(
            memory_bytes=settings.build_memory_bytes, max_processes=settings.build_max_processes
        ),
        timeout=float(settings.build_timeout),
        sandbox_enabled=settings.sandbox,
        sandbox_root=app_dir.parent,
    )
    return buildpacks.run_buildpacks(
        context,
        log=write,
        fetch_buildpack=_buildpack_fetcher(platform),
        cancelled=cancelled,
        cache_ready=cache_ready,
    )


def _app_dir(workdir: Path) -> Path:
    """Where a build's app is unpacked: ``app`` in the directory that becomes its
    sandboxes' ``/`` (``BuildContext.sandbox_root``)."""
    return workdir / "root" / "app"


def _roots_pool(platform: Platform) -> Path:
    """Where finished builds' sandbox roots wait for the next build (``roots``)."""
    return platform.settings.builds_dir / ".roots"


def _working_cache(workdir: Path) -> Path:
    """Where a build's copy of the deployment cache is kept (outside its sandboxes' root:
    the buildpacks move it in for compile)."""
    return workdir / "cache"


def _buildpack_fetcher(platform: Platform) -> Callable[[str, Path], None]:
    settings = platform.settings

    def fetch_buildpack(url: str, target: Path) -> None:
        path = url.split("#", 1)[0].split("?", 1)[0]
        if path.endswith((".tar.gz", ".tgz")):
            download = target.parent / f"{target.name}.tar.gz"
            fetch.fetch_to_file(
                url,
                download,
                allow=settings.fetch_allow,
                max_bytes=100 * 1024 * 1024,
                timeout=300.0,
            )
            archive.unpack(
                download, target, limits=archive.ArchiveLimits(max_bytes=200 * 1024 * 1024)
            )
            download.unlink(missing_ok=True)
        else:
            fetch.clone_git(url, target, allow=settings.fetch_allow, timeout=300.0)

    return fetch_buildpack


def _push_and_start(
    platform: Platform,
    job: Job,
    workdir: Path,
    result: buildpacks.BuildResult,
    write: BatchingLog,
    cancelled: CancelCheck,
    pushed: Callable[[int], None],
) -> None:
    """Package the release and start it, at once: the directories the buildpacks asked to
    keep are kept in the cache and the slug is written from the release directory
    (read-only to the app) while the release's processes boot.

    The release is routed only once its slug is stored, and the status goes from
    ``pushing`` to ``starting`` (``pushed``) only then, so a packaging failure is still a
    build error and the previous release keeps serving. The cache is saved then too: not
    for a build that could not be packaged.
    """
    supervisor = supervisor_of(platform)
    if supervisor is None:
        raise BootError(
            "No runtime is configured on this server, so the app cannot be started.",
            timed_out=False,
        )
    release_dir = platform.settings.releases_dir / job.deployment_id
    shutil.rmtree(release_dir, ignore_errors=True)
    _app_dir(workdir).rename(release_dir)
    write("-----> Packaging the release")
    slug_path = workdir / f"slug{package.SLUG_SUFFIX}"

    def keep_and_package() -> int:
        # Kept first: keeping freezes files, and the slug records them as they stay.
        owner = job.sandbox_uid if os.geteuid() == 0 else None
        keep.apply_requests(_working_cache(workdir), release_dir, owner=owner, log=write)
        return package.make_slug(release_dir, slug_path)

    slug = Background(keep_and_package, name="dockyard-slug")

    def launched() -> None:
        size = slug.wait()
        platform.blobs.put_file(slug_key(job.deployment_id), slug_path)
        write(f"       Release size: {_size(size)}")
        _save_cache(platform, job, workdir, release_dir, write)
        pushed(size)

    try:
        types = ", ".join(sorted(result.process_types)) or "none"
        write(f"-----> Starting the release (process types: {types})")
        supervisor.deploy(
            job.app_name,
            job.deployment_id,
            release_dir,
            result.process_types,
            {**result.config_vars, **job.env},
            log=write,
            cancelled=cancelled,
            launched=launched,
        )
    except BaseException:
        # The new release never served a request: nothing else refers to its files.
        slug.join()
        shutil.rmtree(release_dir, ignore_errors=True)
        platform.blobs.delete(slug_key(job.deployment_id))
        raise


def _save_cache(
    platform: Platform, job: Job, workdir: Path, release_dir: Path, write: BatchingLog
) -> None:
    saved = cache_dir(platform, job.app_id)
    if not cache.save(_working_cache(workdir), saved, seen_generation=job.cache_generation):
        write("       The deployment cache was reset during this build: it stays empty.")
        return
    # The next build must not be able to write to this release through its cache, and
    # its copy of the cache can be made now: both while the release boots.
    cache.settle_in_background(saved, release_dir)


KEPT_RELEASES = 2  # the serving one, and the one it replaced (still stopping)
RELEASE_STOP_WAIT_SECONDS = 120.0  # a drain and a stop grace period, with room to spare


def _prune_releases(platform: Platform, job: Job) -> None:
    """Remove the release directories and slugs of this app's older deployments, so disk
    use does not grow with every deployment."""
    with transaction(platform.db) as session:
        rows = session.execute(
            select(Deployment.id, Deployment.status)
            .where(Deployment.app_id == job.app_id, Deployment.id != job.deployment_id)
            .order_by(Deployment.created_at.desc())
        ).all()
    previous = [row.id for row in rows if row.status == st.SUCCESS][: KEPT_RELEASES - 1]
    supervisor = supervisor_of(platform)
    still_running = supervisor.retiring_releases(job.app_name) if supervisor else set()
    for row in rows:
        if row.id in previous or row.status not in st.FINAL:
            continue
        if row.id in still_running:
            # Replaced moments ago and still draining: removed once its processes stop.
            threading.Thread(
                target=_remove_release_once_stopped,
                args=(platform, supervisor, job.app_name, row.id),
                name="dockyard-release-removal",
                daemon=True,
            ).start()
        else:
            _remove_release(platform, row.id)


def _remove_release(platform: Platform, release_id: str) -> None:
    shutil.rmtree(platform.settings.releases_dir / release_id, ignore_errors=True)
    platform.blobs.delete(slug_key(release_id))


def _remove_release_once_stopped(
    platform: Platform, supervisor: Supervisor, app: str, release_id: str
) -> None:
    supervisor.wait_release_stopped(app, release_id, timeout=RELEASE_STOP_WAIT_SECONDS)
    _remove_release(platform, release_id)


def _remove_in_background(workdir: Path) -> None:
    """Delete a finished build's directory off the worker's path: with other builds
    writing, deleting even its two dozen entries took the worker 30-70 ms. Renamed first,
    so its name is free at once; a leftover of a server that stopped meanwhile is removed
    at the next start (``server.recover``). Its sandbox root has been given back to the
    pool (``roots``) by then if it could be."""
    doomed = workdir.with_name(f".removing-{workdir.name}")
    try:
        workdir.rename(doomed)
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)  # cannot rename: remove it here
        return
    threading.Thread(
        target=shutil.rmtree,
        args=(doomed,),
        kwargs={"ignore_errors": True},
        name="dockyard-build-removal",
        daemon=True,
    ).start()


def _abort_reason(stopping: threading.Event) -> str:
    if stopping.is_set():
        return (
            "-----> Deployment aborted: the server is shutting down. Deploy again once it is back."
        )
    return "-----> Deployment aborted: it was cancelled."


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
