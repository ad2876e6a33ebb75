"""App selection: --app, else the .dockyard file here or above."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.cli.client.appfile import read_app_file, resolve_app, write_app_file
from dockyard.cli.client.errors import UsageError


def test_option_wins(tmp_path: Path) -> None:
    write_app_file(tmp_path, "from-file")
    assert resolve_app("explicit", tmp_path) == "explicit"


def test_file_in_a_parent_directory_is_found(tmp_path: Path) -> None:
    write_app_file(tmp_path, "shop")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert resolve_app(None, deep) == "shop"


def test_hand_written_key_value_file(tmp_path: Path) -> None:
    (tmp_path / ".dockyard").write_text("# linked app\napp = blog\n")
    assert read_app_file(tmp_path / ".dockyard") == "blog"


def test_no_app_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_app(None, tmp_path)
    assert "--app" in caught.value.hint


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".dockyard").write_text("{}")
    with pytest.raises(UsageError, match="does not name an app"):
        resolve_app(None, tmp_path)
