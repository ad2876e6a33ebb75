"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending its next
GET as soon as the previous response is complete, for a fixed time.

It runs in its own process (``python -m bench.loadgen``) on uvloop over raw sockets,
because a Python HTTP client would cost more CPU than the server it measures. It writes
one JSON object to ``--out``: the latencies of the responses in milliseconds, and any
response that was not a 200.

    python -m bench.loadgen --port P --path /v1/regions --connections 16 --seconds 10 \
        --header "Authorization: Bearer …" --out result.json [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.loadproc import run_to_file

# What the official client sends on every call (docs/api.md), minus the body headers of a GET.
CLIENT_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "Accept-Encoding": "gzip",
    "User-Agent": "Scalingo CLI v1.48.0",
}


class Failure(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise Failure("chunked responses are not expected from these endpoints")
    if length is None:
        raise Failure("a response without Content-Length")
    body = await reader.readexactly(length)
    return status, body


async def _connection(
    port: int, request: bytes, until: float, warm_until: float, out: dict[str, list]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            started = time.perf_counter()
            if started >= until:
                return
            writer.write(request)
            status, body = await _read_response(reader)
            elapsed = (time.perf_counter() - started) * 1000
            if started < warm_until:
                continue
            if status != 200:
                out["errors"].append(f"{status} {body[:200]!r}")
            out["latencies_ms"].append(elapsed)
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {**CLIENT_HEADERS, "Host": f"127.0.0.1:{args.port}"}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    request = (
        f"GET {args.path} HTTP/1.1\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    ).encode()
    out: dict[str, list] = {"latencies_ms": [], "errors": []}
    now = time.perf_counter()
    warm_until = now + args.warmup
    until = warm_until + args.seconds
    await asyncio.gather(
        *(_connection(args.port, request, until, warm_until, out) for _ in range(args.connections))
    )
    out["seconds"] = [args.seconds]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args()
    run_to_file(run(args), args.out)


if __name__ == "__main__":
    main()
