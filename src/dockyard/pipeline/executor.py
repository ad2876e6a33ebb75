"""How one build step runs: the interface, and the two implementations on the host.

A step is a command, its environment, the directories it sees (``Mount``: a host path at
a path inside), its working directory and its limits. ``StepExecutor.run`` runs it to its
end and says its exit status. Three implementations:

- ``BubblewrapExecutor``: a bubblewrap sandbox on the host (``dockyard.sandbox``), in the
  app's network namespace; the default;
- ``ContainerExecutor`` (``dockyard.runtime.docker.builds``): a container of the stack
  image on Docker or Podman, on the app's network, when apps run in containers;
- ``UnsandboxedExecutor``: a process group of the build uid, only when the operator
  turned the sandbox off (``DOCKYARD_SANDBOX=0``). Steps then see host paths.

``dockyard.bootstrap`` picks one; ``pipeline.buildpacks`` only speaks to this interface.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard import sandbox
from dockyard.errors import BuildError

POLL_SECONDS = 0.2
# A step whose process is over but whose pipe stays open this long has nothing more to say
# (a daemon it left holds the pipe; the sandbox's end kills it).
EXITED_PIPE_SECONDS = 1.0

Output = Callable[[bytes], None]


@dataclass(frozen=True)
class Step:
    """Everything that decides what one build step runs, sees and may use."""

    argv: Sequence[str]
    env: Mapping[str, str]
    mounts: Sequence[sandbox.Mount]
    cwd: str  # inside (the host path where the step runs, for ``UnsandboxedExecutor``)
    host_uid: int
    limits: sandbox.Limits
    hostname: str = "build"
    # The app whose network the step runs in (a container's network).
    app: str = ""
    # bubblewrap: the app's network namespace, and the directory to be the sandbox's
    # ``/``; a mount whose source is that directory's own entry at its target is not
    # mounted again (it is there already).
    netns: Path | None = None
    root: Path | None = None
    # Seconds the build has left: ``check`` stops the step then, and an executor whose
    # steps can outlive the server (containers) makes them stop on their own a little later.
    time_limit: float | None = None


class StepExecutor(ABC):
    """Runs build steps; see the module docstring."""

    # The app and the cache are directories of one root (``Step.root``) rather than two
    # mounts, so a buildpack can rename and hard-link between them.
    shares_root: bool = False
    # Steps see the host's paths, not the mount points (no sandbox).
    host_paths: bool = False

    @abstractmethod
    def run(
        self, step: Step, *, output: Output, release: Output | None, check: Callable[[], None]
    ) -> int:
        """Run ``step`` to its end; its exit status (a signal's death: minus the signal,
        or 128 + it as containers report it).

        Its stderr goes to ``output`` as it comes, and its stdout too unless ``release``
        is given, which then gets its stdout alone. ``check`` is called at least every
        ``POLL_SECONDS`` and raises to stop the step. Whether it returns or raises,
        nothing the step started is left running."""


class BubblewrapExecutor(StepExecutor):
    shares_root = True

    def run(
        self, step: Step, *, output: Output, release: Output | None, check: Callable[[], None]
    ) -> int:
        root = step.root
        mounts = [
            mount
            for mount in step.mounts
            if root is None or mount.source != root / mount.target.lstrip("/")
        ]
        spec = sandbox.SandboxSpec(
            host_uid=step.host_uid,
            mounts=mounts,
            env=step.env,
            cwd=step.cwd,
            limits=step.limits,
            hostname=step.hostname,
            root=root,
            netns=step.netns,
        )
        stderr = subprocess.PIPE if release is not None else subprocess.STDOUT
        with sandbox.spawn(spec, step.argv, stderr=stderr) as proc:
            return _pump(proc, output=output, release=release, check=check)


class UnsandboxedExecutor(StepExecutor):
    """The operator turned the sandbox off: still a scrubbed environment, the build uid,
    limits, and a process group that is killed as a whole afterwards."""

    host_paths = True

    def run(
        self, step: Step, *, output: Output, release: Output | None, check: Callable[[], None]
    ) -> int:
        stderr = subprocess.PIPE if release is not None else subprocess.STDOUT
        with _process_group(step, stderr=stderr) as proc:
            return _pump(proc, output=output, release=release, check=check)


@contextlib.contextmanager
def _process_group(step: Step, *, stderr: int) -> Iterator[subprocess.Popen[bytes]]:
    limits = step.limits

    def apply_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))

    as_root = os.geteuid() == 0
    try:
        proc = subprocess.Popen(
            list(step.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=dict(step.env),
            cwd=step.cwd,
            close_fds=True,
            start_new_session=True,
            preexec_fn=apply_limits,
            user=step.host_uid if as_root else None,
            group=step.host_uid if as_root else None,
            extra_groups=[] if as_root else None,
        )
    except OSError as exc:
        raise BuildError(
            f"The buildpack step could not be started: {exc.strerror or exc}."
        ) from exc
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _pump(
    proc: subprocess.Popen[bytes],
    *,
    output: Output,
    release: Output | None,
    check: Callable[[], None],
) -> int:
    """Feed each pipe's bytes to its handler until all close; its exit status.

    Calls ``check`` every ``POLL_SECONDS``; raising from here leaves the caller's block,
    which kills the whole step."""
    assert proc.stdout is not None
    handlers = {proc.stdout.fileno(): release or output}
    if release is not None:
        assert proc.stderr is not None
        handlers[proc.stderr.fileno()] = output
    exited_at: float | None = None
    while handlers:
        check()
        ready, _, _ = select.select(list(handlers), [], [], POLL_SECONDS)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                del handlers[fd]
                continue
            handlers[fd](chunk)
        if not ready and proc.poll() is not None:
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > EXITED_PIPE_SECONDS:
                break
    return proc.wait()
