"""The attach server caps the connections one address may hold, as the API's front door
does: a one-off connection may live for hours, so without a cap one address could take
every file descriptor of the server."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from dockyard.api.attach import AttachServer
from dockyard.platform import Platform
from dockyard.runtime.oneoff import OneOffs


async def _status_of(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


def test_one_address_over_its_connection_cap_is_refused_with_429_until_one_closes() -> None:
    async def scenario() -> None:
        # Neither is reached: the cap is checked before any request is read.
        no_platform, no_one_offs = cast(Platform, None), cast(OneOffs, cast(Any, None))
        server = AttachServer(no_platform, no_one_offs, max_connections_per_client=2)
        await server.start("127.0.0.1", 0)
        try:
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            refused = await _status_of(server.port, b"")
            assert refused.startswith(b"HTTP/1.1 429"), refused

            _, first_writer = held.pop()
            first_writer.close()
            await first_writer.wait_closed()
            # Its slot is given back once the server has seen the close.
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                answer = await _status_of(server.port, b"GET /nowhere HTTP/1.1\r\n\r\n")
                if not answer.startswith(b"HTTP/1.1 429"):
                    break
                assert asyncio.get_running_loop().time() < deadline, "slot never given back"
                await asyncio.sleep(0.01)
            assert answer.startswith(b"HTTP/1.1 404"), answer
            for _, writer in held:
                writer.close()
        finally:
            await server.close()

    asyncio.run(scenario())
