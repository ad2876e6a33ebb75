"""Router throughput: keep-alive requests/s through the router vs straight to the backend.

Usage:
    .venv/bin/python bench/router_throughput.py [--backend uvicorn|raw|both]
        [--connections 32] [--seconds 3] [--rounds 3] [--json PATH]

The backend and the router each run in their own process (with uvloop), the load comes
from this process over raw asyncio sockets: N keep-alive connections, each sending the
next GET as soon as the previous response is complete. Both runs happen in the same
invocation, back to back, so the ratio is what to compare across machines.

Backends: ``uvicorn`` is a minimal ASGI app under uvicorn+httptools, what a deployed
Python app looks like; ``raw`` is a bare asyncio protocol answering a fixed response,
the worst case for the router because the backend costs almost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


# -- processes under test -----------------------------------------------------------------


def _serve_raw_backend() -> None:
    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            count = self.buffer.count(b"\r\n\r\n")
            if count:
                self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
                self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        print("PORT", server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    uvloop.run(main())


async def _asgi_app(scope: dict[str, Any], receive: object, send: object) -> None:
    assert scope["type"] == "http"
    await send(  # type: ignore[operator]
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, world!"})  # type: ignore[operator]


def _serve_uvicorn_backend() -> None:
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print("PORT", sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        _asgi_app,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    uvicorn.Server(config).run(sockets=[sock])


def _serve_router(backend_port: int, logs_dir: Path | None) -> None:
    import uvloop

    from dockyard.router import Backend, Router, RouteTable
    from dockyard.router.accesslog import AccessLog
    from dockyard.runtime.applogs import RouterLogs

    async def main() -> None:
        table = RouteTable()
        table.set_backend("bench", Backend("127.0.0.1", backend_port))
        logs = None
        if logs_dir is not None:  # as ``dockyard serve`` runs it: a line per request, on disk
            (logs_dir / "bench").mkdir(exist_ok=True)
            logs = AccessLog(RouterLogs(logs_dir).write)
        router = Router(table, apps_domain="localhost", access_log=logs)
        await router.start("127.0.0.1", 0)
        print("PORT", router.port, flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def _spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "PORT":
        proc.kill()
        raise SystemExit(f"{args} did not start")
    return proc, int(line[1])


# -- load ---------------------------------------------------------------------------------


async def _client(port: int, stop_at: float, counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\nUser-Agent: bench\r\n\r\n"
    loop = asyncio.get_running_loop()
    done = 0
    while loop.time() < stop_at:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        start = head.lower().index(b"content-length:") + 15
        length = int(head[start : head.index(b"\r\n", start)])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected response: {head[:40]!r}")
        done += 1
    counter.append(done)
    writer.close()


async def _load(port: int, connections: int, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    # A short warm-up so connection setup and first-request costs stay out of the count.
    await asyncio.gather(*(_client(port, loop.time() + 0.5, []) for _ in range(connections)))
    counter: list[int] = []
    started = time.perf_counter()
    stop_at = loop.time() + seconds
    await asyncio.gather(*(_client(port, stop_at, counter) for _ in range(connections)))
    return sum(counter) / (time.perf_counter() - started)


def _measure(
    backend: str, connections: int, seconds: float, rounds: int, access_log: bool
) -> dict[str, object]:
    import tempfile

    import uvloop

    logs_dir = tempfile.TemporaryDirectory(prefix="router-bench-logs-")
    backend_proc, backend_port = _spawn(f"--serve-{backend}-backend")
    logs = ["--router-logs-dir", logs_dir.name] if access_log else []
    router_proc, router_port = _spawn("--serve-router", str(backend_port), *logs)
    direct: list[float] = []
    routed: list[float] = []
    try:
        # Interleaved rounds, medians: on a shared machine the load from other processes
        # drifts, and alternating spreads that drift over both sides evenly.
        for _ in range(rounds):
            direct.append(uvloop.run(_load(backend_port, connections, seconds)))
            routed.append(uvloop.run(_load(router_port, connections, seconds)))
    finally:
        for proc in (router_proc, backend_proc):
            proc.kill()
            proc.wait()
        logs_dir.cleanup()
    ratios = sorted(r / d for r, d in zip(routed, direct, strict=True))
    return {
        "backend": backend,
        "access_log": access_log,
        "connections": connections,
        "seconds": seconds,
        "rounds": rounds,
        "direct_rps": round(statistics.median(direct)),
        "router_rps": round(statistics.median(routed)),
        "ratio": round(statistics.median(routed) / statistics.median(direct), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["uvicorn", "raw", "both"], default="both")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--serve-raw-backend", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-uvicorn-backend", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-router", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--router-logs-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the router writes its access lines, as dockyard serve does (default)",
    )
    args = parser.parse_args()
    if args.serve_raw_backend:
        return _serve_raw_backend()
    if args.serve_uvicorn_backend:
        return _serve_uvicorn_backend()
    if args.serve_router is not None:
        return _serve_router(args.serve_router, args.router_logs_dir)

    backends = ["uvicorn", "raw"] if args.backend == "both" else [args.backend]
    results = [
        _measure(b, args.connections, args.seconds, args.rounds, args.access_log) for b in backends
    ]
    machine = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    print(f"machine: {machine['cores']} cores, Python {machine['python']}")
    print(
        f"{'backend':<9} {'conns':>5} {'direct req/s':>13} {'router req/s':>13} {'ratio':>6}"
        "  ratio per round"
    )
    for r in results:
        print(
            f"{r['backend']:<9} {r['connections']:>5} {r['direct_rps']:>13} "
            f"{r['router_rps']:>13} {r['ratio']:>6}  {r['ratio_per_round']}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
