"""A tiny HTTP/1.1 client over raw sockets, for what httpx hides (framing, connections)."""

from __future__ import annotations

import asyncio

MiB = 1024 * 1024
PIECE = b"0123456789abcdef" * 4096  # 64 KiB


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response (head, decoded body) off a keep-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return head, body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def get(host: str, path: str = "/", *, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
