"""Which files ``deploy`` leaves out: ``.gitignore``, ``.slugignore`` and ``.dockyardignore``.

Rules follow git: each ignore file applies to its own directory and below, with paths
relative to that directory; a deeper file's match overrides a shallower one, and ``!``
re-includes. ``.git`` is always left out. An ignored directory is not entered at all, so
files below it cannot be re-included (as in git) and ``node_modules`` costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pathspec

IGNORE_FILES = (".gitignore", ".slugignore", ".dockyardignore")
ALWAYS_SKIPPED = frozenset({".git"})


@dataclass(frozen=True)
class _Level:
    base: str  # the directory holding the ignore files, relative to the root ("" for it)
    spec: pathspec.GitIgnoreSpec


@dataclass(frozen=True)
class IgnoreRules:
    levels: tuple[_Level, ...] = ()

    def descend(self, directory: Path, rel: str) -> IgnoreRules:
        """The rules inside ``directory`` (at ``rel`` below the root): these plus its own files."""
        lines: list[str] = []
        for name in IGNORE_FILES:
            candidate = directory / name
            # An ignore file that is a link could point anywhere: only real files count.
            if candidate.is_file() and not candidate.is_symlink():
                lines.extend(candidate.read_text(encoding="utf-8", errors="replace").splitlines())
        if not any(line.strip() and not line.startswith("#") for line in lines):
            return self
        return IgnoreRules((*self.levels, _Level(rel, pathspec.GitIgnoreSpec.from_lines(lines))))

    def ignored(self, rel: str, *, is_dir: bool) -> bool:
        """Whether the entry at ``rel`` (relative to the root, ``/``-separated) is left out."""
        if rel.rsplit("/", 1)[-1] in ALWAYS_SKIPPED:
            return True
        verdict = False
        for level in self.levels:
            local = rel[len(level.base) + 1 :] if level.base else rel
            result = level.spec.check_file(local + "/" if is_dir else local)
            if result.include is not None:
                verdict = result.include
        return verdict
