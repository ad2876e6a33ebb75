"""Run Heroku/Scalingo buildpacks (API v2) over an unpacked app, each step sandboxed.

Which buildpacks run, in this order of precedence:

1. the app variable ``BUILDPACK_URL``: that one buildpack (its ``bin/detect`` must accept);
2. a ``.buildpacks`` file in the app: every URL in it, in order, all compiled;
3. otherwise each built-in buildpack in ``builtins.BUILTIN_BUILDPACKS`` order (detected
   by dockyard itself, see ``builtins``); the first that accepts wins.

Each step (``bin/detect BUILD``, ``bin/compile BUILD CACHE ENV_DIR``, ``bin/release
BUILD``) runs in its own bubblewrap sandbox that sees::

    /app                  the app (BUILD_DIR), writable; the runtime mounts the slug here too
    /cache                this app's deployment cache, writable
    /env                  ENV_DIR: one file per app variable, read-only
    /buildpack            the buildpack, read-only
    /opt/dockyard/bin/uv  our uv binary, read-only, on PATH
    /tmp                  private, empty; HOME

and an environment built from nothing (``build_environment``): the app's variables, the
CA bundle variables the package index proxy needs, and nothing of the platform's.

dockyard's runner gives the steps a root directory of their own (``sandbox_root``):
/app and /cache are then plain directories of one mount instead of two bind mounts, so
compile can hard-link between them; ``/`` itself stays root's and unwritable.

Output is streamed to ``log`` line by line while it happens. A step that fails, runs out
of time or is cancelled ends the build with a ``BuildError`` that says which and what to
try; the sandbox (and every process started in it) is gone before the error is raised.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import resource
import select
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dockyard import sandbox
from dockyard.domain.procfile import ProcfileError, parse_procfile
from dockyard.errors import BuildError
from dockyard.pipeline import keep
from dockyard.pipeline.builtins import BUILTIN_BUILDPACKS, BUILTIN_NAMES, Builtin

BUILTIN_ROOT = Path(__file__).resolve().parent.parent / "buildpacks"


APP_MOUNT = "/app"
CACHE_MOUNT = "/cache"
ENV_MOUNT = "/env"
BUILDPACK_MOUNT = "/buildpack"
TOOLS_MOUNT = "/opt/dockyard/bin"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STACK = "dockyard-debian-12"
# The sandbox's own private tmpfs: caches tools keep in HOME never land in the slug.
SANDBOX_HOME = "/tmp"  # noqa: S108

POLL_SECONDS = 0.2
MAX_LINE_CHARS = 8192
FAILURE_TAIL_LINES = 25
MAX_CONTROL_FILE_BYTES = 64 * 1024  # Procfile, .buildpacks
MAX_RELEASE_BYTES = 1024 * 1024

# bin/compile, then bin/release if there is one ("" if not), in one sandbox. The pipe the
# sandbox gets as its stdin becomes fd 3 here and release's stdout; compile never sees it.
# Compile's exit status goes first on that pipe, so that a failure is put down to the
# step that failed (the sandbox's own status is the last step's).
_COMPILE_THEN_RELEASE = (
    "/bin/sh",
    "-c",
    """exec 3>&0 0</dev/null
