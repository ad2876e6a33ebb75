"""What ``POST /v1/apps/{app}/run`` accepts, and how it says what is wrong."""

from __future__ import annotations

import pytest

from dockyard.errors import ValidationFailed
from dockyard.services.oneoffs import parse_run


def test_the_official_clients_body_is_accepted() -> None:
    wanted = parse_run(
        {
            "command": "rails console",
            "env": {"TERM": "xterm", "CLIENT_OS": "linux", "FOO": "bar"},
            "size": "M",
            "detached": False,
            "has_uploads": False,
        }
    )
    assert wanted.command == "rails console" and wanted.env["FOO"] == "bar"
    assert wanted.size == "M" and wanted.detached is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"command": ""}, "command"),
        ({"command": ["ls"]}, "command"),
        ({"command": "ls", "env": {"BAD NAME": "x"}}, "env"),
        ({"command": "ls", "env": {"A": 1}}, "env"),
        ({"command": "ls", "size": "XXXL"}, "size"),
        ({"command": "ls", "detached": "yes"}, "detached"),
    ],
)
def test_a_bad_field_is_named(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_run(body)
    assert field in raised.value.errors


def test_an_env_the_kernel_could_not_pass_is_refused_naming_the_variable() -> None:
    """A 200 KiB value once reached the sandbox and failed there ("Argument list too long",
    a 500): the app's variables' bounds apply to a one-off's -e variables too."""
    with pytest.raises(ValidationFailed) as raised:
        parse_run({"command": "env", "env": {"HUGE": "q" * 204_800}})
    assert "value of HUGE is 204800 bytes" in raised.value.errors["env"][0]
    many = {f"V{i}": "x" * 30_000 for i in range(10)}  # each fine, together too much
    with pytest.raises(ValidationFailed) as raised:
        parse_run({"command": "env", "env": many})
    assert "may be at most 256 KiB" in raised.value.errors["env"][0]
    assert parse_run({"command": "env", "env": {"OK": "x" * 30_000}}).env["OK"]
