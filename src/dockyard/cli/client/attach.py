"""The client side of a one-off's terminal: the official client's attach protocol.

A raw ``CONNECT <path>`` on a TCP (or TLS) connection of our own, Basic ``:<JWT>``; after
``HTTP/1.1 200`` the socket carries the user's keystrokes one way and the terminal's output
the other, until the server closes it when the command has ended. Then ``GET <url>/wait``
gives the exit code (API-OPS.md §5)."""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import ssl
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

from dockyard.cli.client.errors import NetworkError
from dockyard.cli.client.http import USER_AGENT, raise_for_status

EOT = b"\x04"


def basic(jwt: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f":{jwt}".encode()).decode()}


def open_session(url: str, jwt: str) -> socket.socket:
    """The connection after the server's 200: a raw byte stream."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        sock = socket.create_connection((parts.hostname or "", port), timeout=30)
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        auth = basic(jwt)["Authorization"]
        sock.sendall(
            f"CONNECT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAuthorization: {auth}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(1)  # one byte at a time: what follows the head is output
            if not chunk:
                break
            head += chunk
    except OSError as exc:
        raise NetworkError(f"Could not attach to the one-off at {url}: {exc}.") from None
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
    if status != b"200":
        body = head.partition(b"\r\n\r\n")[2] or sock.recv(65536)
        sock.close()
        first_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        raise NetworkError(
            f"The server refused to attach the one-off ({first_line}): "
            f"{body.decode(errors='replace')}"
        )
    sock.settimeout(None)
    return sock


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    """stdin in raw mode while attached, when it is a terminal: keys go to the command."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def bridge(sock: socket.socket) -> None:
    """stdin → socket (EOT at end of input), socket → stdout, until the server closes."""

    def type_in() -> None:
        fd = sys.stdin.fileno()
        with contextlib.suppress(OSError):
            while True:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                data = os.read(fd, 4096)
                if not data:
                    sock.sendall(EOT)
                    return
                sock.sendall(data)

    threading.Thread(target=type_in, daemon=True, name="one-off stdin").start()
    out = sys.stdout.buffer
    while data := sock.recv(65536):
        out.write(data)
        out.flush()
    sock.close()


def send_size(url: str, jwt: str) -> None:
    if not sys.stdout.isatty():
        return
    size = os.get_terminal_size(sys.stdout.fileno())
    with contextlib.suppress(httpx.HTTPError):
        httpx.put(
            url,
            json={"width": str(size.columns), "height": str(size.lines)},
            headers=basic(jwt),
            timeout=10,
        )


def exit_code(url: str, jwt: str) -> int:
    try:
        # Answered when the command has ended, which may take a while after the stream.
        response = httpx.get(
            f"{url}/wait", headers=basic(jwt), timeout=httpx.Timeout(60.0, read=None)
        )
    except httpx.TransportError as exc:
        raise NetworkError(f"Could not read the one-off's exit code: {exc}.") from None
    raise_for_status(response)
    code: int = response.json()["exit_code"]
    return code
