"""Running one claimed deployment through its named steps.

    building  fetch → unpack → buildpacks (sandboxed)          ``_Run.build``
    pushing   the release directory, its processes launched      ``_Run.launch``
              while the slug is made and stored, cache saved     ``_Run.store_slug``
              (under the docker runtime: its image built and
              pushed first, and no slug)                         ``_Run.publish_artifact``
    starting  the boot check, the postdeploy hook (scalingo.json),
              then the switch of the route                       ``_Run.serve``
    success   the previous release stops (after a drain)

Every failure ends in a final status (``dockyard.domain.outcomes``) with a sentence in the
log saying why; the previous release keeps serving because nothing touches it before the
new one has booted.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from dockyard import sandbox
from dockyard.domain import outcomes
from dockyard.domain import status as st
from dockyard.domain.formation import Scale
from dockyard.domain.outcomes import Failure
from dockyard.domain.records import DeploymentRecord
from dockyard.errors import (
    ArchiveError,
    BootError,
    BuildError,
    DockyardError,
    FetchError,
    HookError,
    PipelineError,
)
from dockyard.pipeline import archive, buildpacks, cache, fetch, keep, package, roots
from dockyard.platform import Platform
from dockyard.runtime.base import AppRuntime, Launch
from dockyard.runtime.boot import BootCancelled
from dockyard.runtime.supervisor import Supervisor
from dockyard.services import deployments as deployments_service
from dockyard.services import formation as formation_service
from dockyard.services.deployments import Job
from dockyard.services.events import DeploymentLog
from dockyard.services.lifecycle import cache_dir, slug_key
from dockyard.services.sources import HOLDER_GONE, blob_key
from dockyard.settings import Settings
from dockyard.worker import cache_transfer, manifest
from dockyard.worker.background import Background
from dockyard.worker.logbatch import BatchingLog

log = logging.getLogger(__name__)

STILL_SERVING = " !     The previous release, if any, is still serving."


class Cancelled(Exception):
    """The deployment was cancelled by its user or by a server shutdown."""


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


def run_deployment(
    platform: Platform, deployment: DeploymentRecord, *, stopping: threading.Event
) -> str:
    """Take a deployment claimed as ``building`` to a final status; returns that status."""
    job = deployments_service.load_job(db=platform.db, deployment_id=deployment.id)
    run = _Run(platform, job, stopping)
    try:
        return run.steps()
    except Exception as exc:
        return run.fail(exc)
    finally:
        run.close()


class _Run:
    """One deployment's way through its steps, and what each step left to undo."""

    def __init__(self, platform: Platform, job: Job, stopping: threading.Event) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.job = job
        self.stopping = stopping
        self.write = BatchingLog(
            DeploymentLog(
                db=platform.db, bus=platform.bus, app_id=job.app_id, deployment_id=job.deployment_id
            ),
            max_bytes=self.settings.max_build_output_bytes,
        )
        self.cancelled = CancelCheck(platform, job.deployment_id, stopping)
        self.workdir = self.settings.builds_dir / job.deployment_id
        self.phase = st.BUILDING
        self.cache_generation = ""
        # Left to undo if a later step fails: a release that never served.
        self.release_dir: Path | None = None
        self.packaging: Background[int] | None = None
        self.launched: Launch | None = None
        self.formation: dict[str, Scale] = {}
        self.published = False  # the release's artifact (image) exists
        self.hook: str | None = None  # scalingo.json's postdeploy hook, run before the switch

    def steps(self) -> str:
        if self.job.rollback_of is not None:
            return self.rollback_steps(self.job.rollback_of)
        self.workdir.mkdir(parents=True, exist_ok=True)
        built = self.build()
        self.enter(st.PUSHING)
        supervisor = self.supervisor()
        release_dir = self.make_release()
        self.read_manifest(release_dir)
        process_types = self.take_hook(built.process_types)
        if self.platform.artifacts is None:
            # The release is the directory, and the slug its copy in the blob store.
            self.packaging = Background(
                lambda: self.keep_and_package(release_dir), name="dockyard-slug"
            )
            self.launched = self.launch(
                supervisor, release_dir, process_types, built.config_vars
            )
            size: int | None = self.store_slug(self.packaging)
        else:
            # The release is its image (no slug: the registry keeps it). The kept
            # directories go first: the image has them in a layer of their own.
            kept = self.keep_dirs(release_dir)
            size = self.publish_artifact(release_dir, process_types, dependencies=kept)
            self.launched = self.launch(
                supervisor, release_dir, process_types, built.config_vars
            )
        self.save_cache()
        self.cancelled.raise_if_cancelled()
        self.enter(
            st.STARTING,
            image_size=size,
            process_types=process_types,
            config_vars=built.config_vars,
        )
        return self.serve(supervisor)

    def rollback_steps(self, target_id: str) -> str:
        """A rollback: no fetch and no build. The kept release of ``target_id`` becomes
        this deployment's (hard links: instant, and its files are read-only to the app),
        and starts with the process types and defaults it was built with."""
        process_types = dict(self.job.process_types or {})
        config_vars = dict(self.job.config_vars or {})
        self.write(f"-----> Rolling back to the release of deployment {target_id} (no build)")
        self.enter(st.PUSHING)
        supervisor = self.supervisor()
        self.release_dir = self.settings.releases_dir / self.job.deployment_id
        _link_release(self.settings.releases_dir / target_id, self.release_dir, target_id)
        self.read_manifest(self.release_dir)
        image_size = self.publish_artifact(self.release_dir, process_types)
        self.launched = self.launch(supervisor, self.release_dir, process_types, config_vars)
        self.cancelled.raise_if_cancelled()
        self.enter(
            st.STARTING,
            process_types=process_types,
            config_vars=config_vars,
            **({} if image_size is None else {"image_size": image_size}),
        )
        return self.serve(supervisor)

    def serve(self, supervisor: AppRuntime) -> str:
        """starting: the launched release boots, then serves; older releases go."""
        launched = self.launched
        assert launched is not None
        hook = self.hook
        if isinstance(supervisor, Supervisor):
            own = supervisor

            def postdeploy() -> None:
                if hook is not None:
                    manifest.run_hook(
                        own,
                        launched,
                        hook,
                        write=self.write,
                        cancelled=self.cancelled,
                        timeout=float(self.settings.build_timeout),
                    )

            own.complete(
                launched, log=self.write, cancelled=self.cancelled, before_switch=postdeploy
            )
        else:  # read_manifest refused a hook there: Swarm switches by itself
            supervisor.complete(launched, log=self.write, cancelled=self.cancelled)
        self.launched = None
        formation_service.save(
            db=self.platform.db, app_id=self.job.app_id, formation=self.formation
        )
        self.release_dir = None  # serving now: it is not this run's to remove any more
        self.published = False
        self.prune_releases(supervisor)
        return self.finish(
            st.SUCCESS,
            "-----> Your app is up and running.",
            f"       {self.settings.app_url(self.job.app_name)}",
        )

    # -- the steps ------------------------------------------------------------------------

    def build(self) -> buildpacks.BuildResult:
        """building: the source fetched and unpacked, and the buildpacks run on it."""
        built, self.cache_generation = _build(
            self.platform, self.job, self.workdir, self.write, self.cancelled
        )
        return built

    def supervisor(self) -> AppRuntime:
        if self.platform.supervisor is None:
            raise BootError(
                "No runtime is configured on this server, so the app cannot be started.",
                timed_out=False,
            )
        return self.platform.supervisor

    def make_release(self) -> Path:
        """The built app becomes the release directory (read-only to the app)."""
        release_dir = self.settings.releases_dir / self.job.deployment_id
        shutil.rmtree(release_dir, ignore_errors=True)
        _app_dir(self.workdir).rename(release_dir)
        self.release_dir = release_dir
        self.write("-----> Packaging the release")
        return release_dir

    def keep_dirs(self, release_dir: Path) -> list[str]:
        """The directories the buildpacks asked to keep go to the cache (keeping freezes
        their files); their paths in the release."""
        owner = self.job.sandbox_uid if os.geteuid() == 0 else None
        return keep.apply_requests(
            _working_cache(self.workdir), release_dir, owner=owner, log=self.write
        )

    def read_manifest(self, release_dir: Path) -> None:
        """``scalingo.json``: its addons provisioned (at the first deployment), before the
        release starts with their variables; its hook kept for ``serve``."""
        declared, problems = manifest.read(release_dir)
        if problems:
            raise BuildError(
                f"{manifest.MANIFEST} cannot be honoured: {'; '.join(problems)}. Fix it and "
                "deploy again."
            )
        self.job.env.update(manifest.provision(self.platform, self.job, declared, self.write))
        self.hook = declared.hook(first=self.job.first)
        self._refuse_hook_without_supervisor()

    def _refuse_hook_without_supervisor(self) -> None:
        """The hook runs between a release's boot and its switch, which only dockyard's
        own supervisor separates (Swarm's rolling update switches by itself)."""
        if self.hook is not None and not isinstance(self.platform.supervisor, Supervisor):
            raise BuildError(
                "A postdeploy hook cannot run on the swarm runtime yet: remove it from the "
                "Procfile and scalingo.json, and run it with `scalingo run` after the deployment."
            )

    def take_hook(self, process_types: dict[str, str]) -> dict[str, str]:
        """A Procfile's ``postdeploy`` entry is Scalingo's postdeploy hook, not a process
        to keep running: it becomes the hook (over scalingo.json's, which Scalingo calls
        deprecated), and the other entries are the release's process types."""
        hook = process_types.get(manifest.PROCFILE_HOOK)
        if hook is None:
            return process_types
        self.hook = hook
        self._refuse_hook_without_supervisor()
        return {
            name: command
            for name, command in process_types.items()
            if name != manifest.PROCFILE_HOOK
        }

    def keep_and_package(self, release_dir: Path) -> int:
        """Run while the release boots: the kept directories go to the cache first (keeping
        freezes files, and the slug records them as they stay), then the slug is made."""
        self.keep_dirs(release_dir)
        return package.make_slug(release_dir, self.slug_path)

    @property
    def slug_path(self) -> Path:
        return self.workdir / f"slug{package.SLUG_SUFFIX}"

    def launch(
        self,
        supervisor: AppRuntime,
        release_dir: Path,
        process_types: dict[str, str],
        config_vars: dict[str, str],
    ) -> Launch:
        """The release's instances, as many as its formation asks for, start booting."""
        self.formation = formation_service.for_release(
            db=self.platform.db, app_id=self.job.app_id, process_types=process_types
        )
        shown = ", ".join(
            f"{name}:{scale.amount}:{scale.size}" for name, scale in sorted(self.formation.items())
        )
        self.write(f"-----> Starting the release (formation: {shown or 'none'})")
        return supervisor.launch(
            self.job.app_name,
            self.job.deployment_id,
            release_dir,
            process_types,
            {**config_vars, **self.job.env},
            log=self.write,
            formation=self.formation,
        )

    def publish_artifact(
        self,
        release_dir: Path,
        process_types: dict[str, str],
        *,
        dependencies: list[str] | None = None,
    ) -> int | None:
        """What the runtime runs, if not the directory (the docker runtime's image, pushed
        to the registry); its size. Before the launch: the instances start from it."""
        artifacts = self.platform.artifacts
        if artifacts is None:
            return None
        self.write("-----> Building and pushing the release image")
        self.published = True  # from now on, a failure removes what may have been pushed
        size = artifacts.publish(
            app=self.job.app_name,
            release_id=self.job.deployment_id,
            release_dir=release_dir,
            process_types=process_types,
            dependencies=dependencies or (),
        )
        self.write(f"       Image layers: {_size(size)}")
        return size

    def store_slug(self, packaging: Background[int]) -> int:
        """The slug stored; only then may the release be routed, so a packaging failure
        is still a build error and the previous release keeps serving."""
        size = packaging.wait()
        self.platform.blobs.put_file(slug_key(self.job.deployment_id), self.slug_path)
        self.write(f"       Release size: {_size(size)}")
        return size

    def save_cache(self) -> None:
        assert self.release_dir is not None
        _save_cache(
            self.platform,
            self.job,
            self.workdir,
            self.release_dir,
            self.write,
            seen_generation=self.cache_generation,
        )

    def prune_releases(self, supervisor: AppRuntime) -> None:
        _prune_releases(self.platform, supervisor, self.job)

    # -- statuses -------------------------------------------------------------------------

    def enter(self, status: str, **fields: object) -> None:
        self.finish(status, **fields)
        self.phase = status

    def finish(self, status: str, *lines: str, **fields: object) -> str:
        # Every line written so far comes before the status change, stored with it.
        earlier = self.write.take_unstored()
        try:
            deployments_service.transition(
                db=self.platform.db,
                bus=self.platform.bus,
                deployment_id=self.job.deployment_id,
                new_status=status,
                lines=(*earlier, *lines),
                **fields,
            )
        except BaseException:
            self.write.put_back(earlier)  # not stored with the status: the writer stores them
            raise
        return status

    def fail(self, exc: Exception) -> str:
        """End the deployment after ``exc``, as ``outcomes`` says, with the reason in words."""
        self.undo()
        failure, lines = self.explain(exc)
        *passing, final = outcomes.statuses_after(self.phase, failure)
        for status in passing:
            self.enter(status)
        return self.finish(final, *lines)

    def explain(self, exc: Exception) -> tuple[Failure, tuple[str, ...]]:
        if isinstance(exc, Cancelled):
            return Failure.CANCELLED, (_abort_reason(self.stopping),)
        if isinstance(exc, HookError):
            return Failure.HOOK, (f" !     {exc.message}", STILL_SERVING)
        if isinstance(exc, BootError):
            if isinstance(exc, BootCancelled) or self.cancelled():
                return Failure.CANCELLED, (_abort_reason(self.stopping), STILL_SERVING)
            failure = Failure.BOOT_TIMEOUT if exc.timed_out else Failure.BOOT_CRASH
            return failure, (f" !     {exc.message}", STILL_SERVING)
        if isinstance(exc, FetchError | ArchiveError | BuildError | PipelineError):
            if self.cancelled():
                return Failure.CANCELLED, (_abort_reason(self.stopping),)
            return Failure.BUILD, tuple(f" !     {line}" for line in exc.message.splitlines())
        log.error("deployment %s failed unexpectedly", self.job.deployment_id, exc_info=exc)
        return Failure.INTERNAL, (
            " !     dockyard hit an internal error while deploying; the server log has the details.",
        )

    # -- cleaning up ----------------------------------------------------------------------

    def undo(self) -> None:
        """Remove what a failed run made that never served a request."""
        if self.launched is not None and self.platform.supervisor is not None:
            self.platform.supervisor.abandon(self.launched, log=self.write, explain=False)
            self.launched = None
        if self.packaging is not None:
            self.packaging.join()
        if self.release_dir is not None:
            shutil.rmtree(self.release_dir, ignore_errors=True)
            self.platform.blobs.delete(slug_key(self.job.deployment_id))
            self.release_dir = None
        if self.published and self.platform.artifacts is not None:
            self.published = False
            try:
                self.platform.artifacts.remove(
                    app=self.job.app_name, release_id=self.job.deployment_id
                )
            except DockyardError as exc:
                log.warning("the image of a failed release could not be removed: %s", exc)

    def close(self) -> None:
        try:
            self.write.close()
        finally:
            # Unsandboxed, a build could write to its root; a rollback made none.
            if self.settings.sandbox and self.job.rollback_of is None:
                roots.give_back(_roots_pool(self.platform), _app_dir(self.workdir).parent)
            _remove_in_background(self.workdir)