release=$1
shift
"$@" 3>&-
status=$?
echo "compiled $status" >&3
if [ "$status" -ne 0 ] || [ -z "$release" ]; then exit "$status"; fi
exec "$release" "$2" >&3 3>&-""",
    "dockyard-build",
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# App variables that would break the build tools themselves if exported into the build's
# environment (Heroku keeps the same ones out). They are still written to ENV_DIR.
_NOT_EXPORTED = frozenset(
    {"PATH", "HOME", "GIT_DIR", "CPATH", "CPPATH", "LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH"}
)


@dataclass(frozen=True)
class BuildContext:
    app_dir: Path  # host path of the unpacked app (writable by host_uid after prepare)
    cache_dir: Path  # host path of this app's deployment cache (may be empty)
    scratch_dir: Path  # host path for env dir / fetched buildpacks; removed by the caller
    env: Mapping[str, str]  # the app's variables, passed via ENV_DIR and the environment
    host_uid: int
    limits: sandbox.Limits
    timeout: float  # seconds for the whole build
    sandbox_enabled: bool = True  # False only when the operator explicitly turned it off
    # If given, each step's sandbox has this directory as its ``/``, with the app at
    # ``sandbox_root / "app"`` (``app_dir`` must be that) and, for compile only, the cache
    # moved in at ``sandbox_root / "cache"``: one mount, so a buildpack can hard-link
    # between /cache and /app (a cached virtualenv restored in milliseconds, not copied).
    # Without it, /app and /cache are two bind mounts and hard links between them fail.
    sandbox_root: Path | None = None


@dataclass(frozen=True)
class BuildResult:
    buildpacks: list[str]  # names used, in order
    process_types: dict[str, str]  # Procfile first, bin/release default_process_types second
    config_vars: dict[str, str]  # from bin/release config_vars


BuildpackFetcher = Callable[[str, Path], None]  # url -> download/clone into this empty dir


@dataclass(frozen=True)
class _Buildpack:
    name: str  # a built-in's name or the URL it came from
    path: Path  # host directory
    builtin: Builtin | None = None  # detected by dockyard itself, not by a bin/detect


@dataclass
class _Release:
    process_types: dict[str, str] = field(default_factory=dict)
    config_vars: dict[str, str] = field(default_factory=dict)


def run_buildpacks(
    ctx: BuildContext,
    *,
    log: Callable[[str], None],
    fetch_buildpack: BuildpackFetcher,
    cancelled: Callable[[], bool] = lambda: False,
    cache_ready: Callable[[], object] | None = None,
) -> BuildResult:
    """Detect, compile and release the app in ``ctx.app_dir``; see the module docstring.

    The directories the buildpacks ask dockyard to keep (``keep``) are left for the caller
    to keep (``keep.apply_requests``) once nothing of the build runs any more.

    ``cache_ready``, if given, returns once ``ctx.cache_dir`` holds the cache, owned by
    the build uid: the caller may still be filling it while the buildpacks are detected,
    which never see it. Without it, the cache directory is handed to the build uid here."""
    runner = _Runner(ctx, log=log, cancelled=cancelled)
    runner.prepare()
    packs = _choose_buildpacks(ctx, runner, fetch_buildpack)
    if cache_ready is None:
        runner.prepare_cache()
    else:
        cache_ready()
    keep.discard_requests(ctx.cache_dir)  # only this build's requests count
    release = _Release()
    for pack in packs:
        _merge_release(release, runner.compile_and_release(pack))
    try:
        procfile = parse_procfile(_read_app_file(ctx.app_dir, "Procfile") or "")
    except ProcfileError as exc:
        raise BuildError(f"{exc}.") from None
    process_types = dict(procfile)
    for name, command in release.process_types.items():
        process_types.setdefault(name, command)
    return BuildResult(
        buildpacks=[pack.name for pack in packs],
        process_types=process_types,
        config_vars=release.config_vars,
    )


def build_environment(
    app_env: Mapping[str, str], *, tools_dir: str = TOOLS_MOUNT, home: str = SANDBOX_HOME
) -> dict[str, str]:
    """The whole environment of a build step: app variables, then the platform's own.

    Built from nothing on purpose: no variable of the server process (secrets, database
    URL, launcher variables) can reach a build.
    """
    env = {
        name: value
        for name, value in app_env.items()
        if _ENV_NAME.fullmatch(name) and name not in _NOT_EXPORTED and not name.startswith("LD_")
    }
    env.update(
        {
            "PATH": f"{tools_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "STACK": STACK,
            "PYTHONUNBUFFERED": "1",
            # The package index is reached through a TLS-intercepting proxy whose CA is in
            # the system bundle; every tool needs to be told to trust it.
            "SSL_CERT_FILE": CA_BUNDLE,
            "PIP_CERT": CA_BUNDLE,
            "REQUESTS_CA_BUNDLE": CA_BUNDLE,
            "NODE_EXTRA_CA_CERTS": CA_BUNDLE,
            "UV_NATIVE_TLS": "1",
            # uv >= 0.9 renamed UV_NATIVE_TLS and warns about it unless this is set too.
            "UV_SYSTEM_CERTS": "1",
        }
    )
    return env


def parse_release(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(default_process_types, config_vars)`` from ``bin/release`` YAML output.

    Buildpacks print a tiny, fixed shape of YAML (two mappings of scalars, maybe an
    ``addons`` list); this reads that shape without a YAML dependency and ignores the rest.
    """
    sections: dict[str, dict[str, str]] = {"default_process_types": {}, "config_vars": {}}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        if not raw[0].isspace():
            key, _, rest = stripped.partition(":")
            current = sections.get(key.strip())
            rest = rest.strip()
            if current is not None and rest.startswith("{") and rest != "{}":
                for item in rest.strip("{}").split(","):
                    name, sep, value = item.partition(":")
                    if sep:
                        current[_yaml_scalar(name)] = _yaml_scalar(value)
                current = None
            continue
        if current is None or stripped.startswith("-"):
            continue
        name, sep, value = stripped.partition(":")
        if sep and name.strip():
            current[_yaml_scalar(name)] = _yaml_scalar(value)
    return sections["default_process_types"], sections["config_vars"]


