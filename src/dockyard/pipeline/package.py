"""Packaging: the built app directory becomes a slug (a zstd-compressed tar in the blob store).

GNU tar and zstd do the work, in C and in two processes that overlap on two cores
(``tarfile`` and then ``gzip`` were each once the largest part of a warm deploy: see
docs/performance.md).
tar never follows symlinks unless asked (``-h``), so a link to ``/etc/shadow`` or to the
data dir packs its *name*, never the file it points at; sockets are skipped; owners are
reset and setuid/setgid/sticky bits dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from dockyard.errors import BuildError

# Fast compression: a slug is written on every deploy, on the way to the app's start.
COMPRESS_COMMAND = "zstd -1 --quiet --no-progress"
SLUG_SUFFIX = ".tar.zst"
TOOLS_PATH = "/usr/bin:/bin"
TAR_WARNINGS_ONLY = 1  # e.g. "socket ignored": the slug is complete


def check_tools() -> None:
    """Raise if GNU tar or zstd is missing from the PATH packaging runs with."""
    for tool, package in (("tar", "tar"), ("zstd", "zstd")):
        if shutil.which(tool, path=TOOLS_PATH) is None:
            raise BuildError(
                f"{tool} is not installed in {TOOLS_PATH}, and releases are packaged with it: "
                f"install it (apt-get install -y {package}; scripts/setup.sh does)."
            )


def make_slug(app_dir: Path, slug_path: Path) -> int:
    """Write ``app_dir``'s content into ``slug_path``; returns the slug's size in bytes."""
    names = sorted(os.listdir(app_dir))
    argv = ["tar", "--create", f"--file={slug_path}", f"--directory={app_dir}"]
    argv += [f"--use-compress-program={COMPRESS_COMMAND}", "--sort=name"]
    argv += ["--owner=0", "--group=0", "--numeric-owner", "--mode=a-st"]
    _tar(argv, names, "The built app could not be packaged")
    return slug_path.stat().st_size


def make_cache_archive(cache_dir: Path, archive_path: Path) -> int:
    """Write ``cache_dir`` (itself, as the one top-level directory ``archive.unpack``
    wants) into the tar.gz ``archive_path``; returns its size in bytes."""
    argv = ["tar", "--create", f"--file={archive_path}", f"--directory={cache_dir.parent}"]
    argv += ["--use-compress-program=gzip -1", "--sort=name", "--mode=a-st"]
    _tar(argv, [cache_dir.name], "The deployment cache could not be archived")
    return archive_path.stat().st_size


def _tar(argv: list[str], names: list[str], failure: str) -> None:
    # Names come on stdin, NUL-separated: a file called "-x" is never read as an option.
    argv = [*argv, "--null", "--verbatim-files-from", "--files-from=-"]
    result = subprocess.run(
        argv,
        input=b"".join(name.encode() + b"\0" for name in names),
        capture_output=True,
        check=False,
        env={"PATH": TOOLS_PATH, "LC_ALL": "C"},
    )
    if result.returncode not in (0, TAR_WARNINGS_ONLY):
        message = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise BuildError(f"{failure}: tar said: {message[0]}")
