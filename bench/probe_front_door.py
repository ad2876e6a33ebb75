"""The API's front door under attack (issue 15, items 1 and 2): figures, not a target.

Starts a ``dockyard serve`` with its default limits and runs, from this process:

- a header flood: N connections each sending one header of S MiB (never ending its head),
  while one client makes normal requests; reports the server's RSS before and its peak
  (``VmHWM`` after ``clear_refs``), the statuses the attackers got, and the slowest
  normal request;
- slowloris: M connections each sending a header line every second; reports how long the
  server took to close them (or how many were still open after a minute), and whether a
  normal request still works meanwhile.

    .venv/bin/python -m bench.probe_front_door
    .venv/bin/python -m bench.probe_front_door --connections 100 --header-mib 8 --slow 300

To measure another version of the server, put its sources first on the path:
``PYTHONPATH=/path/to/other/src .venv/bin/python -m bench.probe_front_door``.
"""

from __future__ import annotations

import argparse
import select
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.harness import memory_kib, running_server

SLOW_WAIT_SECONDS = 60.0


def _status(reply: bytes) -> str:
    parts = reply.split(maxsplit=2)
    return parts[1].decode() if len(parts) > 1 else "none"


def flood(port: int, size: int) -> str:
    """One attacker: a head that never ends; the status the server answered, if any."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /v1/regions HTTP/1.1\r\nHost: api\r\nX-Pad: ")
        piece = b"a" * 65536
        sent = 0
        try:
            while sent < size:
                readable, writable, _ = select.select([sock], [sock], [], 30)
                if readable or not writable:
                    break
                sent += sock.send(piece)
        except OSError:
            pass
        sock.settimeout(5)
        try:
            return _status(sock.recv(65536))
        except OSError:
            return "none"


def slow(port: int, deadline: float) -> tuple[float, str] | None:
    """One slowloris connection: seconds until the server closed it and the status it
    answered ("none" for a close without an answer); None if it stayed open."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    except OSError:
        return 0.0, "connect failed"
    reply = b""
    with sock:
        opened = time.monotonic()
        sock.settimeout(1.0)
        try:
            sock.sendall(b"GET /v1/regions HTTP/1.1\r\n")
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    sock.sendall(b"X-Slow: 1\r\n")
                    continue
                if not chunk:
                    break
                reply += chunk
            else:
                return None
        except OSError:
            pass
        return time.monotonic() - opened, _status(reply)


def normal_latencies(url: str, stop: threading.Event, into: list[float]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            began = time.monotonic()
            try:
                client.get(f"{url}/v1/regions")
                into.append(time.monotonic() - began)
            except httpx.HTTPError:
                into.append(float("inf"))
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--header-mib", type=float, default=8.0)
    parser.add_argument("--slow", type=int, default=300)
    args = parser.parse_args()
    with running_server("probe-front-door") as server:
        pid = server.pid
        time.sleep(1.0)  # start-up's own allocations settle
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        before, _ = memory_kib(pid)
        latencies: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=normal_latencies, args=(server.url, stop, latencies))
        watcher.start()
        began = time.monotonic()
        with ThreadPoolExecutor(args.connections) as pool:
            statuses = list(
                pool.map(
                    lambda _: flood(server.port, int(args.header_mib * 1024 * 1024)),
                    range(args.connections),
                )
            )
        flood_seconds = time.monotonic() - began
        stop.set()
        watcher.join()
        _, peak = memory_kib(pid)
        counts = {status: statuses.count(status) for status in sorted(set(statuses))}
        print(
            f"header flood: {args.connections} connections x {args.header_mib:g} MiB in "
            f"{flood_seconds:.1f} s; answers {counts}; server RSS {before / 1024:.0f} MiB "
            f"before, peak {peak / 1024:.0f} MiB; slowest normal request "
            f"{max(latencies, default=0):.3f} s ({len(latencies)} made)"
        )

        deadline = time.monotonic() + SLOW_WAIT_SECONDS
        with ThreadPoolExecutor(args.slow) as pool:
            futures = [pool.submit(slow, server.port, deadline) for _ in range(args.slow)]
            time.sleep(1.0)
            probe_began = time.monotonic()
            # From another address: the attackers' own is at its cap (429) by design.
            transport = httpx.HTTPTransport(local_address="127.0.0.2")
            try:
                with httpx.Client(transport=transport, timeout=30) as client:
                    during = str(client.get(f"{server.url}/v1/regions").status_code)
            except httpx.HTTPError as exc:
                during = f"failed ({exc!r})"
            probe_seconds = time.monotonic() - probe_began
            results = [future.result() for future in futures]
        ended = [value for value in results if value is not None]
        still_open = len(results) - len(ended)
        answers = {status: sum(1 for _, s in ended if s == status) for _, status in ended}
        cut = sorted(seconds for seconds, status in ended if status == "408")
        summary = (
            f"min {cut[0]:.2f} s, median {statistics.median(cut):.2f} s, max {cut[-1]:.2f} s"
            if cut
            else "none"
        )
        print(
            f"slowloris: {args.slow} connections; answers {answers}; cut at the header "
            f"timeout after {summary}; still open after {SLOW_WAIT_SECONDS:g} s: "
            f"{still_open}; a normal request from another address meanwhile: {during} in "
            f"{probe_seconds:.3f} s"
        )


if __name__ == "__main__":
    main()
