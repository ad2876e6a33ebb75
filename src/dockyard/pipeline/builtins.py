"""The built-in buildpacks, in their one detection order, and how each recognises an app.

A built-in buildpack is ``bin/compile`` and ``bin/release`` (run in the build sandbox like
any buildpack's) and a detection rule that dockyard applies itself: a ``bin/detect`` that
only tests for a file cost a whole sandbox, 10-30 ms of every deployment. The rules look
at the unpacked app before anything of it has run, as root, so they trust nothing in it:
a marker file counts if it is a regular file, or a symlink that resolves to one inside the
app; nothing outside the app is ever looked at or opened.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_MARKER_READ_BYTES = 1024 * 1024  # pyproject.toml is read to find a [project] table
_PROJECT_TABLE = re.compile(rb"^\[project\]", re.MULTILINE)


@dataclass(frozen=True)
class Builtin:
    name: str
    label: str  # what the build log says: "-----> Python app detected"
    looks_for: str  # for the "nothing matched" message
    accepts: Callable[[Path], bool]  # the unpacked app's directory -> is it this kind?
    language: str  # for the "nothing matched" message: "Python", "static sites"
    # A toolchain dockyard installs once per host and lends to the build read-only
    # (``toolchains``): "go", or None for a buildpack that brings what it needs.
    toolchain: str | None = None


def app_file(app_dir: Path, relative: str) -> Path | None:
    """``app_dir / relative`` resolved, if it is a regular file inside the app."""
    root = os.path.realpath(app_dir)
    real = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, real]) != root:
        return None  # a symlink out of the app: as good as absent
    try:
        st = os.stat(real)
    except OSError:
        return None
    return Path(real) if stat.S_ISREG(st.st_mode) else None


def _has(app_dir: Path, *names: str) -> bool:
    return any(app_file(app_dir, name) is not None for name in names)


def _is_python(app: Path) -> bool:
    if _has(app, "requirements.txt", "Pipfile", "setup.py"):
        return True
    # A pyproject.toml counts only with a lock file or a [project] table, so that a tool's
    # configuration alone (ruff, black) does not make a Node app look like a Python one.
    pyproject = app_file(app, "pyproject.toml")
    if pyproject is None:
        return False
    if _has(app, "uv.lock", "poetry.lock"):
        return True
    with open(pyproject, "rb") as file:
        return _PROJECT_TABLE.search(file.read(MAX_MARKER_READ_BYTES)) is not None


# What Scalingo's and Heroku's Go buildpacks recognise: modules, and the older dependency
# managers' files (godep, govendor, glide, dep).
GO_MARKERS = ("go.mod", "Godeps/Godeps.json", "vendor/vendor.json", "glide.yaml", "Gopkg.lock")

# First match wins; procfile is the last resort.
BUILTIN_BUILDPACKS: tuple[Builtin, ...] = (
    Builtin(
        "python",
        "Python",
        "requirements.txt, pyproject.toml, Pipfile, setup.py",
        _is_python,
        language="Python",
    ),
    Builtin(
        "nodejs",
        "Node.js",
        "package.json",
        lambda app: _has(app, "package.json"),
        language="Node.js",
    ),
    Builtin(
        "go",
        "Go",
        ", ".join(GO_MARKERS),
        lambda app: _has(app, *GO_MARKERS),
        language="Go",
        toolchain="go",
    ),
    Builtin(
        "static",
        "Static",
        "index.html",
        lambda app: _has(app, "index.html", "public/index.html"),
        language="static sites",
    ),
    Builtin(
        "procfile",
        "Procfile",
        "Procfile",
        lambda app: _has(app, "Procfile"),
        language="any program the stack already has, started by a Procfile",
    ),
)
BUILTIN_NAMES = {builtin.name: builtin for builtin in BUILTIN_BUILDPACKS}


def supported_languages() -> str:
    """What the build log says when nothing was recognised: "Python (requirements.txt,
    ...); Node.js (package.json); ..."."""
    return "; ".join(f"{b.language} ({b.looks_for})" for b in BUILTIN_BUILDPACKS)
