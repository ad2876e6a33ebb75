"""The attach server: the official client's one-off protocol, on a listener of its own,
in each process that runs one-offs (``dockyard serve``, every ``dockyard worker``).

``scalingo run`` opens its own TCP connection to the operation's ``attach_url`` and
writes ``CONNECT <path> HTTP/1.1`` with ``Authorization: Basic :<JWT>``; after our
``HTTP/1.1 200`` the socket is a raw byte stream both ways: the user's keystrokes
(Ctrl-C as 0x03, end of input as 0x04) into the one-off's terminal, the terminal's output
back, until we close it when the command has ended. Then ``PUT <path>`` with
``{"width": "132", "height": "43"}`` (strings) sizes the terminal, and ``GET
<path>/wait`` answers ``{"exit_code": N}``. ASGI cannot hand a handler the raw socket,
hence this small HTTP/1.1 server of its own (API-OPS.md §5).

Every request is authenticated as the API's are (a worker reads the same users and
signing key in the shared database), and a one-off of an app the caller cannot see is
"not found", exactly as an unknown one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from dockyard.api.auth import credential, user_for_credential
from dockyard.api.errors import error_response
from dockyard.clientaddress import ClientConnections
from dockyard.errors import BadRequest, DockyardError, NotFound, Unauthenticated
from dockyard.platform import Platform
from dockyard.runtime.oneoff import OneOff, OneOffs
from dockyard.runtime.terminal import resize
from dockyard.services import apps as apps_service
from dockyard.services.oneoffs import ATTACH_PATH_PREFIX

log = logging.getLogger(__name__)

_PATH = re.compile(
    "^" + re.escape(ATTACH_PATH_PREFIX) + r"(?P<id>[0-9a-f]{32})(?P<wait>/wait|/files)?/?$"
)
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
# The client parses our 200 through a buffered reader, then reads the raw socket: bytes
# sent right behind the head can be swallowed by that buffer (API-OPS.md §5.6). The
# first output waits this long after the head went out.
FIRST_OUTPUT_DELAY_SECONDS = 0.15
READ_CHUNK = 64 * 1024
TOO_MANY_CONNECTIONS = (
    b'{"error": "too many connections from your address: close some one-off sessions'
    b' and try again"}'
)
ENDED_POLL_SECONDS = 0.05


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class AttachServer:
    def __init__(
        self, platform: Platform, one_offs: OneOffs, *, max_connections_per_client: int = 256
    ) -> None:
        self.platform = platform
        self.one_offs = one_offs
        # The API's cap, counted apart: a connection here may live as long as a one-off,
        # so one address could otherwise hold every file descriptor of the server.
        self.max_connections_per_client = max_connections_per_client
        self._connections = ClientConnections()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if not self._connections.take(address, self.max_connections_per_client):
            with contextlib.suppress(ConnectionError):
                await _respond(writer, 429, TOO_MANY_CONNECTIONS)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await asyncio.wait_for(_read_request(reader), HEAD_TIMEOUT_SECONDS)
            if request is not None:
                await self._answer(request, reader, writer)
        except DockyardError as exc:
            response = error_response(exc)
            await _respond(writer, response.status_code, bytes(response.body))
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("attach request failed")
            with contextlib.suppress(Exception):
                await _respond(writer, 500, b'{"error": "internal error"}')
        finally:
            self._connections.give_back(address)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        match = _PATH.match(request.path)
        if match is None:
            raise NotFound("route")
        peer = writer.get_extra_info("peername")
        one_off = await asyncio.to_thread(
            self._authorize,
            request.headers.get("authorization"),
            match["id"],
            str(peer[0]) if peer else "",
        )
        suffix = match["wait"]
        if request.method == "CONNECT" and suffix is None:
            await self._bridge(one_off, reader, writer)
        elif request.method == "PUT" and suffix is None:
            _resize(one_off, request.body)
            await _respond(writer, 200, b"{}")
        elif request.method == "GET" and suffix == "/wait":
            await _ended(one_off, timeout=None)
            await _respond(writer, 200, json.dumps({"exit_code": one_off.exit_code}).encode())
        elif request.method == "POST" and suffix == "/files":
            raise BadRequest(
                "Uploading files to a one-off is not supported by this server: put them in"
                " the app's code, or fetch them from the command.",
                code="unsupported",
            )
        else:
            raise NotFound("route")

    def _authorize(self, header: str | None, one_off_id: str, host: str) -> OneOff:
        """The one-off, if the caller may use it; the same checks and rate limits as the
        API's (api/auth.py): an address whose credentials keep failing is refused."""
        platform = self.platform
        limiter = platform.rate_limiter
        limiter.refuse_if_failing(host)
        try:
            user = user_for_credential(platform, credential(header))
        except Unauthenticated:
            limiter.count_failure(host)
            raise
        limiter.check_user(user.id)
        one_off = self.one_offs.get(one_off_id)
        try:
            apps_service.find_app(db=platform.db, owner=user, name=one_off.app)
        except NotFound:
            raise NotFound("one-off") from None
        return one_off

    async def _bridge(
        self, one_off: OneOff, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        master = self.one_offs.attach(one_off)
        if master is None:
            raise BadRequest(
                "This one-off is not waiting for a terminal: it runs detached, or another"
                " client attached to it, or nobody came in time.",
                code="not_attachable",
            )
        try:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(FIRST_OUTPUT_DELAY_SECONDS)
            output = asyncio.create_task(_pump_output(master, writer))
            typing = asyncio.create_task(_pump_input(reader, master))
            done, _ = await asyncio.wait({output, typing}, return_when=asyncio.FIRST_COMPLETED)
            if typing in done and not output.done():
                # The client went away: so does its command.
                await asyncio.to_thread(self.one_offs.stop, one_off)
                with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                    await asyncio.wait_for(output, 5.0)
            # Output ended: the command exited (every holder of the terminal is gone).
            typing.cancel()
            output.cancel()
            await asyncio.gather(output, typing, return_exceptions=True)
            await _ended(one_off, timeout=10.0)
        finally:
            self.one_offs.release_terminal(one_off)


async def _ended(one_off: OneOff, *, timeout: float | None) -> None:
    """Until the one-off has ended (polled: a thread blocked per waiting client would
    exhaust the loop's small default executor)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while not one_off.ended.is_set() and (deadline is None or loop.time() < deadline):
        await asyncio.sleep(ENDED_POLL_SECONDS)


async def _pump_output(master: int, writer: asyncio.StreamWriter) -> None:
    """Terminal → client, until the terminal has no writer left (EIO)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(master, False)
    readable = asyncio.Event()
    loop.add_reader(master, readable.set)
    try:
        while True:
            try:
                data = os.read(master, READ_CHUNK)
            except BlockingIOError:
                readable.clear()
                await readable.wait()
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            writer.write(data)
            await writer.drain()
    finally:
        loop.remove_reader(master)


async def _pump_input(reader: asyncio.StreamReader, master: int) -> None:
    """Client → terminal, until the client closes its side."""
    while data := await reader.read(READ_CHUNK):
        view = memoryview(data)
        while view:
            try:
                written = os.write(master, view)
            except BlockingIOError:
                await asyncio.sleep(0.01)  # the command is not reading: wait for it
                continue
            except OSError:
                return  # the terminal is gone; the output side ends the session
            view = view[written:]


def _resize(one_off: OneOff, body: bytes) -> None:
    try:
        size: Any = json.loads(body or b"{}")
        width, height = int(size["width"]), int(size["height"])
    except (ValueError, KeyError, TypeError):
        raise BadRequest(
            'Send the terminal size as {"width": "132", "height": "43"}.', code="invalid_size"
        ) from None
    master = one_off.terminal
    if master is not None and one_off.attached:
        with contextlib.suppress(OSError):
            resize(master, width=width, height=height)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest("The request head is too large.", code="head_too_large") from None
    except asyncio.IncompleteReadError:
        return None
    if len(head) > MAX_HEAD_BYTES:
        raise BadRequest("The request head is too large.", code="head_too_large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("Not an HTTP/1.1 request.", code="bad_request")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        raise BadRequest("The request body is too large or its length is missing.", code="bad_body")
    body = await reader.readexactly(int(length)) if int(length) else b""
    return _Request(method, target.partition("?")[0], headers, body)


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    reason = {
        200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"
    }.get(
        status, "Error"
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
