"""The configuration file: where it lives, its mode, environment overrides."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dockyard.cli.client import config
from dockyard.cli.client.errors import ClientError, NotLoggedIn


def test_path_prefers_dockyard_config_then_xdg_then_home(tmp_path: Path) -> None:
    assert (
        config.config_path({"DOCKYARD_CONFIG": str(tmp_path / "c.json"), "HOME": "/h"})
        == tmp_path / "c.json"
    )
    assert config.config_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path(
        "/x/dockyard/config.json"
    )
    assert config.config_path({"HOME": "/h"}) == Path("/h/.config/dockyard/config.json")


def test_saved_file_is_private_and_readable_back(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dockyard" / "config.json"
    config.save(path, {"api_url": "http://x", "api_token": "tk-secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert config.load(path) == {"api_url": "http://x", "api_token": "tk-secret"}


def test_save_replaces_a_world_readable_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o644)
    config.save(path, {"api_token": "tk-secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left behind


def test_missing_file_is_empty_and_broken_file_says_what_to_do(tmp_path: Path) -> None:
    assert config.load(tmp_path / "none.json") == {}
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    with pytest.raises(ClientError) as caught:
        config.load(broken)
    assert "dockyard login" in caught.value.hint


def test_environment_overrides_the_file() -> None:
    data = {"api_url": "http://file:1/", "api_token": "tk-file"}
    assert config.credentials({}, data) == config.Credentials("http://file:1", "tk-file")
    env = {"DOCKYARD_API_URL": "https://env", "DOCKYARD_API_TOKEN": "tk-env"}
    assert config.credentials(env, data) == config.Credentials("https://env", "tk-env")


def test_no_credentials_is_not_logged_in() -> None:
    with pytest.raises(NotLoggedIn):
        config.credentials({}, {"api_url": "http://x"})
    with pytest.raises(ClientError, match="http"):
        config.credentials({"DOCKYARD_API_URL": "ftp://x", "DOCKYARD_API_TOKEN": "t"}, {})
