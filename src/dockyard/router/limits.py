"""The router's guards against slow, huge or stuck peers, in one place for the operator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # A request line and headers larger than this get 431: real browsers stay far below,
    # and the cap bounds what one connection can make the router hold.
    max_head_bytes: int = 64 * 1024
    # From a connection's first byte of a head to its last; slowloris clients trickle
    # header bytes to hold connections open, and this cuts them off.
    header_timeout: float = 10.0
    # How long an idle keep-alive connection may wait for its next request.
    keepalive_timeout: float = 60.0
    # Opening a TCP connection to an instance, on this machine or the workers' network: it
    # takes milliseconds, or a second when one SYN is lost and sent again. Past that the
    # request is tried on another instance rather than held (Caddy's dial_timeout is 1 s).
    connect_timeout: float = 2.0
    # How long a backend may take to start answering, and how long any body transfer may
    # stall (no byte either way) before both connections are dropped.
    io_timeout: float = 300.0
    # WebSockets are often quiet for long stretches; ping frames keep live ones under this.
    tunnel_idle_timeout: float = 3600.0
    # close() lets in-flight requests finish for this long, then cuts them.
    shutdown_grace: float = 10.0
    # Open connections from one client address: past it a connection gets a 429 and is
    # closed, so that one address cannot take every file descriptor of the server (which
    # under ``serve`` the API shares). 0: no cap (behind Caddy every client is Caddy).
    max_connections_per_client: int = 256
