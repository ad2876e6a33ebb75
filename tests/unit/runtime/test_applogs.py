"""App logs as served: the client's line format, filters, the router's file."""

from __future__ import annotations

import re
from pathlib import Path

from dockyard.runtime import applogs
from dockyard.runtime.logfile import LogFile, rotated

CLIENT_LINE = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} \+0000 UTC \[[a-z0-9-]+\] \S"


def test_lines_have_the_four_date_fields_the_client_splits(tmp_path: Path) -> None:
    log = LogFile(applogs.process_log_path(tmp_path, "r1", "web-1"))
    log.write(b"Listening on port 8080\n")
    log.close()
    (line,) = applogs.recent_lines(tmp_path, 5)
    assert re.match(CLIENT_LINE, line), line
    assert line.endswith(" [web-1] Listening on port 8080")
    assert applogs.wire_time("2024-05-01T10:00:00.123456Z") == (
        "2024-05-01 10:00:00.123456000 +0000 UTC"
    )


def test_a_filter_names_processes_or_types(tmp_path: Path) -> None:
    for name in ("web-1", "web-2", "worker-1", "webhook-1", "one-off-3"):
        log = LogFile(applogs.process_log_path(tmp_path, "r1", name))
        log.write(f"from {name}")
        log.close()
    applogs.RouterLogs(tmp_path.parent).write({tmp_path.name: [(0.0, "method=GET")]})

    def names(raw: str) -> set[str]:
        lines = applogs.recent_lines(tmp_path, 50, applogs.name_filter(raw))
        return {line.split("[")[1].split("]")[0] for line in lines}

    assert names("web") == {"web-1", "web-2"}  # not webhook-1
    assert names("web-2|worker") == {"web-2", "worker-1"}
    assert names("router") == {"router"}
    assert names("one-off-3") == {"one-off-3"}
    assert names("") == {"web-1", "web-2", "worker-1", "webhook-1", "one-off-3", "router"}


def test_router_lines_are_bounded_and_never_create_an_apps_directory(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    router_logs = applogs.RouterLogs(tmp_path, max_bytes=2000)
    for second in range(100):
        router_logs.write({"app": [(float(second), f"request {second}")], "nobody": [(0.0, "x")]})
    router_logs.write({"../escape": [(0.0, "x")]})
    path = applogs.router_log_path(tmp_path / "app")
    assert path.stat().st_size <= 2000 and rotated(path).stat().st_size <= 2000
    assert not (tmp_path / "nobody").exists()
    assert not (tmp_path.parent / "escape").exists()
    last = applogs.recent_lines(tmp_path / "app", 1)
    assert last == ["1970-01-01 00:01:39.000000000 +0000 UTC [router] request 99"]
