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
