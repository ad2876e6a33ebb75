"""The dashboard's SVG charts: one bar per deployment or process type, drawn to scale,
coloured by outcome, with every text escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # our own output, not untrusted input
from datetime import UTC, datetime, timedelta

from dockyard.domain.records import DeploymentRecord, UserRecord
from dockyard.web import charts

PUSHER = UserRecord(id="u", username="erin", email="e@example.com", fullname="")
START = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def deployment(status: str, seconds: float | None, minute: int) -> DeploymentRecord:
    created = START + timedelta(minutes=minute)
    return DeploymentRecord(
        id=f"d{minute}",
        app_id="a",
        status=status,
        git_ref="",
        previous_git_ref=None,
        created_at=created,
        finished_at=None if seconds is None else created + timedelta(seconds=seconds),
        image_size=None,
        pusher=PUSHER,
    )


def bars(svg: str) -> list[tuple[float, str]]:
    root = ET.fromstring(svg)  # noqa: S314 - the chart we just drew
    return [(float(r.get("height", 0)), r.get("fill", "")) for r in root.iter(f"{SVG}rect")]


def test_durations_are_bars_to_scale_oldest_first_coloured_by_outcome() -> None:
    newest_first = [
        deployment("building", None, 3),
        deployment("build-error", 10, 2),
        deployment("success", 40, 1),
    ]
    drawn = bars(charts.deployment_durations(newest_first))
    assert [colour for _, colour in drawn] == [
        charts.OK_COLOUR,
        charts.FAILED_COLOUR,
        charts.RUNNING_COLOUR,
    ]
    assert drawn[0][0] == charts.BAR_AREA  # the longest fills the height
    assert drawn[1][0] == charts.BAR_AREA / 4


def test_memory_shows_each_types_limit_times_its_instances() -> None:
    svg = str(charts.instance_memory([("web", 2, "M"), ("worker", 1, "S")]))
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]  # noqa: S314
    assert "1024 MB" in texts and "256 MB" in texts
    assert 'role="img"' in svg and "<title" in svg


def test_text_is_escaped_and_nothing_is_drawn_without_data() -> None:
    svg = str(charts.instance_memory([("<script>", 1, "M")]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert str(charts.deployment_durations([])) == ""


def test_durations_read_as_people_say_them() -> None:
    assert charts.human_duration(None) == "running"
    assert charts.human_duration(0.84) == "0.8 s"
    assert charts.human_duration(42) == "42 s"
    assert charts.human_duration(185) == "3 min 5 s"
    assert re.fullmatch(r"\d+ s", charts.human_duration(12.4))