def _build(
    platform: Platform, job: Job, workdir: Path, write: BatchingLog, cancelled: CancelCheck
) -> tuple[buildpacks.BuildResult, str]:
    """The build's result, and the generation of the cache it started from (``cache``)."""
    # The cache's hard-linked copy (tens of ms for a virtualenv and uv's cache, more for
    # node_modules) is made while the source is fetched and unpacked and the buildpacks
    # are detected, none of which see it.
    owner = job.sandbox_uid if os.geteuid() == 0 else None  # only root can give files away
    saved = cache_dir(platform.settings, job.app_id)
    working_cache = _working_cache(workdir)
    if platform.fetch_sources_from_api:  # the app's last build may have run elsewhere
        cache_transfer.pull(platform, job.deployment_id, job.app_id, saved, workdir, write)
    checkout = Background(
        lambda: cache.checkout(saved, working_cache, owner=owner), name="dockyard-cache-checkout"
    )
    try:
        _fetch_and_unpack(platform, job, workdir, write, cancelled)
        result = _run_buildpacks(platform, job, workdir, write, cancelled, checkout.wait)
    except BaseException:
        checkout.join()  # done with the directory before it is removed; its error is moot
        raise
    return result, checkout.wait()


def _fetch_and_unpack(
    platform: Platform, job: Job, workdir: Path, write: BatchingLog, cancelled: CancelCheck
) -> None:
    settings = platform.settings
    write("-----> Fetching source code")
    archive_path = workdir / "source.tar.gz"
    if job.source_id is not None and not platform.fetch_sources_from_api:
        try:
            archive_path = platform.blobs.local_path(blob_key(job.source_id))
        except FileNotFoundError:
            raise FetchError(
                "The uploaded source is gone (it expired before the deployment started): upload it again."
            ) from None
    elif job.source_id is not None:
        _fetch_from_holder(settings, job, archive_path)
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
        toolchains_dir=settings.toolchains_dir,
        netns=_build_netns(platform, job),
        executor=platform.build_executor,
        app=job.app_name,
    )
    return buildpacks.run_buildpacks(
        context,
        log=write,
        fetch_buildpack=_buildpack_fetcher(platform),
        cancelled=cancelled,
        cache_ready=cache_ready,
    )


