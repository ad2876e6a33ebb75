"""What bin/compile BUILD_DIR CACHE_DIR ENV_DIR does for Python apps (buildpack API v2).

Creates BUILD_DIR/.venv with one of the stack's Pythons and installs the app's
dependencies into it with uv, whose cache lives in CACHE_DIR/uv so later builds reuse
every downloaded and built wheel. The venv is made without pip (bootstrapping pip costs
seconds and the app does not need it at run time).

Dependency files, first found wins: requirements.txt, uv.lock, poetry.lock,
Pipfile.lock, pyproject.toml's [project] table, setup.py.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

try:  # CPython's own SHA-256: hashlib would load OpenSSL first (~2 ms of every build)
    from _sha256 import sha256
except ImportError:  # renamed in Python 3.12
    from hashlib import sha256

TYPE_CHECKING = False  # typing and collections.abc cost ~5 ms of every build: not imported
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

# json, tomllib, shutil and subprocess are imported where they are needed: a build whose
# dependencies did not change needs none of them, and they cost ~12 ms of every build
# (as do site's imports, skipped with -S; -I keeps the app's PYTHON* variables out).

INDENT = "       "
# Variables of the app that would break the tools if exported (Heroku keeps them out too).
NOT_EXPORTED = {"PATH", "HOME", "GIT_DIR", "CPATH", "CPPATH", "LIBRARY_PATH", "PYTHONHOME"}


def topic(message: str) -> None:
    print(f"-----> {message}", flush=True)


def info(message: str) -> None:
    print(f"{INDENT}{message}", flush=True)


def fail(*lines: str) -> NoReturn:
    for line in lines:
        print(f" !     {line}", flush=True)
    sys.exit(1)


def run(argv: list[str], *, env: dict[str, str], cwd: Path) -> int:
    """Run a command, streaming its output indented under the current topic."""
    import subprocess

    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        print(INDENT + raw.decode("utf-8", "replace").rstrip(), flush=True)
    return proc.wait()


def find_program(name: str, search_path: str | None) -> str | None:
    """``shutil.which`` for a plain name, without importing shutil (and zlib, bz2, lzma)."""
    for directory in (search_path or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def app_environment(env_dir: Path) -> dict[str, str]:
    """This process's environment plus ENV_DIR (on Heroku, variables come only from there)."""
    env = dict(os.environ)
    if env_dir.is_dir():
        for entry in env_dir.iterdir():
            if entry.is_file() and entry.name not in NOT_EXPORTED and entry.name not in env:
                env[entry.name] = entry.read_text(encoding="utf-8", errors="replace")
    return env


# -- which Python ----------------------------------------------------------------------


def stack_pythons() -> dict[str, Path]:
    """``{"3.11": /usr/bin/python3.11, ...}``: the interpreters this stack provides."""
    found = {}
    for path in Path("/usr/bin").glob("python3.*"):
        match = re.fullmatch(r"python(3\.\d+)", path.name)
        if match and os.access(path, os.X_OK):
            found[match[1]] = path
    return dict(sorted(found.items(), key=lambda item: tuple(map(int, item[0].split(".")))))


def requested_python(build: Path) -> tuple[str, str] | None:
    """``(file, version text)`` from .python-version or runtime.txt, if the app asks."""
    for name in (".python-version", "runtime.txt"):
        path = build / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    return name, line
    return None


