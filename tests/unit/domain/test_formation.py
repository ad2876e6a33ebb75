"""The formation rules: what a deployment keeps, what a scale request may ask."""

from __future__ import annotations

from dockyard.domain import formation as fm
from dockyard.domain.formation import Scale, ScaleRequest


def test_a_release_keeps_the_users_amounts_starts_new_types_at_one_and_zeroes_vanished_ones() -> (
    None
):
    current = {"web": Scale(3, "L"), "clock": Scale(2, "S")}

    after = fm.with_release(current, {"web": "gunicorn app", "worker": "celery"})

    assert after == {"web": Scale(3, "L"), "worker": Scale(1, "M"), "clock": Scale(0, "S")}


def test_scale_requests_are_checked_item_by_item_with_what_to_change() -> None:
    requests, errors = fm.check_scale(
        [
            {"name": "web", "amount": 3, "size": ""},
            {"name": "worker", "amount": -1, "size": ""},
            {"name": "web2", "amount": 1, "size": ""},
            {"name": "clock", "amount": 1000, "size": ""},
            {"name": "cron", "amount": 1, "size": "XXL"},
            {"name": "beat", "amount": True, "size": ""},
        ],
        {"web", "worker", "clock", "cron", "beat"},
    )

    assert requests == [ScaleRequest("web", 3, None)]
    assert errors["worker"] == ["amount must be a whole number from 0 to 100, got -1"]
    assert "is not a process type of this app" in errors["web2"][0]
    assert "beat, clock, cron, web, worker" in errors["web2"][0]
    assert errors["clock"] == ["amount must be a whole number from 0 to 100, got 1000"]
    assert errors["cron"] == ["size must be one of S, M, L, XL, 2XL, got 'XXL'"]
    assert "got True" in errors["beat"][0]


def test_an_empty_or_shapeless_request_says_what_is_expected() -> None:
    bodies: list[object] = [None, [], {"web": 2}, "web:2"]
    for body in bodies:
        requests, errors = fm.check_scale(body, {"web"})
        assert requests == []
        assert '[{"name": "web", "amount": 2, "size": "M"}]' in errors["containers"][0]


def test_scaling_changes_only_what_was_asked() -> None:
    current = {"web": Scale(1, "M"), "worker": Scale(2, "L")}

    after = fm.scaled(current, [ScaleRequest("web", 3, None), ScaleRequest("worker", None, "S")])

    assert after == {"web": Scale(3, "M"), "worker": Scale(2, "S")}
    assert fm.instances(after) == 5
    assert fm.memory_bytes(after) == 3 * 512 * fm.MIB + 2 * 256 * fm.MIB