def _build_netns(platform: Platform, job: Job) -> Path | None:
    """The app's network namespace, if apps are isolated (``dockyard.isolation``)."""
    isolation = platform.isolation
    return None if isolation is None else isolation.sandbox_netns(job.sandbox_uid)


def _fetch_from_holder(settings: Settings, job: Job, archive_path: Path) -> None:
    """A worker process: the source is on the disk of the API process that received its
    upload (recorded in the database), and its download URL's capability token, asked of
    that process, is the way to it. A holder that is gone fails the deployment, saying
    the source must be uploaded again."""
    assert job.source_id is not None
    url = source_url_at_holder(job)
    try:
        fetch.fetch_to_file(
            url,
            archive_path,
            allow=settings.fetch_allow | {_api_address(url)},
            max_bytes=settings.max_source_bytes,
            timeout=min(600.0, settings.build_timeout),
        )
    except FetchError:
        if job.source_holder is None:  # uploaded before holders were recorded
            raise
        log.warning(
            "the source of deployment %s could not be fetched from %s",
            job.deployment_id,
            job.source_holder,
        )
        raise FetchError(HOLDER_GONE) from None


def source_url_at_holder(job: Job) -> str:
    """The deployment's source download URL, at the API process that holds the source
    (its public URL may reach another one, behind a load balancer)."""
    if job.source_holder is None:
        return job.source_url
    token = urlsplit(job.source_url).query
    return f"{job.source_holder}/v1/sources/{job.source_id}?{token}"


