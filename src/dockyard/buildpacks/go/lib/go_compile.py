"""What bin/compile BUILD_DIR CACHE_DIR ENV_DIR does for Go apps (buildpack API v2).

The toolchain is not this buildpack's to install: dockyard lends one, read-only, at
``$DOCKYARD_GO`` (chosen from go.mod and installed once per host; the log's line above
this buildpack's says which and why). This script builds the app's main packages into
BUILD_DIR/bin, where the Procfile's commands find them on PATH:

    go install -tags paas [-ldflags "-X SYMBOL=VALUE"] SPEC...

- SPEC: ``GO_INSTALL_PACKAGE_SPEC``, else go.mod's ``// +scalingo install`` (or
  ``+heroku``) comment, else ``./...`` (every main package of the module);
- ``GOTOOLCHAIN=local``: a ``toolchain`` line never downloads another Go;
- a ``vendor`` directory: ``-mod=vendor`` and ``GOPROXY=off``, nothing is downloaded;
- ``GOCACHE`` and ``GOMODCACHE`` in CACHE_DIR/go: the next build recompiles only what
  changed and downloads nothing it has;
- ``GO_LINKER_SYMBOL`` / ``GO_LINKER_VALUE`` (default ``SOURCE_VERSION``) as Heroku's
  and Scalingo's Go buildpacks read them;
- ``bin/go-pre-compile`` and ``bin/go-post-compile`` hooks of the app, if executable.

Only modules are built: an app with only Godeps, govendor, glide or dep files is told how
to add a go.mod.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

INDENT = "       "
NOT_EXPORTED = {"PATH", "HOME", "GIT_DIR", "CPATH", "CPPATH", "LIBRARY_PATH"}
DEFAULT_SPEC = "./..."
BUILD_TAGS = "paas"  # Scalingo's and Heroku's Go buildpacks set it: code may test for it
_INSTALL_COMMENT = re.compile(r"^\s*//\s*\+(?:scalingo|heroku)\s+install\s+(.+?)\s*$", re.M)
_LINKER_SYMBOL = re.compile(r"[A-Za-z0-9_./-]+")


def topic(message: str) -> None:
    print(f"-----> {message}", flush=True)


def info(message: str) -> None:
    print(f"{INDENT}{message}", flush=True)


def fail(*lines: str) -> NoReturn:
    for line in lines:
        print(f" !     {line}", flush=True)
    sys.exit(1)


def app_environment(env_dir: Path) -> dict[str, str]:
    """This process's environment plus ENV_DIR (on Heroku, variables come only from there)."""
    env = dict(os.environ)
    if env_dir.is_dir():
        for entry in env_dir.iterdir():
            if entry.is_file() and entry.name not in NOT_EXPORTED and entry.name not in env:
                env[entry.name] = entry.read_text(encoding="utf-8", errors="replace")
    return env


