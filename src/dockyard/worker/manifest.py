"""What a deployment does with the app's ``scalingo.json``: the addons it declares are
provisioned at the app's first deployment, before its release starts (so it boots with
its database), and its postdeploy hook runs once the new release is up, before it gets
traffic.

The hook is Scalingo's: the Procfile's ``postdeploy`` entry, else ``scalingo.json``'s
``scripts.first-deploy`` at the first deployment when given, ``scripts.postdeploy``
otherwise; it runs as a one-off of the new release, with its
variables, its output in the deployment log. If it fails, the deployment ends as
``hook-error`` and the previous release keeps serving (Scalingo's postdeploy hook does
the same: migrations that fail never meet traffic).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from dockyard.domain import addons as catalogue
from dockyard.errors import BootError, BuildError, DockyardError, HookError
from dockyard.platform import Platform
from dockyard.runtime.logfile import LogTail, parse
from dockyard.runtime.supervisor import Launch, Supervisor
from dockyard.services import addons as addons_service
from dockyard.services.deployments import Job

MANIFEST = "scalingo.json"
PROCFILE_HOOK = "postdeploy"  # the Procfile entry that is the hook, not a process type
MAX_MANIFEST_BYTES = 1024 * 1024
NOTHING = catalogue.Manifest((), None, None)


def read(release_dir: Path) -> tuple[catalogue.Manifest, list[str]]:
    """The release's ``scalingo.json`` (none: an empty manifest) and its problems. Never
    follows a symbolic link: the file is the app's, read by the server."""
    try:
        fd = os.open(release_dir / MANIFEST, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return NOTHING, []
    except OSError:
        return NOTHING, [f"{MANIFEST} is not a regular file"]
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory, a FIFO, a device
        os.close(fd)
        return NOTHING, [f"{MANIFEST} is not a regular file"]
    with os.fdopen(fd, "rb") as file:
        raw = file.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        return NOTHING, [f"{MANIFEST} is over {MAX_MANIFEST_BYTES // 1024} KiB"]
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return NOTHING, [f"{MANIFEST} is not valid JSON ({exc})"]
    return catalogue.parse_manifest(data)


def provision(
    platform: Platform, job: Job, manifest: catalogue.Manifest, write: Callable[[str], None]
) -> dict[str, str]:
    """Provision the declared addons the app lacks (first deployment only); the variables
    they set, for the release to start with."""
    if not job.first or not manifest.addons or job.pusher is None:
        return {}
    write(f"-----> Provisioning the addons {MANIFEST} declares")
    try:
        done = addons_service.provision_declared(
            db=platform.db,
            servers=platform.addons,
            owner=job.pusher,
            app_name=job.app_name,
            declared=manifest.addons,
        )
    except DockyardError as exc:
        raise BuildError(
            f"The addons {MANIFEST} declares could not be provisioned: {exc.message}"
        ) from None
    environment: dict[str, str] = {}
    for provisioned in done:
        addon = provisioned.addon
        write(
            f"       {addon.provider} ({addon.plan}), {addon.id}: {', '.join(provisioned.variables)}"
        )
        environment.update(provisioned.environment)
    if not done:
        write("       The app has them already.")
    return environment


def run_hook(
    supervisor: Supervisor,
    launch: Launch,
    command: str,
    *,
    write: Callable[[str], None],
    cancelled: Callable[[], bool],
    timeout: float,
) -> None:
    """Run the postdeploy hook of the launched release to its end; raise ``HookError``
    (its output logged first) unless it exits 0."""
    write(f"-----> Running the postdeploy hook: {command}")
    spec = supervisor.hook_spec(launch, command=command)
    try:
        handle = supervisor.runtime.start(spec)
    except BootError as exc:
        raise HookError(f"The postdeploy hook could not be started: {exc.message}") from None
    deadline = time.monotonic() + timeout
    status: int | None = None
    output = _Output(spec.log_path)
    try:
        while (status := supervisor.runtime.poll(handle)) is None:
            lines = output.new_lines()
            for line in lines:
                write(f"       {line}")
            if cancelled():
                raise BootError(
                    "The deployment was cancelled during its postdeploy hook.", timed_out=False
                )
            if time.monotonic() > deadline:
                break
            if not lines:  # while it prints, read on at once: its log file rotates
                time.sleep(0.1)
    finally:
        supervisor.runtime.stop(handle, grace=0)  # its output is all written once it stopped
        for line in output.new_lines(final=True):
            write(f"       {line}")
    if status is None:
        raise HookError(
            f"The postdeploy hook did not end within {timeout:g} seconds: it was stopped."
        )
    if status != 0:
        raise HookError(
            f"The postdeploy hook failed (exit status {status}): the new release does not serve."
        )
    write("       The postdeploy hook succeeded.")


class _Output:
    """The hook's log file, read as it grows: each line once, as the hook wrote it, across
    the file's rotations (a hook may print far more than one file holds)."""

    def __init__(self, path: Path) -> None:
        self._tail: LogTail | None = LogTail(path)

    def new_lines(self, *, final: bool = False) -> list[str]:
        tail = self._tail
        if tail is None:  # read to its end already
            return []
        lines = [parse(record).text for record in tail.new_records(final=final)]
        if final:
            tail.close()
            self._tail = None
        return lines