def _yaml_scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        with contextlib.suppress(ValueError):
            return str(json.loads(text))
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    comment = text.find(" #")
    return text[:comment].rstrip() if comment >= 0 else text


def _merge_release(into: _Release, release: _Release) -> None:
    into.process_types.update(release.process_types)
    for name, value in release.config_vars.items():
        if name == "PATH" and "PATH" in into.config_vars:
            # Each buildpack puts its own bin directory first; keep all of them.
            seen = value.split(":")
            value = ":".join(
                seen + [p for p in into.config_vars["PATH"].split(":") if p not in seen]
            )
        into.config_vars[name] = value


def _choose_buildpacks(
    ctx: BuildContext, runner: _Runner, fetch_buildpack: BuildpackFetcher
) -> list[_Buildpack]:
    url = ctx.env.get("BUILDPACK_URL", "").strip()
    if url:
        pack = runner.resolve(url, fetch_buildpack)
        if not runner.detect(pack, required=True):
            raise BuildError(
                f"The buildpack {url} does not accept this app (its bin/detect said no). "
                "Check BUILDPACK_URL, or unset it to let dockyard choose a built-in buildpack."
            )
        return [pack]
    listed = _read_app_file(ctx.app_dir, ".buildpacks")
    if listed is not None:
        urls = [line.strip() for line in listed.splitlines()]
        urls = [u for u in urls if u and not u.startswith("#")]
        if urls:
            runner.log(f"-----> Using the {len(urls)} buildpacks listed in .buildpacks")
            return [runner.resolve(u, fetch_buildpack) for u in urls]
    for builtin in BUILTIN_BUILDPACKS:
        pack = runner.resolve(builtin.name, fetch_buildpack)
        if runner.detect(pack, required=False):
            return [pack]
    looked_for = ", ".join(f"{b.looks_for} ({b.name})" for b in BUILTIN_BUILDPACKS)
    raise BuildError(
        f"No buildpack matched this app: looked for {looked_for}. "
        "Add one of these files at the root of the archive, or set BUILDPACK_URL."
    )


