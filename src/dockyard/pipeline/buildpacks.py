"""Run Heroku/Scalingo buildpacks (API v2) over an unpacked app, each step sandboxed.

Which buildpacks run, in this order of precedence:

1. the app variable ``BUILDPACK_URL``: that one buildpack (its ``bin/detect`` must accept);
2. a ``.buildpacks`` file in the app: every URL (or built-in name, such as ``go``) in it,
   in order, as Scalingo's multi-buildpack runs them: each one's ``bin/detect`` just
   before its compile, one that does not accept the app skipped with a line in the log,
   and the default process types of the last one compiled;
3. otherwise each built-in buildpack in ``builtins.BUILTIN_BUILDPACKS`` order (detected
   by dockyard itself, see ``builtins``); the first that accepts wins.

Each step (``bin/detect BUILD``, ``bin/compile BUILD CACHE ENV_DIR``, ``bin/release
BUILD``) runs in a sandbox of its own (``executor``: bubblewrap on the host, or a
container of the stack image when apps run in containers) that sees::

    /app                  the app (BUILD_DIR), writable; the runtime mounts the slug here too
    /cache                this app's deployment cache, writable
    /env                  ENV_DIR: one file per app variable, read-only
    /buildpack            the buildpack, read-only
    /opt/dockyard/bin/uv  our uv binary, read-only, on PATH
    /opt/dockyard/go      for a built-in buildpack that needs it (``Builtin.toolchain``),
                          a Go release from the host's store (``toolchains``), read-only;
                          compile only, named by ``DOCKYARD_GO``
    /tmp                  private, empty; HOME

and an environment built from nothing (``build_environment``): the app's variables, the
CA bundle variables the package index proxy needs, and nothing of the platform's.

dockyard's runner gives the steps a root directory of their own (``sandbox_root``): in
bubblewrap, /app and /cache are then plain directories of one mount instead of two bind
mounts, so compile can hard-link between them; ``/`` itself stays root's and unwritable.
(A container has the stack as its ``/``: /app and /cache are two mounts there.)

Output is streamed to ``log`` line by line while it happens. A step that fails, runs out
of time or is cancelled ends the build with a ``BuildError`` that says which and what to
try; the step (and every process started in it) is gone before the error is raised.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from dockyard import sandbox
from dockyard.domain.procfile import ProcfileError, parse_procfile
from dockyard.errors import BuildError
from dockyard.pipeline import golang, keep, toolchains
from dockyard.pipeline.builtins import (
    BUILTIN_BUILDPACKS,
    BUILTIN_NAMES,
    Builtin,
    supported_languages,
)
from dockyard.pipeline.executor import (
    BubblewrapExecutor,
    Step,
    StepExecutor,
    UnsandboxedExecutor,
)

BUILTIN_ROOT = Path(__file__).resolve().parent.parent / "buildpacks"


APP_MOUNT = "/app"
CACHE_MOUNT = "/cache"
ENV_MOUNT = "/env"
BUILDPACK_MOUNT = "/buildpack"
TOOLS_MOUNT = "/opt/dockyard/bin"
GO_MOUNT = "/opt/dockyard/go"
TOOLCHAIN_STAGING_MOUNT = "/toolchain"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STACK = "dockyard-debian-12"
# The sandbox's own private tmpfs: caches tools keep in HOME never land in the slug.
SANDBOX_HOME = "/tmp"  # noqa: S108

MAX_LINE_CHARS = 8192
FAILURE_TAIL_LINES = 25
MAX_CONTROL_FILE_BYTES = 64 * 1024  # Procfile, .buildpacks
MAX_RELEASE_BYTES = 1024 * 1024

# bin/compile, then bin/release if there is one ("" if not), in one step. The step's
# stdout becomes fd 3 here and release's stdout; everything else (compile's stdout and
# stderr, release's stderr) goes to its stderr, the log. Compile's exit status goes first
# on fd 3, so that a failure is put down to the step that failed (the step's own status
# is the last command's).
_COMPILE_THEN_RELEASE = (
    "/bin/sh",
    "-c",
    """exec 3>&1 1>&2 0</dev/null
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
    # The host's toolchain store (``toolchains``); None: a store in the scratch directory,
    # so each build installs what it needs.
    toolchains_dir: Path | None = None
    # The app's network namespace (``dockyard.isolation``): every step of every buildpack
    # runs in it, so a build reaches what the app's instances do and nothing more.
    netns: Path | None = None
    # How the steps run (``executor``; ``dockyard.bootstrap`` picks it). None: bubblewrap,
    # or a plain process group when ``sandbox_enabled`` is False.
    executor: StepExecutor | None = None
    # The app's name: a container step runs on the app's network.
    app: str = ""


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
    listed: bool = False  # named in .buildpacks: detected just before its compile


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
    compiled = []
    for pack in packs:
        if pack.listed and not runner.detect(pack, required=True):
            runner.log(f" !     {pack.name} does not accept this app (bin/detect): skipped")
            continue
        _merge_release(release, runner.compile_and_release(pack))
        compiled.append(pack)
    if not compiled:
        raise BuildError(
            "None of the buildpacks listed in .buildpacks accepts this app (each one's "
            "bin/detect said no). Check the list, or remove .buildpacks to let dockyard "
            "choose a built-in buildpack."
        )
    try:
        procfile = parse_procfile(_read_app_file(ctx.app_dir, "Procfile") or "")
    except ProcfileError as exc:
        raise BuildError(f"{exc}.") from None
    process_types = dict(procfile)
    for name, command in release.process_types.items():
        process_types.setdefault(name, command)
    return BuildResult(
        buildpacks=[pack.name for pack in compiled],
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


class ReleaseYamlError(ValueError):
    """``bin/release`` printed something that is not the YAML a buildpack must print."""


def parse_release(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(default_process_types, config_vars)`` from ``bin/release`` YAML output.

    Buildpacks print two mappings of scalars (and maybe an ``addons`` list, which dockyard
    does not provide and ignores). Raises ``ReleaseYamlError`` saying what is wrong.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ReleaseYamlError(f"it is not valid YAML ({_yaml_problem(exc)})") from None
    if document is None:
        return {}, {}
    if not isinstance(document, dict):
        raise ReleaseYamlError("it is not a YAML mapping")
    return (
        _scalar_mapping(document, "default_process_types"),
        _scalar_mapping(document, "config_vars"),
    )


def _scalar_mapping(document: dict[object, object], section: str) -> dict[str, str]:
    mapping = document.get(section)
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ReleaseYamlError(f"{section} is not a mapping")
    values: dict[str, str] = {}
    for name, value in mapping.items():
        if isinstance(value, dict | list):
            raise ReleaseYamlError(f"{section}.{name} is not a single value")
        values[_yaml_text(name)] = _yaml_text(value)
    return values


def _yaml_text(value: object) -> str:
    # Unquoted YAML scalars load as numbers, booleans or null; a variable or a command
    # wants the text that was written (``true``, not Python's ``True``).
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or "unreadable"
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


def _merge_release(into: _Release, release: _Release) -> None:
    # The last buildpack's release says the default process types (Scalingo's
    # multi-buildpack); variables add up, later ones winning.
    into.process_types = dict(release.process_types)
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
            return [replace(runner.resolve(u, fetch_buildpack), listed=True) for u in urls]
    for builtin in BUILTIN_BUILDPACKS:
        pack = runner.resolve(builtin.name, fetch_buildpack)
        if runner.detect(pack, required=False):
            return [pack]
    raise BuildError(
        "No buildpack matched this app: dockyard did not recognise its language. "
        f"Its built-in buildpacks support {supported_languages()}. "
        "Add the file for the app's language at the root of the archive, or name a "
        "buildpack in BUILDPACK_URL or in a .buildpacks file."
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
        self.executor = ctx.executor or (
            BubblewrapExecutor() if ctx.sandbox_enabled else UnsandboxedExecutor()
        )
        self.sandboxed = not self.executor.host_paths
        # Where the cache is while compile runs: moved into a shared root (``_cache_in_root``).
        self.cache_now = ctx.cache_dir

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
            not self.sandboxed or _blocking_dir(self.uv, ctx.host_uid) is not None
        ):
            # Without a sandbox there is no /opt/dockyard/bin: PATH gets this directory.
            # With one, uv lives somewhere the sandbox uid cannot reach: give it a copy.
            target = self.tools_dir / "uv"
            if self.sandboxed:
                shutil.copy2(self.uv, target)
            else:
                target.symlink_to(self.uv)
            self.uv = target
        for path in (ctx.app_dir, ctx.cache_dir, ctx.scratch_dir):
            blocked = _blocking_dir(path, ctx.host_uid) if self.sandboxed else None
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
            if self.sandboxed and _blocking_dir(path, self.ctx.host_uid) is not None:
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
        lent = self._lend_toolchain(pack)
        with self._cache_in_root():
            status = self._run(
                pack,
                argv,
                on_output=show,
                on_release_output=out.append,
                with_cache=True,
                toolchain=lent,
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
        try:
            process_types, config_vars = parse_release("\n".join(yaml_lines))
        except ReleaseYamlError as exc:
            raise BuildError(
                f"The {pack.name} buildpack's release step printed output dockyard cannot"
                f" read: {exc}. bin/release must print YAML and exit 0."
            ) from None
        return _Release(process_types, config_vars)

    # -- running -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _cache_in_root(self) -> Iterator[None]:
        """With a sandbox root, the cache is moved under it while compile runs (a rename:
        same file system), and back where the caller keeps it afterwards."""
        root = self.ctx.sandbox_root if self.executor.shares_root else None
        if root is None:
            yield
            return
        inside = root / CACHE_MOUNT.lstrip("/")
        self.ctx.cache_dir.rename(inside)
        self.cache_now = inside
        try:
            yield
        finally:
            inside.rename(self.ctx.cache_dir)
            self.cache_now = self.ctx.cache_dir

    def _inside(self, what: str) -> str:
        """A path as the buildpack sees it: mount points, or host paths when unsandboxed."""
        if self.sandboxed:
            return {"app": APP_MOUNT, "cache": CACHE_MOUNT, "env": ENV_MOUNT}[what]
        return str(
            {"app": self.ctx.app_dir, "cache": self.ctx.cache_dir, "env": self.env_dir}[what]
        )

    def _script(self, pack: _Buildpack, step: str) -> str:
        if self.sandboxed:
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
        toolchain: toolchains.Lent | None = None,
    ) -> int:
        """Run ``argv`` as a step of ``pack``; returns its exit status. Its output goes to
        ``on_output`` line by line. With ``on_release_output``, its stdout goes there
        instead (``_COMPILE_THEN_RELEASE`` makes it release's), at most
        ``MAX_RELEASE_BYTES``."""
        self._check_time()
        return self._execute(
            self._step(pack, argv, with_cache=with_cache, toolchain=toolchain),
            on_output=on_output,
            on_release_output=on_release_output,
        )

    def _execute(
        self,
        step: Step,
        *,
        on_output: Callable[[str], None],
        on_release_output: Callable[[str], None] | None = None,
    ) -> int:
        lines = _LineBuffer(on_output)
        release: Callable[[bytes], None] | None = None
        release_lines = _LineBuffer(on_release_output) if on_release_output else None
        if release_lines is not None:
            received = [0]

            def release(chunk: bytes) -> None:
                received[0] += len(chunk)
                if received[0] > MAX_RELEASE_BYTES:
                    raise BuildError(
                        f"A buildpack step printed more than {MAX_RELEASE_BYTES} bytes."
                    )
                release_lines.feed(chunk)

        status = self.executor.run(step, output=lines.feed, release=release, check=self._check_time)
        lines.close()
        if release_lines is not None:
            release_lines.close()
        return status

    def _step(
        self,
        pack: _Buildpack,
        argv: list[str],
        *,
        with_cache: bool,
        toolchain: toolchains.Lent | None = None,
    ) -> Step:
        """A step of ``pack``. Only compile (and release after it) gets the cache: detect
        is given the build directory alone."""
        ctx = self.ctx
        if not self.sandboxed:
            home = ctx.scratch_dir / "home"
            sandbox.prepare_writable_dir(home, ctx.host_uid)
            env = build_environment(ctx.env, tools_dir=str(self.tools_dir), home=str(home))
            if toolchain is not None:
                env["DOCKYARD_GO"] = str(toolchain.root)
            return Step(
                argv=argv, env=env, mounts=(), cwd=str(ctx.app_dir), host_uid=ctx.host_uid,
                limits=ctx.limits,
            )  # fmt: skip
        mounts = [sandbox.Mount(ctx.app_dir, APP_MOUNT, writable=True)]
        if with_cache:
            mounts.append(sandbox.Mount(self.cache_now, CACHE_MOUNT, writable=True))
        mounts += [
            sandbox.Mount(self.env_dir, ENV_MOUNT),
            sandbox.Mount(pack.path, BUILDPACK_MOUNT),
        ]
        if self.uv is not None:
            mounts.append(sandbox.Mount(self.uv, f"{TOOLS_MOUNT}/uv"))
        env = build_environment(ctx.env)
        if toolchain is not None:
            mounts.append(sandbox.Mount(toolchain.root, GO_MOUNT))
            env["DOCKYARD_GO"] = GO_MOUNT
        return Step(
            argv=argv,
            env=env,
            mounts=mounts,
            cwd=APP_MOUNT,
            host_uid=ctx.host_uid,
            limits=ctx.limits,
            hostname="build",
            app=ctx.app,
            netns=ctx.netns,
            root=ctx.sandbox_root if self.executor.shares_root else None,
            time_limit=self.deadline - time.monotonic(),
        )

    # -- toolchains ----------------------------------------------------------------------

    def _lend_toolchain(self, pack: _Buildpack) -> toolchains.Lent | None:
        """The toolchain a built-in buildpack needs, installed once per host (``toolchains``)."""
        if pack.builtin is None or pack.builtin.toolchain != "go":
            return None
        store_dir = self.ctx.toolchains_dir or self.ctx.scratch_dir / "toolchains"
        return toolchains.lend_go(
            golang.requested_go(self.ctx.app_dir, self.ctx.env),
            store=toolchains.GoStore(store_dir),
            install=self._install_toolchain,
            log=self.log,
            check=self._check_time,
        )

    def _install_toolchain(self, staging: Path, requirement: str) -> int:
        """``uv pip install --target`` into ``staging`` in a step of its own: it sees
        neither the app nor its variables (an app's UV_INDEX_URL must not choose what every
        app's builds will run), only the staging directory and uv."""
        if self.uv is None:
            raise BuildError("dockyard's uv is missing, so no toolchain can be installed.")
        sandbox.prepare_writable_dir(staging, self.ctx.host_uid)
        inside = TOOLCHAIN_STAGING_MOUNT if self.sandboxed else str(staging)
        uv = f"{TOOLS_MOUNT}/uv" if self.sandboxed else str(self.uv)
        argv = [uv, "pip", "install", "--target", inside, "--no-deps", "--no-cache"]
        argv += ["--no-compile", "--python", "/usr/bin/python3", requirement]
        if toolchains.index_url() != toolchains.DEFAULT_INDEX:
            argv[3:3] = ["--default-index", toolchains.index_url()]
        env = build_environment({})
        env["UV_LINK_MODE"] = "copy"  # its temporary cache is on another file system
        mounts = []
        if self.sandboxed:
            mounts = [
                sandbox.Mount(staging, TOOLCHAIN_STAGING_MOUNT, writable=True),
                sandbox.Mount(self.uv, f"{TOOLS_MOUNT}/uv"),
            ]
        step = Step(
            argv=argv,
            env=env,
            mounts=mounts,
            cwd=inside,
            host_uid=self.ctx.host_uid,
            limits=self.ctx.limits,
            hostname="toolchain",
            app=self.ctx.app,
            time_limit=self.deadline - time.monotonic(),
        )
        return self._execute(step, on_output=lambda line: self.log(f"       {line}"))

    def _check_time(self) -> None:
        if self.cancelled():
            raise BuildError("The build was cancelled.")
        if time.monotonic() > self.deadline:
            raise BuildError(
                f"The build exceeded {self.ctx.timeout:g} seconds and was stopped. "
                "Make it faster (the cache speeds up later builds), or ask the operator "
                "for a longer build timeout."
            )


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