def _api_address(public_url: str) -> tuple[str, int]:
    """The API's ``(host, port)``: a worker's own API is reachable though private."""
    parts = urlsplit(public_url)
    return (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


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


def _save_cache(
    platform: Platform,
    job: Job,
    workdir: Path,
    release_dir: Path,
    write: BatchingLog,
    *,
    seen_generation: str,
) -> None:
    saved = cache_dir(platform.settings, job.app_id)
    if not cache.save(_working_cache(workdir), saved, seen_generation=seen_generation):
        write("       The deployment cache was reset during this build: it stays empty.")
        return
    # The next build must not be able to write to this release through its cache, and
    # its copy of the cache can be made now: both while the release boots.
    cache.settle_in_background(saved, release_dir)
    if platform.fetch_sources_from_api:  # for the app's next build, on whichever worker
        cache_transfer.push(platform, job.deployment_id, saved, workdir, write)


RELEASE_STOP_WAIT_SECONDS = 120.0  # a drain and a stop grace period, with room to spare


def _prune_releases(platform: Platform, supervisor: AppRuntime, job: Job) -> None:
    """Remove the release directories and slugs of this app's older deployments, so disk
    use does not grow with every deployment."""
    doomed = deployments_service.replaced_releases(
        db=platform.db,
        app_id=job.app_id,
        current_id=job.deployment_id,
        kept=platform.settings.releases_kept,
    )
    still_running = supervisor.retiring_releases(job.app_name)
    for release_id in doomed:
        if release_id in still_running:
            # Replaced moments ago and still draining: removed once its processes stop.
            threading.Thread(
                target=_remove_release_once_stopped,
                args=(platform, supervisor, job.app_name, release_id),
                name="dockyard-release-removal",
                daemon=True,
            ).start()
        else:
            _remove_release(platform, job.app_name, release_id)


def _link_release(source: Path, target: Path, source_id: str) -> None:
    """``target`` as a copy of the release ``source`` made of hard links: the same files
    (never written: the app's ``/app`` is read-only), directories and links copied with
    their owners and modes."""
    if not source.is_dir():
        raise BuildError(
            f"The release of deployment {source_id} is no longer kept on this server: "
            "deploy its source again."
        )
    shutil.rmtree(target, ignore_errors=True)
    made: list[tuple[Path, Path]] = []
    for directory, subdirs, files in os.walk(source):
        here = Path(directory)
        there = target / here.relative_to(source)
        there.mkdir()
        made.append((here, there))
        for name in [*subdirs, *files]:
            if (here / name).is_symlink():  # os.walk lists a link to a directory in subdirs
                _copy_link(here / name, there / name)
            elif name in files:
                os.link(here / name, there / name)
    # Modes last, deepest first: a read-only directory is filled before it becomes so.
    for here, there in reversed(made):
        stat = here.lstat()
        if os.geteuid() == 0:
            os.chown(there, stat.st_uid, stat.st_gid)
        os.chmod(there, stat.st_mode & 0o7777)


def _copy_link(source: Path, target: Path) -> None:
    os.symlink(os.readlink(source), target)
    if os.geteuid() == 0:
        stat = source.lstat()
        os.chown(target, stat.st_uid, stat.st_gid, follow_symlinks=False)


def _remove_release(platform: Platform, app: str, release_id: str) -> None:
    shutil.rmtree(platform.settings.releases_dir / release_id, ignore_errors=True)
    platform.blobs.delete(slug_key(release_id))
    if platform.artifacts is not None:
        try:
            platform.artifacts.remove(app=app, release_id=release_id)
        except DockyardError as exc:
            # Left for the next prune: the deployment succeeded, only disk use is at stake.
            log.warning("the image of release %s could not be removed: %s", release_id, exc)


def _remove_release_once_stopped(
    platform: Platform, supervisor: AppRuntime, app: str, release_id: str
) -> None:
    supervisor.wait_release_stopped(app, release_id, timeout=RELEASE_STOP_WAIT_SECONDS)
    _remove_release(platform, app, release_id)


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
