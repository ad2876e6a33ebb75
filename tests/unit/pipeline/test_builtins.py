"""Built-in detection: which built-in buildpack an app gets, from its files, without
trusting them (a marker is a regular file inside the app, never something outside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.pipeline.builtins import BUILTIN_BUILDPACKS, app_file


def detected(app: Path) -> str | None:
    return next((b.name for b in BUILTIN_BUILDPACKS if b.accepts(app)), None)


def make(tmp_path: Path, files: dict[str, str]) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    for name, text in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    return app


@pytest.mark.parametrize(
    ("files", "kind"),
    [
        ({"requirements.txt": "flask\n"}, "python"),
        ({"Pipfile": ""}, "python"),
        ({"setup.py": ""}, "python"),
        ({"pyproject.toml": "[project]\nname = 'x'\n"}, "python"),
        ({"pyproject.toml": "[tool.poetry]\n", "poetry.lock": ""}, "python"),
        ({"pyproject.toml": "[tool.uv]\n", "uv.lock": ""}, "python"),
        # A tool's configuration alone does not make a Node app a Python one.
        ({"pyproject.toml": "[tool.ruff]\n", "package.json": "{}"}, "nodejs"),
        ({"requirements.txt": "", "package.json": "{}"}, "python"),  # the order decides
        ({"index.html": "<p>hi</p>"}, "static"),
        ({"public/index.html": "<p>hi</p>"}, "static"),
        ({"Procfile": "web: ./serve\n", "index.txt": "x"}, "procfile"),
        ({"README.md": "nothing to run"}, None),
    ],
)
def test_each_kind_of_app_gets_its_buildpack(
    tmp_path: Path, files: dict[str, str], kind: str | None
) -> None:
    assert detected(make(tmp_path, files)) == kind


def test_a_marker_symlinked_inside_the_app_counts(tmp_path: Path) -> None:
    app = make(tmp_path, {"requirements/prod.txt": "flask\n"})
    (app / "requirements.txt").symlink_to("requirements/prod.txt")
    assert detected(app) == "python"


def test_nothing_outside_the_app_is_looked_at(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "pyproject.toml").write_text("[project]\nname = 'host'\n")
    (host / "package.json").write_text("{}")
    app = make(tmp_path, {"Procfile": "web: ./serve\n"})
    (app / "pyproject.toml").symlink_to(host / "pyproject.toml")  # absolute, out of the app
    (app / "package.json").symlink_to("../host/package.json")  # relative, out of the app
    (app / "index.html").symlink_to("/etc/hostname")
    assert detected(app) == "procfile"
    assert app_file(app, "pyproject.toml") is None


def test_a_directory_or_a_dangling_link_is_no_marker(tmp_path: Path) -> None:
    app = make(tmp_path, {})
    (app / "requirements.txt").mkdir()
    (app / "package.json").symlink_to("missing.json")
    assert detected(app) is None