def run(argv: list[str], *, env: dict[str, str], cwd: Path) -> int:
    """Run a command, its output indented under the current topic."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        print(INDENT + raw.decode("utf-8", "replace").rstrip(), flush=True)
    return proc.wait()


def legacy_layout(build: Path) -> str | None:
    for marker, tool in (
        ("Godeps/Godeps.json", "godep"),
        ("vendor/vendor.json", "govendor"),
        ("glide.yaml", "glide"),
        ("Gopkg.lock", "dep"),
    ):
        if (build / marker).is_file():
            return f"{marker} ({tool})"
    return None


def install_spec(build: Path, env: dict[str, str]) -> tuple[list[str], str]:
    """The packages to install and where that came from."""
    from_env = env.get("GO_INSTALL_PACKAGE_SPEC", "").split()
    if from_env:
        return from_env, "GO_INSTALL_PACKAGE_SPEC"
    go_mod = (build / "go.mod").read_text(encoding="utf-8", errors="replace")
    comment = _INSTALL_COMMENT.search(go_mod)
    if comment is not None:
        return comment[1].replace(",", " ").split(), "go.mod's `// +scalingo install` comment"
    return [DEFAULT_SPEC], "every main package of the module"


def linker_flags(env: dict[str, str]) -> list[str]:
    symbol = env.get("GO_LINKER_SYMBOL", "").strip()
    if not symbol:
        return []
    if not _LINKER_SYMBOL.fullmatch(symbol):
        fail(
            f"GO_LINKER_SYMBOL is {symbol!r}, which is not a Go symbol.",
            "Set it to a package path and a variable, such as main.version.",
        )
    value = env.get("GO_LINKER_VALUE", env.get("SOURCE_VERSION", ""))
    # `go` splits -ldflags on spaces outside quotes, and its quotes have no escapes.
    setting = f"{symbol}={value}"
    if not re.search(r"[\s'\"]", setting):
        return ["-ldflags", f"-X {setting}"]
    for quote in ("'", '"'):
        if quote not in setting:
            return ["-ldflags", f"-X {quote}{setting}{quote}"]
    fail("GO_LINKER_VALUE holds both kinds of quote, which `go build -ldflags` cannot pass.")


def go_environment(env: dict[str, str], go: Path, build: Path, cache: Path) -> dict[str, str]:
    go_cache = cache / "go"
    env = dict(env)
    env.update(
        {
            "PATH": f"{go.parent}:{build / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            "GOTOOLCHAIN": "local",
            "GOCACHE": str(go_cache / "build"),
            "GOMODCACHE": str(go_cache / "mod"),
            "GOPATH": str(go_cache / "path"),
            "GOBIN": str(build / "bin"),
            "GOENV": "off",  # no go.env of the build user's HOME
            "GOFLAGS": env.get("GOFLAGS", ""),
        }
    )
    env.pop("GOROOT", None)  # the toolchain finds its own: an app's GOROOT would break it
    if (build / "vendor").is_dir():
        env["GOFLAGS"] = f"{env['GOFLAGS']} -mod=vendor".strip()
        env["GOPROXY"] = "off"
    return env


def programs(build: Path) -> dict[str, int]:
    """The files in bin/ and when each was written: what go install wrote is what changed."""
    if not (build / "bin").is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in (build / "bin").iterdir() if p.is_file()}


def hook(build: Path, name: str, env: dict[str, str]) -> None:
    script = build / "bin" / name
    if not script.is_file() or not os.access(script, os.X_OK):
        return
    topic(f"Running bin/{name}")
    status = run([str(script)], env=env, cwd=build)
    if status != 0:
        fail(f"bin/{name} failed (exit status {status}); its output is above.")


def write_profile(build: Path) -> None:
    # Runtimes that follow Heroku source .profile.d/*.sh before starting a process.
    profile = build / ".profile.d"
    profile.mkdir(exist_ok=True)
    (profile / "go.sh").write_text(f'export PATH="{build}/bin:$PATH"\n', encoding="utf-8")


def main() -> None:
    build, cache, env_dir = (Path(arg) for arg in sys.argv[1:4])
    env = app_environment(env_dir)
    toolchain = env.get("DOCKYARD_GO", "")
    go = Path(toolchain) / "bin" / "go"
    if not toolchain or not go.is_file():
        fail(
            "No Go toolchain was lent to this build ($DOCKYARD_GO is not set).",
            "This buildpack runs in dockyard, which installs Go for it.",
        )
    if not (build / "go.mod").is_file():
        layout = legacy_layout(build) or "no go.mod"
        fail(
            f"This app uses {layout}, and dockyard builds only Go modules.",
            "Add a go.mod (`go mod init <module path>`, then `go mod tidy` and, to build",
            "without downloads, `go mod vendor`), commit it and deploy again.",
        )
    go_env = go_environment(env, go, build, cache)
    if (build / "vendor").is_dir():
        info("Using the modules in vendor/ (-mod=vendor, GOPROXY=off: nothing is downloaded)")
    hook(build, "go-pre-compile", go_env)
    spec, spec_source = install_spec(build, env)
    argv = [str(go), "install", "-tags", BUILD_TAGS, *linker_flags(env), *spec]
    topic(f"Running: go install -tags {BUILD_TAGS} {' '.join(spec)} ({spec_source})")
    if "GO_LINKER_SYMBOL" in env and env["GO_LINKER_SYMBOL"].strip():
        value = argv[argv.index("-ldflags") + 1].removeprefix("-X ").strip("'\"")
        info(f"Linking with -X {value} (GO_LINKER_SYMBOL)")
    started = time.monotonic()
    before = programs(build)
    status = run(argv, env=go_env, cwd=build)
    if status != 0:
        fail(
            f"go install failed (exit status {status}). The compiler's errors are above:",
            "fix them, or choose the packages to build with GO_INSTALL_PACKAGE_SPEC or a",
            "`// +scalingo install ./cmd/...` line in go.mod, and deploy again.",
        )
    after = programs(build)
    # What go install wrote; a program it found up to date (shipped in bin/) is not new.
    binaries = sorted(name for name, mtime in after.items() if before.get(name) != mtime)
    binaries = binaries or sorted(
        name for name in after if os.access(build / "bin" / name, os.X_OK)
    )
    if not binaries:
        fail(
            f"go install built no program: {' '.join(spec)} has no main package.",
            "Point GO_INSTALL_PACKAGE_SPEC (or a `// +scalingo install` line in go.mod) at",
            "the packages with `package main` and deploy again.",
        )
    info(f"Built in {time.monotonic() - started:.1f}s: bin/{', bin/'.join(binaries)}")
    hook(build, "go-post-compile", go_env)
    write_profile(build)
    if not (build / "Procfile").is_file():
        if len(binaries) == 1:
            info(f"No Procfile: the web process runs {binaries[0]}")
        else:
            info("No Procfile: add one to say which program serves the web, e.g.")
            info(f"`web: {binaries[0]}` (the programs in bin/ are on PATH)")
