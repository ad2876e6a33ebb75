"""Stream: one build printing 10,000 timestamped log lines, followed live by 50 WebSocket
clients. Every line must reach every client, in order, within 100 ms (p99), and the
``/output`` endpoint must hold exactly what was streamed.

The lines come from a custom buildpack (named in the app's ``.buildpacks``) served as a
tarball from a loopback HTTP server that the dockyard server is allowed to fetch from
(``DOCKYARD_FETCH_ALLOW``). Its ``bin/compile`` prints ``bench line N at <unix time>``,
paced at a steady rate; the clients (``bench.stream_clients``, their own process) compare
each line's time with its arrival. There is no baseline: the targets are absolute.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import apps
from bench.harness import (
    REPO,
    Api,
    Mode,
    Result,
    free_port,
    must_succeed,
    percentile,
    running_server,
    traversable_dir,
)

NAME = "stream"
TARGET_P99_MS = 100.0

COMPILE = """\
#!/usr/bin/python3
import sys, time
LINES, RATE = {lines}, {rate}
start = time.time()
for number in range(LINES):
    if RATE:
        delay = start + number / RATE - time.time()
        if delay > 0:
            time.sleep(delay)
    sys.stdout.write(f"bench line {{number:05d}} at {{time.time():.6f}}\\n")
    sys.stdout.flush()
"""


def buildpack_tarball(lines: int, rate: float) -> bytes:
    files = {
        "bin/detect": "#!/bin/sh\necho bench-stream\n",
        "bin/compile": COMPILE.format(lines=lines, rate=rate),
        "bin/release": "#!/bin/sh\necho '--- {}'\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(f"bench-buildpack/{name}")
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def run(mode: Mode) -> Result:
    lines = mode.pick(1_000, 10_000)
    clients = mode.pick(50, 50)
    rate = mode.pick(2_000, 1_000)
    result = Result(NAME)
    shelf = traversable_dir("stream-buildpack-")
    (shelf / "buildpack.tar.gz").write_bytes(buildpack_tarball(lines, rate))
    port = free_port()
    with (
        file_server(shelf, port),
        running_server(NAME, DOCKYARD_FETCH_ALLOW=f"127.0.0.1:{port}") as server,
    ):
        api = Api(server, server.create_user())
        try:
            created = api.create_app("chatty")
            payload = apps.stdlib_app(
                extra={".buildpacks": f"http://127.0.0.1:{port}/buildpack.tar.gz\n"}
            )
            result_file = shelf / "clients.json"
            listener = subprocess.Popen(
                [sys.executable, "-m", "bench.stream_clients",
                 "--url", created["links"]["deployments_stream"], "--token", api.token,
                 "--clients", str(clients), "--lines", str(lines), "--out", str(result_file)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
            )  # fmt: skip
            assert listener.stdin is not None and listener.stdout is not None
            if listener.stdout.readline().strip() != "READY":
                raise RuntimeError("the stream clients did not connect")
            deployment_id = api.submit("chatty", api.upload(payload))
            listener.stdin.write(deployment_id + "\n")
            listener.stdin.flush()
            if listener.wait(timeout=900) != 0:
                raise RuntimeError("the stream clients failed (their error is above)")
            received = json.loads(result_file.read_text())["clients"]
            must_succeed(api, "chatty", deployment_id, api.wait("chatty", deployment_id))
            output = api.output("chatty", deployment_id)
        finally:
            api.close()
    shutil.rmtree(shelf, ignore_errors=True)
    report(result, received, output, lines=lines, clients=clients, rate=rate)
    return result


def report(
    result: Result,
    received: list[dict[str, Any]],
    output: str,
    *,
    lines: int,
    clients: int,
    rate: float,
) -> None:
    latencies = [value for client in received for value in client["latencies_ms"]]
    p99 = percentile(latencies, 0.99)
    lost = sum(client["lost"] for client in received)
    reordered = sum(client["reordered"] for client in received)
    output_digest = hashlib.sha256(output.encode()).hexdigest()
    differing = sum(client["log_sha256"] != output_digest for client in received)
    result.check(
        f"line delivery p99 ({clients} clients, {rate:g} lines/s)", "ms", p99, None,
        f"< {TARGET_P99_MS:.0f} ms", p99 < TARGET_P99_MS,
    )  # fmt: skip
    result.check(
        "lines lost or reordered", "lines", lost + reordered, None, "0", lost + reordered == 0
    )
    result.check(
        "clients whose log differs from /output", "clients", differing, None, "0", differing == 0
    )
    result.notes.append(
        f"{len(latencies)} deliveries: p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies, default=float('nan')):.1f} ms; "
        f"lost {lost}, reordered {reordered}; /output {len(output.splitlines())} lines"
    )
    result.samples = {
        "lines": lines,
        "clients": clients,
        "lines_per_second": rate,
        "p50_ms": percentile(latencies, 0.5),
        "p90_ms": percentile(latencies, 0.9),
        "p99_ms": p99,
        "max_ms": max(latencies, default=None),
        "per_client": [
            {key: value for key, value in client.items() if key != "latencies_ms"}
            | {"p99_ms": percentile(client["latencies_ms"], 0.99)}
            for client in received
        ],
        # Every client's latencies would be 500,000 numbers: keep the first client's.
        "first_client_latencies_ms": received[0]["latencies_ms"] if received else [],
        "output_sha256": output_digest,
    }


@contextmanager
def file_server(directory: Path, port: int) -> Iterator[None]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