def choose_python(build: Path) -> Path:
    pythons = stack_pythons()
    if not pythons:
        fail("This stack has no Python 3 interpreter in /usr/bin.")
    have = ", ".join(pythons)
    asked = requested_python(build)
    if asked is None:
        version = list(pythons)[-1]
        topic(f"Using Python {version} (the newest on this stack; pin it in .python-version)")
        return pythons[version]
    source, text = asked
    match = re.fullmatch(r"(?:c?python-?)?(3)\.(\d+)(?:\.(\d+|x))?(?:\.\*)?", text, re.IGNORECASE)
    if match is None:
        fail(
            f"{source} asks for {text!r}, which is not a Python version this buildpack "
            "understands.",
            f"Write a version such as 3.11 (this stack has: {have}).",
        )
    version = f"{match[1]}.{match[2]}"
    if version not in pythons:
        fail(
            f"Python {text} ({source}) is not available on this stack.",
            f"This stack has Python {have}. Set {source} to one of these and deploy again.",
        )
    topic(f"Using Python {version} (from {source})")
    if match[3] and match[3] != "x":
        info(f"The stack's {version} is used; patch versions cannot be chosen.")
    return pythons[version]


# -- lock files to requirements ----------------------------------------------------------


def pipfile_lock_requirements(lock: Path) -> list[str]:
    import json

    data = json.loads(lock.read_text(encoding="utf-8"))
    lines = []
    for name, spec in data.get("default", {}).items():
        extras = f"[{','.join(spec['extras'])}]" if spec.get("extras") else ""
        if "git" in spec:
            ref = spec.get("ref")
            req = f"{name}{extras} @ git+{spec['git']}" + (f"@{ref}" if ref else "")
        elif "path" in spec or "file" in spec:
            target = spec.get("path") or spec["file"]
            if spec.get("editable"):
                lines.append(f"-e {target}")
                continue
            req = f"{name}{extras} @ {target}" if "://" in target else target
        else:
            req = f"{name}{extras}{spec.get('version', '')}"
        if spec.get("markers"):
            req += f" ; {spec['markers']}"
        lines.append(req)
    for source in data.get("_meta", {}).get("sources", [])[1:]:
        lines.insert(0, f"--extra-index-url {source['url']}")
    return lines


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _edge_markers(packages: list[dict]) -> dict[str, list[str | None]]:
    """For old poetry locks without per-package markers: the markers on each edge."""
    edges: dict[str, list[str | None]] = {}
    for package in packages:
        for dep, spec in package.get("dependencies", {}).items():
            specs = spec if isinstance(spec, list) else [spec]
            for one in specs:
                marker = one.get("markers") if isinstance(one, dict) else None
                edges.setdefault(_normalize(dep), []).append(marker)
    return edges


def load_toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def poetry_lock_requirements(lock: Path) -> list[str]:
    data = load_toml(lock.read_text(encoding="utf-8"))
    packages = data.get("package", [])
    edges = _edge_markers(packages)
    lines: list[str] = []
    for package in packages:
        groups = package.get("groups")
        if groups is not None and "main" not in groups:
            continue
        if groups is None and package.get("category", "main") != "main":
            continue
        name, version = package["name"], package["version"]
        source = package.get("source", {})
        kind = source.get("type")
        if kind == "git":
            ref = source.get("resolved_reference") or source.get("reference")
            req = f"{name} @ git+{source['url']}" + (f"@{ref}" if ref else "")
        elif kind in ("directory", "file"):
            if source.get("develop"):
                lines.append(f"-e {source['url']}")
                continue
            req = source["url"]
        elif kind == "url":
            req = f"{name} @ {source['url']}"
        else:
            req = f"{name}=={version}"
            if kind == "legacy":
                lines.insert(0, f"--extra-index-url {source['url']}")
        markers = _poetry_markers(package, edges)
        if markers:
            req += f" ; {markers}"
        lines.append(req)
    return lines


def _poetry_markers(package: dict, edges: dict[str, list[str | None]]) -> str | None:
    markers = package.get("markers")
    if isinstance(markers, dict):
        markers = markers.get("main")
    if markers is None and "markers" not in package:
        # Needed unconditionally unless every edge to it carries a marker.
        on_edges = edges.get(_normalize(package["name"]), [None])
        if on_edges and all(on_edges):
            markers = " or ".join(f"({m})" for m in dict.fromkeys(on_edges))
    return markers if isinstance(markers, str) else None


