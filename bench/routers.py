"""Routers: requests/s and p99 latency through the built-in router, through Caddy (HTTP
and HTTPS) and straight to the app, in one run, with ``wrk`` as the load generator.

    .venv/bin/python -m bench --only routers

The app is the router benchmark's raw asyncio backend (a fixed 13-byte answer, so the
routers' own cost shows); the built-in router runs in its own process (uvloop) as
``dockyard serve`` runs it; Caddy is started and configured by dockyard's ``CaddyRouter``
through its admin API, with a certificate of the app's own for HTTPS (no ACME here) and
its access log sent to dockyard, as ``dockyard serve`` runs it: in its default mode
(Caddy -> the built-in router, in this process -> the app) and with
``DOCKYARD_CADDY_UPSTREAMS=instances`` (Caddy -> the app).
Targets are interleaved round by round, so drift of a shared machine spreads evenly.
``wrk`` (Debian's) is written in C with an event loop per thread: it is not the
bottleneck; it runs 2 threads and 32 keep-alive connections.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench.harness import Mode, Result, free_port, median
from bench.router_throughput import _spawn

NAME = "routers"
HOST = "bench-app.bench.test"
CONNECTIONS = 32
THREADS = 2
# The routers against the app alone (it costs nothing, so this is the routers' worst case).
RATIO_TARGET = (
    0.1  # a floor against pathologies (a push loop, a slow path); the figures are the point
)
P99_TARGET_MS = 50.0


def wrk(url: str, *, host: str, seconds: int) -> tuple[float, float]:
    """Requests/s and p99 latency (ms) of ``wrk`` against ``url`` with ``Host: host``."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(THREADS),
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{seconds}s",
            "--latency",
            "-H",
            f"Host: {host}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failed requests on {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99_ms


def _certificate(directory: Path) -> tuple[str, str]:
    cert, key = directory / "bench.crt", directory / "bench.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=DNS:{HOST},DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


class _LoopThread:
    def __init__(self) -> None:
        import uvloop  # as uvicorn runs the server's loop

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class _AppendTo:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")  # noqa: SIM115 - closed by the process's end

    def __call__(self, app: str, line: str) -> None:
        self.file.write(f"{app} {line}\n")


def run(mode: Mode) -> Result:
    from dockyard.router.caddy import CaddyOptions, CaddyRouter
    from dockyard.routetable import Backend, RouteTable

    result = Result(NAME)
    missing = [tool for tool in ("wrk", "caddy") if shutil.which(tool) is None]
    if missing:
        result.error = f"{', '.join(missing)} not installed (bash scripts/setup.sh installs them)"
        return result
    seconds = mode.pick(3, 8)
    rounds = mode.pick(1, 3)
    scratch = Path(tempfile.mkdtemp(prefix="dockyard-bench-routers-"))
    backend, backend_port = _spawn("--serve-raw-backend")
    builtin, builtin_port = _spawn("--serve-router", str(backend_port))
    table = RouteTable()
    table.set_backend("bench-app", Backend("127.0.0.1", backend_port))
    table.set_hosts(aliases={}, own_certificates={HOST: _certificate(scratch)})
    loop = _LoopThread()  # the built-in routers Caddy proxies to live on it, as in serve
    routers = {
        mode: CaddyRouter(
            table,
            CaddyOptions(
                admin=f"127.0.0.1:{free_port()}",
                binary="caddy",
                apps_domain="bench.test",
                http_port=free_port(),
                https_port=free_port(),
                acme_ca="https://127.0.0.1:9/directory",  # never asked: the certificate is loaded
                acme_ca_root="",
                acme_email="",
                ask_url="http://127.0.0.1:9/ask",
                storage_dir=scratch / f"caddy-{mode}",
                upstreams=mode,
            ),
            # As ``dockyard serve`` runs it: every request's access log line goes to the app's log.
            access_log=_AppendTo(scratch / f"router-{mode}.log"),
        )
        for mode in ("router", "instances")
    }
    via_router, direct_to_instances = routers["router"], routers["instances"]
    targets = {
        "direct": (f"http://127.0.0.1:{backend_port}/", HOST),
        "builtin": (f"http://127.0.0.1:{builtin_port}/", "bench.localhost"),
        "caddy_http": (f"http://127.0.0.1:{via_router.port}/", HOST),
        # wrk takes the SNI from the URL and resolves it: "localhost", which the
        # certificate covers too.
        "caddy_https": (f"https://localhost:{via_router.https_port}/", HOST),
        "caddy_instances_http": (f"http://127.0.0.1:{direct_to_instances.port}/", HOST),
        "caddy_instances_https": (f"https://localhost:{direct_to_instances.https_port}/", HOST),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    try:
        for caddy in routers.values():
            loop.run(caddy.start("127.0.0.1", caddy.port))
        for _ in range(rounds):
            for name, (url, host) in targets.items():
                samples[name].append(wrk(url, host=host, seconds=seconds))
    finally:
        for caddy in routers.values():
            loop.run(caddy.close())
        loop.stop()
        for proc in (builtin, backend):
            proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    rps = {name: median([s[0] for s in runs]) for name, runs in samples.items()}
    p99 = {name: median([s[1] for s in runs]) for name, runs in samples.items()}
    result.samples.update(
        {name: [{"rps": r, "p99_ms": p} for r, p in runs] for name, runs in samples.items()},
        seconds=seconds,
        rounds=rounds,
        connections=CONNECTIONS,
        threads=THREADS,
    )
    for name, label in (
        ("builtin", "built-in router"),
        ("caddy_http", "Caddy router, HTTP"),
        ("caddy_https", "Caddy router, HTTPS"),
        ("caddy_instances_http", "Caddy router (upstreams=instances), HTTP"),
        ("caddy_instances_https", "Caddy router (upstreams=instances), HTTPS"),
    ):
        result.check(
            f"requests/s through the {label}",
            "req/s",
            rps[name],
            rps["direct"],
            f">= {RATIO_TARGET:g} x straight to the app",
            rps[name] >= RATIO_TARGET * rps["direct"],
        )
        result.check(
            f"p99 through the {label}",
            "ms",
            p99[name],
            p99["direct"],
            f"< {P99_TARGET_MS:g} ms",
            p99[name] < P99_TARGET_MS,
        )
    result.notes.append(
        f"wrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s, {rounds} interleaved round(s); the app is "
        "a raw asyncio server answering 13 bytes (the routers' worst case)"
    )
    return result
