"""``LocalAddonServers``: each addon a server process of its own, sandboxed, in its app's
network namespace, restarted when it dies.

Isolation, the point of this module: the server runs as the addon's own unprivileged uid
(its data directory, 0700, is readable by nobody else, the app included) in a bubblewrap
sandbox that sees only that directory, and listens on 127.0.0.1 *inside the app's
network namespace* (``dockyard.isolation``). Only processes in that namespace reach it:
the app's instances, one-offs and postdeploy scripts. Another app's 127.0.0.1 is its
own, and the host's firewall refuses traffic between namespaces, so another app cannot
connect even with the URL and password. Without network isolation (not root, or turned
off) the server listens on the host's loopback on a port of its own and the password is
the only barrier, as for everything else then (the server warns at start).

Processes: bwrap dies with the thread that started it (``--die-with-parent`` is the
kernel's parent-death signal, which follows the *thread*), so servers are started only by
this object's own long-lived thread, never by a request's worker thread that may end;
one-shot commands (initdb, pg_dump, ...) run to their end in the caller's thread. A server
dies with dockyard (even on ``kill -9``); ``ensure_running`` at the next start brings it
back on the same data: PostgreSQL replays its write-ahead log, Redis its append-only file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dockyard import sandbox
from dockyard.addons import recipes
from dockyard.addons.base import AddonError, AddonSpec
from dockyard.domain import addons as catalogue
from dockyard.errors import BuildError
from dockyard.isolation import cgroups
from dockyard.isolation.apps import AppIsolation
from dockyard.runtime.local import signal_inside
from dockyard.runtime.logfile import MAX_LINE_BYTES, LogFile

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0
STEP_TIMEOUT = 600.0  # initdb, a dump or a restore
STOP_GRACE = 10.0
BACKOFF_START = 1.0
BACKOFF_CAP = 30.0
TICK_SECONDS = 0.5
LOG_TAIL = 15
PRIVATE_TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs, nobody else's
# Host ports for addons when apps share the host's network: probed free, remembered.
HOST_PORTS = range(27000, 32000)


@dataclass(eq=False)
class _Server:
    spec: AddonSpec
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    failed: str = ""  # why the last start failed, for a caller waiting on it
    failures: int = 0
    restart_at: float | None = None
    started_at: float = 0.0


class _Call:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:  # handed to the waiting caller, who raises it
            self.error = exc
        finally:
            self.done.set()


class LocalAddonServers:
    def __init__(self, *, root: Path, isolation: AppIsolation | None) -> None:
        self.root = root  # one directory per addon, and its server's log beside it
        self.isolation = isolation
        self._lock = threading.Lock()
        self._servers: dict[str, _Server] = {}
        self._addon_locks: dict[str, threading.Lock] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[_Call] = []  # for the supervision thread to run

    # -- the AddonServers interface ---------------------------------------------------------

    def host(self, app_uid: int) -> str:
        return recipes.LISTEN

    def free_port(self, provider: str) -> int:
        chosen = catalogue.PROVIDERS[provider]
        if self.isolation is not None:
            return chosen.default_port  # the app's namespace holds one server per provider
        with self._lock:
            taken = {server.spec.port for server in self._servers.values()}
        for port in HOST_PORTS:
            if port in taken:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((recipes.LISTEN, port))
                except OSError:
                    continue
            return port
        raise AddonError("No free port is left for an addon on this host.")

    def provision(self, spec: AddonSpec) -> None:
        with self._addon_lock(spec.id):
            data = self.data_dir(spec.id)
            if data.exists():
                shutil.rmtree(data)  # a half-made earlier attempt
            self._make_data_dir(spec)
            if spec.provider == catalogue.POSTGRESQL:
                for step in recipes.postgresql_init(spec):
                    self._run_step(
                        spec, step.argv, stdin=step.stdin, what="initialising PostgreSQL"
                    )
                hba = data / "pgdata" / "pg_hba.conf"
                hba.write_text(recipes.PG_HBA)
                _own(hba, spec.host_uid, 0o600)
            else:
                self._write_redis_config(spec)
            self._start_and_wait(spec)

    def ensure_running(self, spec: AddonSpec) -> None:
        with self._lock:
            server = self._servers.get(spec.id)
            if server is not None:
                return
            self._servers[spec.id] = _Server(spec, restart_at=time.monotonic())
        if spec.provider == catalogue.REDIS and self.data_dir(spec.id).exists():
            self._write_redis_config(spec)  # the plan's limits as they are now
        self._wake.set()

    def restart(self, spec: AddonSpec) -> None:
        with self._addon_lock(spec.id):
            self._stop_server(spec.id)
            if spec.provider == catalogue.REDIS:
                self._write_redis_config(spec)
            self._start_supervised(spec)

    def remove(self, spec: AddonSpec) -> None:
        with self._addon_lock(spec.id):
            self._stop_server(spec.id)
            shutil.rmtree(self.data_dir(spec.id), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.log_path(spec.id).unlink()
            cgroups.remove_app_groups(spec.host_uid)  # the groups its sandboxes were in
        with self._lock:
            self._addon_locks.pop(spec.id, None)

    def backup(self, spec: AddonSpec, target: Path) -> None:
        if spec.provider == catalogue.POSTGRESQL:
            with open(target, "wb") as out:
                self._run_step(
                    spec, recipes.postgresql_dump(spec), stdout=out, what="dumping the database",
                    env={"PGPASSWORD": spec.password}, data=False,
                )  # fmt: skip
            return
        with tempfile.TemporaryDirectory(dir=self.root) as scratch:
            os.chmod(scratch, 0o700)
            os.chown(scratch, spec.host_uid, spec.host_uid) if os.geteuid() == 0 else None
            self._run_step(
                spec, recipes.redis_dump(spec, "/backup/dump.rdb"), what="taking a snapshot",
                env={"REDISCLI_AUTH": spec.password}, data=False,
                mounts=[sandbox.Mount(Path(scratch), "/backup", writable=True)],
            )  # fmt: skip
            shutil.copyfile(Path(scratch) / "dump.rdb", target)

    def restore(self, spec: AddonSpec, source: Path) -> None:
        if spec.provider == catalogue.POSTGRESQL:
            with open(source, "rb") as dump:
                self._run_step(
                    spec, recipes.postgresql_load(spec), stdin_file=dump,
                    what="restoring the database", env={"PGPASSWORD": spec.password}, data=False,
                )  # fmt: skip
            return
        # Redis reads its data at start only, and with append-only persistence on it reads
        # the append-only files, not dump.rdb: stop, make the snapshot the base of a new
        # append-only file set (Redis 7's own layout: an RDB base and a manifest), start.
        with self._addon_lock(spec.id):
            self._stop_server(spec.id)
            data = self.data_dir(spec.id)
            aof = data / "appendonlydir"
            shutil.rmtree(aof, ignore_errors=True)
            aof.mkdir(mode=0o700)
            _own(aof, spec.host_uid, 0o700)
            for name, content in recipes.redis_aof_from_snapshot(source.read_bytes()).items():
                (aof / name).write_bytes(content)
                _own(aof / name, spec.host_uid, 0o600)
            self._start_supervised(spec)

    def version(self, provider: str) -> str:
        return recipes.version(provider)

    # -- supervision ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread that starts servers and restarts those that die."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dockyard-addons", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop every server cleanly (their data is flushed); ``ensure_running`` at the
        next start brings them back."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            ids = list(self._servers)
        for addon_id in ids:
            self._stop_server(addon_id)

    def wait_until_ready(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        with self._lock:
            servers = list(self._servers.values())
        for server in servers:
            server.ready.wait(max(0.0, deadline - time.monotonic()))
        return [server.spec.id for server in servers if not server.ready.is_set()]

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pending, self._pending = self._pending, []
            for call in pending:
                call.run()
            try:
                self._tick()
            except Exception:
                log.exception("addon supervision pass failed")
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            servers = list(self._servers.values())
        now = time.monotonic()
        for server in servers:
            lock = self._addon_lock(server.spec.id)
            if not lock.acquire(blocking=False):
                continue  # being provisioned, restored or removed: next time
            try:
                if self._stop.is_set() or self._servers.get(server.spec.id) is not server:
                    continue
                self._supervise(server, now)
            finally:
                lock.release()

    def _supervise(self, server: _Server, now: float) -> None:
        proc = server.proc
        if proc is not None:
            status = proc.poll()
            if status is None:
                if server.ready.is_set() and now - server.started_at > 60:
                    server.failures = 0
                return
            sandbox.terminate(proc, grace_seconds=0)
            if server.reader is not None:
                server.reader.join(5)
            reason = f"{server.spec.provider} server of {server.spec.app_name} exited ({status})"
            self._failed(server, now, reason)
            return
        if server.restart_at is None or now < server.restart_at:
            return
        try:
            self._launch(server)
        except AddonError as exc:
            self._failed(server, now, exc.message)

    def _failed(self, server: _Server, now: float, reason: str) -> None:
        delay = min(BACKOFF_CAP, BACKOFF_START * 2**server.failures)
        server.failures += 1
        server.proc, server.reader, server.restart_at = None, None, now + delay
        server.failed = f"{reason}; last lines: {' | '.join(self._tail(server.spec.id))}"
        server.ready.clear()
        log.warning("addon %s: %s; restarting in %g s", server.spec.id, reason, delay)
        self._note(server.spec.id, f"dockyard: {reason}; restarting in {delay:g} s")

    def _launch(self, server: _Server) -> None:
        spec = server.spec
        argv = (
            recipes.postgresql_run(spec)
            if spec.provider == catalogue.POSTGRESQL
            else recipes.redis_run()
        )
        try:
            proc = sandbox.start(self._sandbox(spec, data=True), argv)
        except BuildError as exc:
            raise AddonError(f"The {spec.provider} server could not start: {exc.message}") from None
        server.proc, server.started_at, server.restart_at = proc, time.monotonic(), None
        server.failed = ""
        assert proc.stdout is not None
        server.reader = threading.Thread(
            target=self._copy_output,
            args=(proc.stdout, spec, server.ready),
            name=f"addon log {spec.id}",
            daemon=True,
        )
        server.reader.start()

    def _copy_output(self, stream: IO[bytes], spec: AddonSpec, ready: threading.Event) -> None:
        marker = recipes.READY[spec.provider]
        out = LogFile(self.log_path(spec.id))
        try:
            with contextlib.suppress(OSError, ValueError):
                while line := stream.readline(MAX_LINE_BYTES):
                    out.write(line)
                    if marker in line:
                        ready.set()
        finally:
            out.close()

    def _start_and_wait(self, spec: AddonSpec) -> None:
        """Have the supervision thread start the server, and wait until it accepts
        connections (the caller holds the addon's lock: the thread's passes skip it)."""
        server = _Server(spec)
        with self._lock:
            self._servers[spec.id] = server
        try:
            self._in_thread(lambda: self._launch(server))
            deadline = time.monotonic() + READY_TIMEOUT
            while not server.ready.wait(0.05):
                assert server.proc is not None
                if server.proc.poll() is not None:
                    if server.reader is not None:
                        server.reader.join(5)
                    raise AddonError(
                        f"The {spec.provider} server stopped while starting: "
                        + " | ".join(self._tail(spec.id))
                    )
                if time.monotonic() > deadline:
                    raise AddonError(
                        f"The {spec.provider} server did not start within {READY_TIMEOUT:g} "
                        f"seconds. Its last lines: {' | '.join(self._tail(spec.id))}"
                    )
        except BaseException:
            self._stop_server(spec.id)
            raise

    def _start_supervised(self, spec: AddonSpec) -> None:
        """``_start_and_wait`` for an addon that exists: if it does not start, it stays
        supervised (retried with backoff), being still the app's database."""
        try:
            self._start_and_wait(spec)
        except AddonError:
            with self._lock:
                self._servers[spec.id] = _Server(spec, restart_at=time.monotonic() + 1)
            raise

    def _in_thread(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the supervision thread and wait for it; its error is raised here."""
        self.start()
        call = _Call(fn)
        with self._lock:
            self._pending.append(call)
        self._wake.set()
        if not call.done.wait(READY_TIMEOUT):
            raise AddonError("The addon supervisor did not answer: is the server stopping?")
        if call.error is not None:
            raise call.error

    def _stop_server(self, addon_id: str) -> None:
        with self._lock:
            server = self._servers.pop(addon_id, None)
        if server is None or server.proc is None:
            return
        proc = server.proc
        # PostgreSQL's fast shutdown is SIGINT; Redis saves on SIGTERM. Either way the
        # signal goes to the server inside the sandbox: bwrap itself would SIGKILL it.
        signum = signal.SIGINT if server.spec.provider == catalogue.POSTGRESQL else signal.SIGTERM
        if proc.poll() is None and signal_inside(proc.pid, signum):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_GRACE)
        sandbox.terminate(proc, grace_seconds=0)
        if server.reader is not None:
            server.reader.join(5)

    # -- helpers ----------------------------------------------------------------------------

    def data_dir(self, addon_id: str) -> Path:
        return self.root / addon_id

    def log_path(self, addon_id: str) -> Path:
        return self.root / f"{addon_id}.log"

    def _make_data_dir(self, spec: AddonSpec) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # noqa: S103 - traversable by the addons' uids, not listable
        data = self.data_dir(spec.id)
        data.mkdir(mode=0o700)
        _own(data, spec.host_uid, 0o700)

    def _write_redis_config(self, spec: AddonSpec) -> None:
        config = self.data_dir(spec.id) / "redis.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(recipes.redis_config(spec))
        _own(config, spec.host_uid, 0o600)

    def _sandbox(
        self,
        spec: AddonSpec,
        *,
        data: bool,
        env: dict[str, str] | None = None,
        mounts: Sequence[sandbox.Mount] = (),
    ) -> sandbox.SandboxSpec:
        netns = None
        if self.isolation is not None:
            netns = self.isolation.sandbox_netns(spec.app_uid)
        binds = [sandbox.Mount(self.data_dir(spec.id), recipes.DATA, writable=True)] if data else []
        return sandbox.SandboxSpec(
            host_uid=spec.host_uid,
            mounts=[*binds, *mounts],
            env={"PATH": "/usr/bin:/bin", "HOME": PRIVATE_TMP, "LANG": "C.UTF-8", **(env or {})},
            cwd=recipes.DATA if data else PRIVATE_TMP,
            limits=sandbox.Limits(
                max_processes=spec.max_connections + 64,
                memory_bytes=(spec.memory_mb + 64) * 1024 * 1024,
                max_file_bytes=64 * 1024**3,
            ),
            netns=netns,
            hostname=f"{spec.provider}-addon",
        )

    def _run_step(
        self,
        spec: AddonSpec,
        argv: list[str],
        *,
        what: str,
        stdin: bytes = b"",
        stdin_file: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        env: dict[str, str] | None = None,
        data: bool = True,
        mounts: Sequence[sandbox.Mount] = (),
    ) -> None:
        try:
            proc = sandbox.start(
                self._sandbox(spec, data=data, env=env, mounts=mounts),
                argv,
                stdin=stdin_file.fileno() if stdin_file is not None else subprocess.PIPE,
                stdout=stdout.fileno() if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except BuildError as exc:
            raise AddonError(f"{what.capitalize()} failed: {exc.message}") from None
        try:
            out, err = proc.communicate(None if stdin_file is not None else stdin, STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AddonError(f"{what.capitalize()} took over {STEP_TIMEOUT:g} seconds.") from None
        finally:
            sandbox.terminate(proc, grace_seconds=0)
        if proc.returncode != 0:
            text = ((out or b"") + (err or b"")).decode("utf-8", "replace")
            text = text.replace(spec.password, "****")  # never in a message
            lines = [line for line in text.splitlines() if line.strip()][-LOG_TAIL:]
            raise AddonError(
                f"{what.capitalize()} failed (exit status {proc.returncode}): "
                + (" | ".join(lines) or "no output")
            )

    def _tail(self, addon_id: str) -> list[str]:
        try:
            lines = self.log_path(addon_id).read_text(errors="replace").splitlines()
        except OSError:
            return []
        return lines[-LOG_TAIL:]

    def _note(self, addon_id: str, text: str) -> None:
        out = LogFile(self.log_path(addon_id))
        try:
            out.write(text)
        finally:
            out.close()

    def _addon_lock(self, addon_id: str) -> threading.Lock:
        with self._lock:
            return self._addon_locks.setdefault(addon_id, threading.Lock())


def _own(path: Path, uid: int, mode: int) -> None:
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