def _read_app_file(app_dir: Path, name: str) -> str | None:
    """A small control file at the app's root, never following a symlink out of it.

    The app directory was written by untrusted code, and we read as root: a ``Procfile``
    that is a symlink to a platform secret must not end up in process types.
    """
    try:
        fd = os.open(app_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BuildError(
            f"{name} cannot be read: it must be a regular file ({exc.strerror})."
        ) from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuildError(f"{name} cannot be read: it must be a regular file.")
        data = file.read(MAX_CONTROL_FILE_BYTES + 1)
    if len(data) > MAX_CONTROL_FILE_BYTES:
        raise BuildError(f"{name} is larger than {MAX_CONTROL_FILE_BYTES // 1024} KiB.")
    return data.decode("utf-8", errors="replace")


def _uv_binary() -> Path | None:
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return beside
    found = shutil.which("uv")
    return Path(found) if found else None


def _blocking_dir(path: Path, uid: int) -> Path | None:
    """The first directory above ``path`` that ``uid`` cannot search, if any.

    bwrap runs as the sandbox uid, so every mount source must be reachable by it.
    """
    if os.geteuid() != 0:
        return None
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_mode & stat.S_IXOTH:
            continue
        if st.st_uid == uid and st.st_mode & stat.S_IXUSR:
            continue
        if st.st_gid == uid and st.st_mode & stat.S_IXGRP:
            continue
        return parent
    return None


class _Runner:
    """Runs buildpack steps for one build: the shared mounts, deadline and log."""

    def __init__(
        self, ctx: BuildContext, *, log: Callable[[str], None], cancelled: Callable[[], bool]
    ) -> None:
        self.ctx = ctx
        self.log = log
        self.cancelled = cancelled
        self.deadline = time.monotonic() + ctx.timeout
        self.env_dir = ctx.scratch_dir / "env"
        self.tools_dir = ctx.scratch_dir / "bin"
        self.fetched = 0
        self.uv = _uv_binary()

    # -- setup ---------------------------------------------------------------------------

    def prepare_cache(self) -> None:
        keep.give_to(self.ctx.cache_dir, self.ctx.host_uid)

    def prepare(self) -> None:
        ctx = self.ctx
        if ctx.sandbox_root is not None and ctx.app_dir != ctx.sandbox_root / "app":
            raise ValueError("with a sandbox root, the app must be in its app directory")
        sandbox.prepare_writable_dir(ctx.app_dir, ctx.host_uid)
        ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
        # The scratch dir is ours for this build; bwrap (as the sandbox uid) must pass it.
        ctx.scratch_dir.chmod(0o711)
        if self.env_dir.exists():
            shutil.rmtree(self.env_dir)
        self.env_dir.mkdir(mode=0o700)
        for name, value in self.ctx.env.items():
            # ENV_DIR files are named after the variable: a name is never a path.
            if _ENV_NAME.fullmatch(name):
                (self.env_dir / name).write_text(value, encoding="utf-8")
        sandbox.prepare_writable_dir(self.env_dir, ctx.host_uid)  # read-only in the sandbox
        self.tools_dir.mkdir(mode=0o755, exist_ok=True)
        if self.uv is not None and (
            not ctx.sandbox_enabled or _blocking_dir(self.uv, ctx.host_uid) is not None
        ):
            # Without a sandbox there is no /opt/dockyard/bin: PATH gets this directory.
            # With one, uv lives somewhere the sandbox uid cannot reach: give it a copy.
            target = self.tools_dir / "uv"
            if ctx.sandbox_enabled:
                shutil.copy2(self.uv, target)
            else:
                target.symlink_to(self.uv)
            self.uv = target
        for path in (ctx.app_dir, ctx.cache_dir, ctx.scratch_dir):
            blocked = _blocking_dir(path, ctx.host_uid) if ctx.sandbox_enabled else None
            if blocked is not None:
                raise BuildError(
                    f"The build sandbox cannot reach {path}: {blocked} is not searchable by "
                    f"the build user (uid {ctx.host_uid}). Make the data directory's build "
                    "directories traversable (chmod o+x on the directories above them)."
                )

    def resolve(self, name_or_url: str, fetch: BuildpackFetcher) -> _Buildpack:
        builtin = BUILTIN_NAMES.get(name_or_url)
        if builtin is not None:
            path = BUILTIN_ROOT / name_or_url
            if self.ctx.sandbox_enabled and _blocking_dir(path, self.ctx.host_uid) is not None:
                copy = self.ctx.scratch_dir / "buildpacks" / name_or_url
                if not copy.exists():
                    shutil.copytree(path, copy)
                path = copy
            return _Buildpack(name_or_url, path, builtin)
        self.fetched += 1
        target = self.ctx.scratch_dir / "buildpacks" / f"fetched-{self.fetched}"
        target.mkdir(parents=True)
        self.log(f"-----> Fetching buildpack {name_or_url}")
        try:
            fetch(name_or_url, target)
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(
                f"The buildpack {name_or_url} could not be fetched: {exc}. "
                "Check the URL (a git repository or a .tar.gz archive of a buildpack)."
            ) from exc
        # Archives often wrap the buildpack in one top-level directory.
        entries = list(target.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not (target / "bin").exists():
            target = entries[0]
        if not (target / "bin" / "compile").is_file():
            raise BuildError(
                f"{name_or_url} is not a buildpack: it has no bin/compile. "
                "A buildpack needs bin/detect, bin/compile and bin/release."
            )
        for step in ("detect", "compile", "release"):
            script = target / "bin" / step
            if script.is_file() and not script.is_symlink():
                # Tarballs made on some systems lose the executable bit; Heroku tolerates it.
                script.chmod(script.stat().st_mode | 0o555)
        return _Buildpack(name_or_url, target)

    # -- steps ---------------------------------------------------------------------------

    def detect(self, pack: _Buildpack, *, required: bool) -> bool:
        if pack.builtin is not None:
            if not pack.builtin.accepts(self.ctx.app_dir):
                return False
            self.log(f"-----> {pack.builtin.label} app detected")
            return True
        if not (pack.path / "bin" / "detect").is_file():
            if required:
                self.log(f"-----> {pack.name} has no bin/detect: using it as asked")
            return required
        lines: list[str] = []
        argv = [self._script(pack, "detect"), self._inside("app")]
        status = self._run(pack, argv, on_output=lines.append)
        if status != 0:
            return False
        label = next((line.strip() for line in lines if line.strip()), pack.name)
        self.log(f"-----> {label} app detected")
        return True

    def compile_and_release(self, pack: _Buildpack) -> _Release:
        """``bin/compile BUILD CACHE ENV_DIR``, then ``bin/release BUILD`` if the buildpack
        has one, in one sandbox (as a Heroku build container runs them): one sandbox less
        per build, 10-20 ms. Compile's output and release's stderr go to the log;
        release's stdout (its YAML) comes back through a pipe of its own."""
        tail: collections.deque[str] = collections.deque(maxlen=FAILURE_TAIL_LINES)

        def show(line: str) -> None:
            tail.append(line)
            self.log(line)

        has_release = (pack.path / "bin" / "release").is_file()
        release_script = self._script(pack, "release") if has_release else ""
        argv = [
            *_COMPILE_THEN_RELEASE,
            release_script,
            self._script(pack, "compile"),
            self._inside("app"),
            self._inside("cache"),
            self._inside("env"),
        ]
        out: list[str] = []
        with self._cache_in_root():
            status = self._run(
                pack, argv, on_output=show, on_release_output=out.append, with_cache=True
            )
        compiled, yaml_lines = (out[0] if out else ""), out[1:]
        if not compiled.startswith("compiled "):  # stopped before compile was over
            raise BuildError(_compile_failure(pack, status, list(tail), self.ctx.limits))
        compile_status = int(compiled.split()[1])
        if compile_status != 0:
            raise BuildError(_compile_failure(pack, compile_status, list(tail), self.ctx.limits))
        if status != 0:
            raise BuildError(
                f"The {pack.name} buildpack's release step failed (exit status {status}). "
                "Its output is above; bin/release must print YAML and exit 0."
            )
        process_types, config_vars = parse_release("\n".join(yaml_lines))
        return _Release(process_types, config_vars)

    # -- running -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _cache_in_root(self) -> Iterator[None]:
        """With a sandbox root, the cache is moved under it while compile runs (a rename:
        same file system), and back where the caller keeps it afterwards."""
        root = self.ctx.sandbox_root if self.ctx.sandbox_enabled else None
        if root is None:
            yield
            return
        inside = root / CACHE_MOUNT.lstrip("/")
        self.ctx.cache_dir.rename(inside)
        try:
            yield
        finally:
            inside.rename(self.ctx.cache_dir)

    def _inside(self, what: str) -> str:
        """A path as the buildpack sees it: mount points, or host paths when unsandboxed."""
        if self.ctx.sandbox_enabled:
            return {"app": APP_MOUNT, "cache": CACHE_MOUNT, "env": ENV_MOUNT}[what]
        return str(
            {"app": self.ctx.app_dir, "cache": self.ctx.cache_dir, "env": self.env_dir}[what]
        )

    def _script(self, pack: _Buildpack, step: str) -> str:
        if self.ctx.sandbox_enabled:
            return f"{BUILDPACK_MOUNT}/bin/{step}"
        return str(pack.path / "bin" / step)

    def _run(
        self,
        pack: _Buildpack,
        argv: list[str],
        *,
        on_output: Callable[[str], None],
        on_release_output: Callable[[str], None] | None = None,
        with_cache: bool = False,
    ) -> int:
        """Run ``argv`` in a sandbox for ``pack``; returns its exit status. Its stdout and
        stderr go to ``on_output`` line by line. With ``on_release_output``, a pipe is
        its stdin (``_COMPILE_THEN_RELEASE`` makes it release's stdout), read into that,
        at most ``MAX_RELEASE_BYTES``."""
        self._check_time()
        stdin: int = subprocess.DEVNULL
        release_pipe = os.pipe() if on_release_output is not None else None
        if release_pipe is not None:
            stdin = release_pipe[1]
        try:
            with self._spawn(pack, argv, stdin=stdin, with_cache=with_cache) as proc:
                assert proc.stdout is not None
                handlers = {proc.stdout.fileno(): on_output}
                caps = {}
                if release_pipe is not None and on_release_output is not None:
                    os.close(release_pipe[1])  # the sandbox has it; EOF once it is done
                    release_pipe = (release_pipe[0], -1)
                    handlers[release_pipe[0]] = on_release_output
                    caps[release_pipe[0]] = MAX_RELEASE_BYTES
                self._pump(proc, handlers, caps=caps)
                return proc.wait()
        finally:
            for fd in release_pipe or ():
                if fd >= 0:
                    os.close(fd)

    @contextlib.contextmanager
    def _spawn(
        self, pack: _Buildpack, argv: list[str], *, stdin: int, with_cache: bool
    ) -> Iterator[subprocess.Popen[bytes]]:
        """A step's sandbox. Only compile (and release after it) gets the cache: detect
        is given the build directory alone."""
        ctx = self.ctx
        if not ctx.sandbox_enabled:
            home = ctx.scratch_dir / "home"
            sandbox.prepare_writable_dir(home, ctx.host_uid)
            env = build_environment(ctx.env, tools_dir=str(self.tools_dir), home=str(home))
            with _unsandboxed(argv, env, ctx, stdin=stdin) as proc:
                yield proc
            return
        mounts = []
        if ctx.sandbox_root is None:  # otherwise they are directories of the root
            mounts.append(sandbox.Mount(ctx.app_dir, APP_MOUNT, writable=True))
            if with_cache:
                mounts.append(sandbox.Mount(ctx.cache_dir, CACHE_MOUNT, writable=True))
        mounts += [
            sandbox.Mount(self.env_dir, ENV_MOUNT),
            sandbox.Mount(pack.path, BUILDPACK_MOUNT),
        ]
        if self.uv is not None:
            mounts.append(sandbox.Mount(self.uv, f"{TOOLS_MOUNT}/uv"))
        spec = sandbox.SandboxSpec(
            host_uid=ctx.host_uid,
            mounts=mounts,
            env=build_environment(ctx.env),
            cwd=APP_MOUNT,
            limits=ctx.limits,
            hostname="build",
            root=ctx.sandbox_root,
        )
        with sandbox.spawn(spec, argv, stdin=stdin) as proc:
            yield proc

    def _check_time(self) -> None:
        if self.cancelled():
            raise BuildError("The build was cancelled.")
        if time.monotonic() > self.deadline:
            raise BuildError(
                f"The build exceeded {self.ctx.timeout:g} seconds and was stopped. "
                "Make it faster (the cache speeds up later builds), or ask the operator "
                "for a longer build timeout."
            )

    def _pump(
        self,
        proc: subprocess.Popen[bytes],
        handlers: dict[int, Callable[[str], None]],
        *,
        caps: Mapping[int, int],
    ) -> None:
        """Feed each pipe's lines to its handler until all close; a pipe in ``caps`` may
        carry at most that many bytes.

        Polls the deadline and ``cancelled`` every ``POLL_SECONDS``; raising from here
        leaves the caller's ``spawn`` block, which kills the whole sandbox.
        """
        buffers = {fd: _LineBuffer(handler) for fd, handler in handlers.items()}
        read = dict.fromkeys(handlers, 0)
        exited_at: float | None = None
        while buffers:
            self._check_time()
            ready, _, _ = select.select(list(buffers), [], [], POLL_SECONDS)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    buffers.pop(fd).close()
                    continue
                read[fd] += len(chunk)
                if fd in caps and read[fd] > caps[fd]:
                    raise BuildError(f"A buildpack step printed more than {caps[fd]} bytes.")
                buffers[fd].feed(chunk)
            if not ready and proc.poll() is not None:
                # The step is over and its sandbox with it; a pipe still open this long
                # after that is not going to say anything more.
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 1.0:
                    break
        for buffer in buffers.values():
            buffer.close()


class _LineBuffer:
    """Bytes in, clean text lines out: UTF-8 with replacement, no colours, no \\r redraws."""

    def __init__(self, handler: Callable[[str], None]) -> None:
        self.handler = handler
        self.pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        *lines, rest = bytes(self.pending).split(b"\n")
        self.pending = bytearray(rest)
        for line in lines:
            self._emit(line)
        if len(self.pending) > MAX_LINE_CHARS * 4:
            # A progress bar that never prints a newline: show where it is now.
            self._emit(bytes(self.pending))
            self.pending.clear()

    def close(self) -> None:
        if self.pending:
            self._emit(bytes(self.pending))
            self.pending.clear()

    def _emit(self, raw: bytes) -> None:
        raw = _ANSI.sub(b"", raw)
        if b"\r" in raw:
            # Terminal redraws: only the last state of the line is worth keeping.
            parts = [part for part in raw.split(b"\r") if part.strip()]
            raw = parts[-1] if parts else b""
        line = raw.decode("utf-8", errors="replace").rstrip()
        self.handler(line[:MAX_LINE_CHARS])


def _compile_failure(pack: _Buildpack, status: int, tail: list[str], limits: sandbox.Limits) -> str:
    if status in (-9, 137):
        why = "it was killed"
        if limits.memory_bytes:
            why += f" (did it run out of memory? builds may use {limits.memory_bytes // 2**20} MiB)"
    elif status < 0:
        why = f"it was killed by signal {-status}"
    else:
        why = f"exit status {status}"
    shown = "\n".join(f"       {line}" for line in tail if line.strip())
    return (
        f"The {pack.name} buildpack failed to compile the app ({why}).\n"
        f"The last lines of its output:\n{shown or '       (no output)'}\n"
        "What to try: read the full build output above for the first error, fix the app "
        "or its dependency files, and deploy again. If a stale cache is to blame, reset it "
        "(dockyard deployment-delete-cache) and redeploy."
    )


@contextlib.contextmanager
def _unsandboxed(
    argv: list[str], env: dict[str, str], ctx: BuildContext, *, stdin: int
) -> Iterator[subprocess.Popen[bytes]]:
    """The operator turned the sandbox off: still a scrubbed environment, the build uid,
    limits, and a process group that is killed as a whole afterwards."""
    limits = ctx.limits

    def apply_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))

    as_root = os.geteuid() == 0
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ctx.app_dir,
            close_fds=True,
            start_new_session=True,
            preexec_fn=apply_limits,
            user=ctx.host_uid if as_root else None,
            group=ctx.host_uid if as_root else None,
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
