"""Telling, from /proc/PID/net/tcp, that an app listens on loopback only (so the router
cannot reach it from outside its namespace)."""

from __future__ import annotations

from pathlib import Path

from dockyard.runtime.local import _listeners

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def table(tmp_path: Path, *rows: tuple[str, str]) -> Path:
    path = tmp_path / "tcp"
    lines = [
        f"   {i}: {address} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  1000\n"
        for i, (address, state) in enumerate(rows)
    ]
    path.write_text(HEADER + "".join(lines))
    return path


def test_a_listener_on_127_0_0_1_is_loopback_and_on_0_0_0_0_is_not(tmp_path: Path) -> None:
    port_5000 = "1388"
    assert _listeners(table(tmp_path, (f"0100007F:{port_5000}", "0A")), 5000) == {"loopback"}
    assert _listeners(table(tmp_path, (f"00000000:{port_5000}", "0A")), 5000) == {"other"}
    assert _listeners(
        table(tmp_path, (f"0100007F:{port_5000}", "0A"), (f"0200D50A:{port_5000}", "0A")), 5000
    ) == {"loopback", "other"}


def test_other_ports_and_connections_are_ignored(tmp_path: Path) -> None:
    rows = [("0100007F:1389", "0A"), ("0100007F:1388", "01")]  # port 5001; an established one
    assert _listeners(table(tmp_path, *rows), 5000) == set()
    assert _listeners(tmp_path / "missing", 5000) == set()


def test_ipv6_loopback_is_loopback(tmp_path: Path) -> None:
    path = table(tmp_path, ("00000000000000000000000001000000:1388", "0A"))
    assert _listeners(path, 5000) == {"loopback"}