def has_project_table(pyproject: Path) -> bool:
    try:
        return "project" in load_toml(pyproject.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # tomllib.TOMLDecodeError is a ValueError
        return False


def requirements_are_empty(path: Path) -> bool:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return False
    return True


# -- installing ----------------------------------------------------------------------------


class Installer:
    def __init__(self, build: Path, cache: Path, env: dict[str, str]) -> None:
        self.build = build
        self.venv = build / ".venv"
        self.python = self.venv / "bin" / "python"
        self.uv = find_program("uv", env.get("PATH"))
        self.env = dict(env)
        self.env.update(
            {
                "UV_CACHE_DIR": str(cache / "uv"),
                "PIP_CACHE_DIR": str(cache / "pip"),
                # Copies: a venv linked to uv's cache would share files that every later
                # build can write (dockyard keeps the venv itself, read-only).
                "UV_LINK_MODE": "copy",
                "UV_PYTHON_DOWNLOADS": "never",
                "UV_NO_PROGRESS": "1",
                # Compiled now, because the slug may be read-only at run time.
                "UV_COMPILE_BYTECODE": "1",
                "UV_PROJECT_ENVIRONMENT": str(self.venv),
                "UV_PYTHON": str(self.python),
                "VIRTUAL_ENV": str(self.venv),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            }
        )

    def remove_stray_venv(self) -> None:
        if self.venv.exists() or self.venv.is_symlink():
            info("Removing the .venv that came with the source (it was built elsewhere)")
            if self.venv.is_dir() and not self.venv.is_symlink():
                remove_tree(self.venv)
            else:
                self.venv.unlink()

    def create_venv(self, interpreter: Path) -> None:
        # --without-pip: a venv with pip costs about 4 s; uv installs without it.
        argv = [str(interpreter), "-m", "venv", str(self.venv)]
        if self.uv:
            argv.insert(3, "--without-pip")
        if run(argv, env=self.env, cwd=self.build) != 0:
            fail("Could not create the virtualenv in .venv.")

    def install(self, what: str, args: list[str]) -> None:
        """``uv pip install ARGS`` (or pip, on a builder without uv)."""
        if self.uv:
            argv = [self.uv, "pip", "install", "--python", str(self.python), *args]
        else:
            argv = [str(self.python), "-m", "pip", "install", "--progress-bar", "off", *args]
        self.check(what, argv)

    def check(self, what: str, argv: list[str]) -> None:
        started = time.monotonic()
        status = run(argv, env=self.env, cwd=self.build)
        if status != 0:
            fail(
                f"Installing dependencies from {what} failed (exit status {status}).",
                "The lines above say which package and why. Check the package names and",
                "versions, and that they support this Python; then deploy again.",
            )
        info(f"Done in {time.monotonic() - started:.1f}s")

    def from_generated(self, what: str, lines: list[str]) -> None:
        generated = self.build / ".venv" / "dockyard-requirements.txt"
        generated.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if not lines:
            info(f"{what} lists no packages")
            return
        self.install(what, ["-r", str(generated)])


class Plan:
    """How to fill the venv: a title, a step, and what decides the result (for the cache)."""

    def __init__(self, title: str, step: Callable[[], None], inputs: str | None) -> None:
        self.title = title
        self.step = step
        self.inputs = inputs  # None: depends on local files too, so never reused


LOCAL_REFERENCE = re.compile(r"^\s*(-r|-c|-e|--requirement|--constraint|--editable|\.|/|file:)")


def plan_install(build: Path, installer: Installer) -> Plan | None:
    def read(name: str) -> str:
        return (build / name).read_text(encoding="utf-8", errors="replace")

    if (build / "requirements.txt").is_file():
        title = "Installing requirements with uv" if installer.uv else "Installing requirements"
        text = read("requirements.txt")
        if requirements_are_empty(build / "requirements.txt"):
            # Still a venv (the app's `python` is the same either way), and still kept in
            # the cache: linking it back costs ~3 ms against ~70 ms for `python -m venv`.
            nothing = lambda: info("requirements.txt lists no packages")  # noqa: E731
            return Plan(title, nothing, "requirements.txt\n" + text)
        local = any(LOCAL_REFERENCE.match(line) for line in text.splitlines())
        step = lambda: installer.install("requirements.txt", ["-r", "requirements.txt"])  # noqa: E731
        return Plan(title, step, None if local else "requirements.txt\n" + text)
    if (build / "uv.lock").is_file() and (build / "pyproject.toml").is_file():
        if not installer.uv:
            fail("uv.lock needs uv, which this builder does not have.")
        argv = [str(installer.uv), "sync", "--locked", "--no-default-groups"]
        # The project itself is installed editable (a link to /app), so only these matter.
        inputs = "uv.lock\n" + read("uv.lock") + read("pyproject.toml")
        return Plan(
            "Installing dependencies from uv.lock", lambda: installer.check("uv.lock", argv), inputs
        )
    if (build / "poetry.lock").is_file():
        lines = poetry_lock_requirements(build / "poetry.lock")
        local = any(LOCAL_REFERENCE.match(line) for line in lines)
        return Plan(
            "Installing dependencies from poetry.lock",
            lambda: installer.from_generated("poetry.lock", lines),
            None if local else "poetry.lock\n" + "\n".join(lines),
        )
    if (build / "Pipfile.lock").is_file():
        lines = pipfile_lock_requirements(build / "Pipfile.lock")
        local = any(LOCAL_REFERENCE.match(line) or " @ ." in line for line in lines)
        return Plan(
            "Installing dependencies from Pipfile.lock",
            lambda: installer.from_generated("Pipfile.lock", lines),
            None if local else "Pipfile.lock\n" + "\n".join(lines),
        )
    if (build / "Pipfile").is_file():
        fail(
            "A Pipfile without a Pipfile.lock cannot be installed reproducibly.",
            "Run `pipenv lock`, commit Pipfile.lock and deploy again.",
        )
    if (build / "pyproject.toml").is_file() and has_project_table(build / "pyproject.toml"):
        step = lambda: installer.install("pyproject.toml", ["-r", "pyproject.toml"])  # noqa: E731
        return Plan("Installing the dependencies listed in pyproject.toml", step, None)
    if (build / "setup.py").is_file():
        step = lambda: installer.install("setup.py", ["--editable", "."])  # noqa: E731
        return Plan("Installing the app with setup.py", step, None)
    return None


# -- a whole venv, kept in the cache ---------------------------------------------------------
# uv's cache saves the downloads, but resolving against the index, copying every file into
# the venv and compiling bytecode cost most of a build. When the dependency files are the
# same as last time, the venv built then (same path, /app/.venv) is put back instead.
#
# dockyard keeps it: this script asks (KEEP_REQUESTS) and, after a successful compile,
# dockyard puts a copy of .venv made of hard links in the cache, every file read-only and
# owned by root, so that no later build can change a release through its cache. The next
# build moves that directory into /app with one rename (the cache and the app are one
# mount in dockyard's build sandbox; elsewhere it is copied). Its files stay read-only:
# whatever must change in a venv is built anew, as it is when the dependencies change.

VENV_CACHE_FORMAT = "2"  # bump when what goes into a cached venv changes
KEEP_REQUESTS = ".dockyard-keep"
# Timestamps must survive (bytecode is checked against its source's mtime); owners and
# xattrs need not, and preserving them (cp -a) makes the copy several times slower.
COPY = ["cp", "-R", "-P", "--preserve=mode,timestamps,links"]


def venv_cache_key(plan: Plan, interpreter: Path, env: dict[str, str]) -> str | None:
    if plan.inputs is None:
        return None
    real = interpreter.resolve()
    st = real.stat()
    digest = sha256()
    for part in (
        VENV_CACHE_FORMAT,
        f"{real}:{st.st_size}:{st.st_mtime_ns}",
        *(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith(("UV_", "PIP_"))),
        plan.inputs,
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:32]


def cached_venv(cache: Path, key: str) -> Path:
    return cache / "python" / f"venv-{key}"


def restore_venv(cache: Path, key: str, venv: Path) -> bool:
    saved = cached_venv(cache, key)
    if not saved.is_dir() or saved.is_symlink():
        return False
    started = time.monotonic()
    try:
        saved.rename(venv)
    except OSError:  # not one mount (a build without dockyard's sandbox root): copy it
        if run([*COPY, str(saved), str(venv)], env=dict(os.environ), cwd=venv.parent) != 0:
            remove_tree(venv, ignore_errors=True)
            return False
    info(f"Reused the environment built last time ({time.monotonic() - started:.1f}s)")
    return True


def keep_venv(cache: Path, key: str, venv: Path) -> None:
    """Ask dockyard to keep this venv for the next build; only the latest is kept, so the
    cache does not grow with every change of the dependencies."""
    root = cache / "python"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name != f"venv-{key}":
            if old.is_dir() and not old.is_symlink():
                remove_tree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    target = cached_venv(cache, key).relative_to(cache)
    with open(cache / KEEP_REQUESTS, "a", encoding="utf-8") as requests:
        requests.write(f"{target} {venv.name}\n")


def django_installed(venv: Path) -> bool:
    return any(venv.glob("lib/python3*/site-packages/django/__init__.py"))


def collectstatic(build: Path, installer: Installer, env: dict[str, str]) -> None:
    if not (build / "manage.py").is_file() or not django_installed(installer.venv):
        return
    if env.get("DISABLE_COLLECTSTATIC", "").strip().lower() in ("1", "true", "yes"):
        topic("Skipping collectstatic (DISABLE_COLLECTSTATIC is set)")
        return
    topic("$ python manage.py collectstatic --noinput")
    argv = [str(installer.python), "manage.py", "collectstatic", "--noinput"]
    status = run(argv, env=installer.env, cwd=build)
    if status != 0:
        fail(
            "Error while running '$ python manage.py collectstatic --noinput' "
            f"(exit status {status}).",
            "The traceback above says why: often STATIC_ROOT is not set in settings.py.",
            "Fix the app's settings, or turn this step off for the app:",
            "    dockyard env-set DISABLE_COLLECTSTATIC=1",
        )


def write_profile(build: Path) -> None:
    # Runtimes that follow Heroku source .profile.d/*.sh before starting a process.
    profile = build / ".profile.d"
    profile.mkdir(exist_ok=True)
    (profile / "python.sh").write_text(
        f'export PATH="{build}/.venv/bin:$PATH"\n'
        f'export VIRTUAL_ENV="{build}/.venv"\n'
        "export PYTHONUNBUFFERED=1\n",
        encoding="utf-8",
    )


def main() -> None:
    build, cache, env_dir = (Path(arg) for arg in sys.argv[1:4])
    env = app_environment(env_dir)
    interpreter = choose_python(build)
    installer = Installer(build, cache, env)
    installer.remove_stray_venv()
    plan = plan_install(build, installer)
    key = venv_cache_key(plan, interpreter, installer.env) if plan else None
    if plan:
        topic(plan.title)
    if plan and key and restore_venv(cache, key, installer.venv):
        info("The dependency files are unchanged since the last build")
    else:
        installer.create_venv(interpreter)
        if plan:
            plan.step()
    if key:
        keep_venv(cache, key, installer.venv)
    collectstatic(build, installer, env)
    write_profile(build)
    if not (build / "Procfile").is_file():
        info("No Procfile: add one to say how to start the app, e.g. `web: gunicorn app:app`")
