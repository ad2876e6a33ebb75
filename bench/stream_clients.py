"""N WebSocket clients on one app's deployment stream, in their own process.

    python -m bench.stream_clients --url WS_URL --token TOKEN --clients 50 --out result.json

Connects and authenticates every client, prints ``READY``, reads the deployment id to
follow from stdin, and when every client has seen that deployment's final status, writes
one JSON object to ``--out``: per client, the delivery latency of each benchmark line
(the time of arrival minus the time the build printed it, both from this host's wall
clock), how many lines arrived out of order or not at all, and the digest of the whole
log it received.

Frames are only stamped on arrival and parsed afterwards, so parsing 500,000 frames does
not delay the stamping of the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import re
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from bench.loadproc import run_to_file

FINAL = {"success", "build-error", "crashed-error", "timeout-error", "aborted"}
LINE = re.compile(r"^bench line (\d+) at (\d+\.\d+)$")


async def _client(url: str, token: str) -> ClientConnection:
    # No compression, like the official client (gorilla/websocket does not offer it).
    socket = await connect(
        url,
        origin=Origin("http://scalingo-cli.local/1"),
        max_queue=None,
        open_timeout=30,
        compression=None,
    )
    await socket.send(json.dumps({"type": "auth", "data": {"token": token}}) + "\n")
    return socket


async def _record(socket: ClientConnection, target: asyncio.Future[str]) -> list[tuple[float, str]]:
    frames: list[tuple[float, str]] = []
    async for message in socket:
        frames.append((time.time(), str(message)))
        if '"status"' in message and target.done():
            frame = json.loads(message)
            is_status = frame["type"] == "status" and frame.get("id") == target.result()
            if is_status and frame["data"]["status"] in FINAL:
                break
    await socket.close()
    return frames


def analyse(frames: list[tuple[float, str]], deployment_id: str, expected: int) -> dict[str, Any]:
    latencies: list[float] = []
    contents: list[str] = []
    last = -1
    reordered = 0
    seen: set[int] = set()
    final = None
    for stamp, raw in frames:
        frame = json.loads(raw)
        if frame.get("id") != deployment_id:
            continue
        if frame["type"] == "status":
            final = frame["data"]["status"]
        if frame["type"] != "log":
            continue
        content = frame["data"]["content"]
        contents.append(content)
        match = LINE.match(content)
        if match is None:
            continue
        number = int(match.group(1))
        latencies.append((stamp - float(match.group(2))) * 1000)
        if number <= last:
            reordered += 1
        last = max(last, number)
        seen.add(number)
    digest = hashlib.sha256("".join(c + "\n" for c in contents).encode()).hexdigest()
    return {
        "final": final,
        "latencies_ms": latencies,
        "received": len(seen),
        "lost": expected - len(seen),
        "reordered": reordered,
        "log_lines": len(contents),
        "log_sha256": digest,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # Half a million recorded frames make the cyclic garbage collector's full passes long
    # enough (~100 ms) to show up as delivery latency: this process creates no cycles
    # worth collecting while it records, so it does not collect until it is done.
    gc.disable()
    sockets = await asyncio.gather(*(_client(args.url, args.token) for _ in range(args.clients)))
    target: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    recorders = [asyncio.create_task(_record(socket, target)) for socket in sockets]
    # No frame says "authenticated": leave the server a moment to subscribe everyone.
    await asyncio.sleep(1.0)
    print("READY", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    deployment_id = line.strip()
    target.set_result(deployment_id)
    recorded = await asyncio.wait_for(asyncio.gather(*recorders), timeout=args.timeout)
    return {"clients": [analyse(frames, deployment_id, args.lines) for frames in recorded]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args()
    run_to_file(main_async(args), args.out)


if __name__ == "__main__":
    main()
