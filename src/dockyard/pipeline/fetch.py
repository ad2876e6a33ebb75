"""Download an archive or clone a buildpack from a URL a user gave us.

This module is the server-side request forgery boundary (docs/security.md, "Fetching
source_url"). A user-supplied URL may only make dockyard open a TCP connection to an
address that was checked here:

* the URL is http or https, without user-info, backslashes, control characters or a
  non-default port (unless the operator allowed that exact ``host:port``);
* the host is resolved once, *every* address must be globally routable (IPv6 forms that
  embed an IPv4 address are unwrapped and the IPv4 address is checked too), and the
  connection goes to one of those checked addresses — there is no second lookup that a
  rebinding DNS server could answer differently;
* redirects are followed by hand, at most ``MAX_REDIRECTS``, each target checked afresh;
* proxies from the environment are ignored, bytes and total wall time are capped.

Allow-listed pairs (``DOCKYARD_FETCH_ALLOW``, for development) may reach loopback and
private addresses, but never link-local or cloud metadata addresses.

Every refusal and failure raises ``FetchError`` with one generic message, so a user cannot
map the internal network by comparing errors. The precise reason is logged at INFO with
the URL redacted (query strings may carry tokens).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote, urljoin, urlsplit

from dockyard.errors import FetchError

__all__ = ["MAX_REDIRECTS", "Resolver", "clone_git", "fetch_to_file", "redact"]

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
"""host, port -> IP address strings. Injected by tests; the default uses getaddrinfo."""

MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA special-purpose IPv4 blocks. ``ipaddress.is_global`` in Python 3.11 misses some of
# them (multicast is "global" there), so the list is spelled out and checked as well.
_NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
_LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")
# Metadata services that do not live in link-local space. Never reachable, allow-list or not.
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
    }
)

# IPv6 prefixes whose low 32 bits are an IPv4 address the packet ends up at.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated; also holds :: and ::1
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT, RFC 2765
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_TEREDO = ipaddress.IPv6Network("2001::/32")

# A host made only of these characters may be a numeric IPv4 spelling (2130706433,
# 0177.0.0.1, 0x7f.1) that getaddrinfo would turn into an address without any DNS.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
# Printable ASCII without space and backslash: anything else is either ambiguous between
# URL parsers (urlsplit silently drops tabs and newlines) or a header injection.
_URL_CHARACTERS = re.compile(r"[!-\[\]-~]*")
# A ref given to git: a branch, tag or commit; never an option (leading "-").
_GIT_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+-]*")
_GIT_DUMB_HTTP_NO_SHALLOW = "dumb http transport does not support shallow"


class _Refused(Exception):
    """Internal: why a fetch was refused or failed. Logged, never shown to the user."""


# --------------------------------------------------------------------------- addresses


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address wraps, for the forms that deliver to it."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_TRANSLATED or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refusal_reason(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why ``address`` must not be connected to, or None if it may be.

    ``allow_private`` is set for allow-listed (host, port) pairs: loopback and private
    addresses are then fine, link-local and metadata addresses still never are.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        return _ipv6_refusal_reason(address, allow_private=allow_private)
    return _ipv4_refusal_reason(address, allow_private=allow_private)


def _ipv4_refusal_reason(address: ipaddress.IPv4Address, *, allow_private: bool) -> str | None:
    if address in _LINK_LOCAL_V4:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if allow_private:
        return None
    if not address.is_global or any(address in network for network in _NON_PUBLIC_V4):
        return "not globally routable (loopback, private, shared or reserved)"
    return None


def _ipv6_refusal_reason(address: ipaddress.IPv6Address, *, allow_private: bool) -> str | None:
    if address in _LINK_LOCAL_V6:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_loopback or address.is_unspecified:
        # Checked before unwrapping: ::1 and :: are also IPv4-compatible addresses.
        if address.is_unspecified:
            return "unspecified"
        return None if allow_private else "loopback"
    if address in _TEREDO:
        # Teredo relays tunnel to wherever the embedded client address says.
        return "a Teredo tunnel address"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = _refusal_reason(embedded, allow_private=allow_private)
        return None if reason is None else f"wraps {embedded}, {reason}"
    if allow_private:
        return None
    # Python 3.11 counts 64:ff9b::/96 and 2002::/16 as global: those were unwrapped above.
    if not address.is_global or address.is_site_local or address.is_reserved:
        return "not globally routable"
    if address in _NAT64_LOCAL:
        return "local-use NAT64"
    return None


def _parse_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise _Refused(f"the resolver returned {text!r}, which is not an IP address") from None


def _literal_address(host: str) -> IPAddress | None:
    """The address a host spells without DNS: an IP literal or a numeric IPv4 spelling.

    The system resolver turns ``2130706433`` or ``0x7f.1`` into 127.0.0.1 without asking
    DNS; doing it here means an injected resolver cannot make such a host look public.
    """
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host)
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
    if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rpartition(".")[2]):
        # WHATWG URL parsing treats a host ending in a number as IPv4 or invalid;
        # refusing it keeps this check and every later parser in agreement.
        raise _Refused("the host ends in a number but is not an IPv4 address")
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _resolve_within(resolver: Resolver, host: str, port: int, deadline: float) -> list[str]:
    """Run the resolver in a thread so a hanging DNS server cannot outlast the time cap."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["addresses"] = resolver(host, port)
        except Exception as exc:  # handed to the caller's thread, not swallowed
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise _Refused("resolving the host took longer than the time cap")
    error = outcome.get("error")
    # UnicodeError: the IDNA codec refuses labels over 63 characters and the like.
    if isinstance(error, OSError | UnicodeError):
        raise _Refused(f"the host did not resolve: {error}")
    if isinstance(error, BaseException):
        raise error
    addresses = outcome["addresses"]
    assert isinstance(addresses, list)
    return addresses


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower-case, IPv6 without brackets
    port: int
    request_target: str  # path and query, as sent on the request line

    @property
    def default_port(self) -> bool:
        return self.port == _DEFAULT_PORTS[self.scheme]

    def url(self) -> str:
        """The URL rebuilt from its checked parts: lower-case host, explicit port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.request_target}"


def _parse_url(url: str, allow: frozenset[tuple[str, int]]) -> _Target:
    if not _URL_CHARACTERS.fullmatch(url):
        raise _Refused("the URL has spaces, backslashes, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _Refused("the URL does not parse (unbalanced IPv6 brackets?)") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise _Refused(f"scheme {parts.scheme!r} is not http or https")
    if "@" in parts.netloc:
        raise _Refused("the URL has user-info")
    host = parts.hostname
    if not host or "%" in host:
        raise _Refused("the URL has no usable host")
    if host.endswith("."):
        # curl may not match "example.com." to a pinned "example.com" and would then
        # resolve it itself; nobody needs the trailing dot in an archive URL.
        raise _Refused("the host ends with a dot")
    try:
        port = parts.port
    except ValueError:
        raise _Refused("the URL's port is not a number from 0 to 65535") from None
    if port is None:
        port = _DEFAULT_PORTS[parts.scheme]
    target = _Target(
        scheme=parts.scheme,
        host=host,
        port=port,
        request_target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )
    if not target.default_port and (host, port) not in allow:
        raise _Refused(f"port {port} is not the scheme's default and not allow-listed")
    return target


def _checked_addresses(
    target: _Target,
    allow: frozenset[tuple[str, int]],
    resolver: Resolver,
    deadline: float,
) -> list[str]:
    """Resolve once and return the addresses to connect to; refuse unless all are fine."""
    literal = _literal_address(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        texts = _resolve_within(resolver, target.host, target.port, deadline)
        if not texts:
            raise _Refused("the host resolved to no address")
        addresses = [_parse_address(text) for text in texts]
    allow_private = (target.host, target.port) in allow
    for address in addresses:
        reason = _refusal_reason(address, allow_private=allow_private)
        if reason is not None:
            raise _Refused(f"{target.host} resolves to {address}, {reason}")
    return [str(address) for address in addresses]


def redact(url: str) -> str:
    """``url`` without user-info, query string and fragment: safe for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    # Percent-encode whatever could break a log line or a terminal.
    netloc = quote(netloc, safe="[]:.-_~")
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~")
    scheme = quote(parts.scheme, safe="+-.")
    if not scheme:
        return path or "<unparsable URL>"
    return f"{scheme}://{netloc}{path}"


# --------------------------------------------------------------------------- connections


class _Watchdog:
    """Enforces the total time cap by shutting down the socket in use at the deadline.

    Socket timeouts only bound each single read; a server trickling one byte at a time
    (in the headers or the body) would otherwise never hit them.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.expired:
            raise _Refused("the time cap was reached")
        return left

    def watch(self, sock: socket.socket) -> None:
        # A duplicate descriptor of the same socket: shutdown() acts on the socket, so it
        # also wakes up a TLS read on the wrapped copy, which replaces the original object.
        with self._lock:
            self._forget_locked()
            if self.expired:
                raise _Refused("the time cap was reached")
            self._socket = sock.dup()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)

    def _forget_locked(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._forget_locked()


def _ssl_context() -> ssl.SSLContext:
    """Certificates verified against the system CA bundle and the URL's host name."""
    return ssl.create_default_context()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a checked address, with the URL's host in the Host header.

    http.client never consults proxy environment variables, and overriding ``connect``
    means the host name is never looked up again.
    """

    def __init__(self, target: _Target, address: str, watchdog: _Watchdog) -> None:
        super().__init__(target.host, target.port, timeout=watchdog.remaining())
        self._address = address
        self._watchdog = watchdog

    def connect(self) -> None:
        self.sock = socket.create_connection(
            (self._address, self.port), timeout=self._watchdog.remaining()
        )
        self._watchdog.watch(self.sock)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = 443

    def connect(self) -> None:
        super().connect()
        # SNI and certificate verification against the host name from the URL.
        self.sock = _ssl_context().wrap_socket(self.sock, server_hostname=self.host)


def _open(target: _Target, addresses: list[str], watchdog: _Watchdog) -> _PinnedHTTPConnection:
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    last_error: OSError | None = None
    for address in addresses:
        connection = connection_class(target, address, watchdog)
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            if isinstance(exc, ssl.SSLError):
                raise  # the server answered: another address of the same name will not help
            last_error = exc
            continue
        except BaseException:  # the time cap, mid-connect: do not leak the socket
            connection.close()
            raise
        return connection
    raise _Refused(f"could not connect to {', '.join(addresses)}: {last_error}")


# --------------------------------------------------------------------------- fetch


def _human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if count < 1024:
            return f"{count:g} {unit}"
        count //= 1024
    return f"{count:g} GiB"


def _fetch_failed_message(url: str, max_bytes: int, timeout: float) -> str:
    return (
        f"The archive could not be downloaded from {redact(url)}: the address is not "
        "reachable from dockyard, or the server did not answer with the file "
        f"(HTTP 200, at most {_human_bytes(max_bytes)}) within {timeout:g} seconds."
    )


def _copy_body(
    response: http.client.HTTPResponse, out: BinaryIO, max_bytes: int, watchdog: _Watchdog
) -> int:
    declared = response.length  # None when absent, chunked or unparsable
    if declared is not None and declared > max_bytes:
        raise _Refused(f"Content-Length {declared} is over the cap of {max_bytes} bytes")
    written = 0
    while chunk := response.read(_CHUNK_BYTES):
        written += len(chunk)
        if written > max_bytes:
            raise _Refused(f"the body is over the cap of {max_bytes} bytes")
        out.write(chunk)
    # A shut-down socket reads as a clean end of the body: check the clock first.
    watchdog.remaining()
    if declared is not None and written != declared:
        # http.client's read(amt) accepts a connection closed before Content-Length.
        raise _Refused(f"the body ended after {written} of {declared} bytes")
    return written


def _download(
    url: str,
    out: BinaryIO,
    *,
    allow: frozenset[tuple[str, int]],
    max_bytes: int,
    resolver: Resolver,
    watchdog: _Watchdog,
) -> int:
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        target = _parse_url(current, allow)
        addresses = _checked_addresses(target, allow, resolver, watchdog.deadline)
        connection = _open(target, addresses, watchdog)
        try:
            connection.putrequest("GET", target.request_target, skip_accept_encoding=True)
            connection.putheader("User-Agent", "dockyard-fetch")
            connection.putheader("Accept", "*/*")
            connection.putheader("Accept-Encoding", "identity")
            connection.endheaders()
            response = connection.getresponse()
            if response.status == 200:
                return _copy_body(response, out, max_bytes, watchdog)
            location = response.getheader("Location")
            if response.status not in _REDIRECT_STATUSES or not location:
                raise _Refused(f"{redact(current)} answered HTTP {response.status}")
            if hop == MAX_REDIRECTS:
                raise _Refused(f"more than {MAX_REDIRECTS} redirects")
            try:
                following = urljoin(current, location.strip())
            except ValueError:
                raise _Refused(f"{redact(current)} redirects to an unparsable URL") from None
            if target.scheme == "https" and urlsplit(following).scheme == "http":
                raise _Refused(f"{redact(current)} redirects from https down to http")
            logger.info("fetch: %s redirects to %s", redact(current), redact(following))
            current = following
        finally:
            connection.close()
    raise AssertionError("unreachable: the loop returns or raises")


def _describe(exc: BaseException) -> str:
    # http.client messages can quote the request line, query string included.
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, http.client.HTTPException):
        return f"{type(exc).__name__} from the server"
    return f"{type(exc).__name__}: {exc}"


def fetch_to_file(
    url: str,
    dest: pathlib.Path,
    *,
    allow: frozenset[tuple[str, int]] = frozenset(),
    max_bytes: int,
    timeout: float,
    resolver: Resolver | None = None,
) -> int:
    """Download ``url`` to ``dest`` and return the number of bytes written.

    The body is streamed to a temporary file beside ``dest`` and renamed over it only when
    complete; on any failure the temporary file is removed and ``dest`` is left as it was.
    Raises ``FetchError`` with one generic message for every refusal and failure.
    """
    watchdog = _Watchdog(time.monotonic() + timeout)
    descriptor, temporary_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    temporary = pathlib.Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            written = _download(
                url,
                out,
                allow=allow,
                max_bytes=max_bytes,
                resolver=resolver or _system_resolver,
                watchdog=watchdog,
            )
        os.replace(temporary, dest)
    except (_Refused, OSError, http.client.HTTPException) as exc:
        logger.info("fetch of %s failed: %s", redact(url), _describe(exc))
        raise FetchError(_fetch_failed_message(url, max_bytes, timeout)) from None
    finally:
        watchdog.close()
        temporary.unlink(missing_ok=True)
    logger.info("fetched %s (%d bytes)", redact(url), written)
    return written


# --------------------------------------------------------------------------- git


def _clone_failed_message(url: str, ref: str | None, timeout: float) -> str:
    wanted = f"with the ref {ref!r} " if ref else ""
    return (
        f"The buildpack could not be cloned from {redact(url)}: the address is not "
        "reachable from dockyard, or the server did not answer as a git repository "
        f"{wanted}within {timeout:g} seconds."
    )


def _git_environment(home: pathlib.Path) -> dict[str, str]:
    """A scrubbed environment: no proxies, no credentials, no user or system git config."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
    }


def _git_pinning_options(target: _Target, address: str) -> list[str]:
    pinned = f"[{address}]" if ":" in address else address
    return [
        # curl connects to the checked address instead of resolving the host again.
        "-c",
        f"http.curloptResolve={target.host}:{target.port}:{pinned}",
        # Redirects (and dumb-HTTP alternates, which git treats alike) would lead to
        # unchecked hosts.
        "-c",
        "http.followRedirects=false",
        "-c",
        "http.proxy=",
        "-c",
        "http.sslVerify=true",
        "-c",
        "credential.helper=",
        "-c",
        "protocol.allow=never",
        "-c",
        f"protocol.{target.scheme}.allow=always",
        "-c",
        "advice.detachedHead=false",
    ]


def _scrub(text: str, url: str) -> str:
    """git output with the URL's query and user-info removed."""
    text = text.replace(url, redact(url))
    text = re.sub(r"\?[^\s'\"]*", "?…", text)
    # One log line, whatever the server made git print.
    return " ".join(text.split())


@contextlib.contextmanager
def _process_group_killed_on_exit(process: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _run_git(argv: list[str], env: dict[str, str], watchdog: _Watchdog, url: str) -> None:
    """Run git; ``url`` is only used to scrub git's error output before it is logged."""
    # A new session so the timeout also kills git-remote-http and other helpers.
    with (
        subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        ) as process,
        _process_group_killed_on_exit(process),
    ):
        try:
            _, stderr = process.communicate(timeout=watchdog.remaining())
        except subprocess.TimeoutExpired:
            raise _Refused("git did not finish within the time cap") from None
    if process.returncode != 0:
        output = _scrub(stderr.decode(errors="replace"), url)
        raise _Refused(f"git exited with status {process.returncode}: {output}")


def clone_git(
    url: str,
    dest: pathlib.Path,
    *,
    allow: frozenset[tuple[str, int]] = frozenset(),
    timeout: float,
    ref: str | None = None,
    resolver: Resolver | None = None,
) -> None:
    """Clone the git repository at ``url`` (http or https) into ``dest``, checking ``ref``.

    ``ref`` is a branch, tag or commit; without it, a ``#ref`` fragment of the URL is
    used, as buildpack URLs usually name their version that way. The host is checked
    exactly as for ``fetch_to_file`` and git is pinned to the checked address. ``dest``
    must not exist or be an empty directory; it appears only once the clone is complete.
    """
    repository_url, _, fragment = url.partition("#")
    ref = ref or fragment or None
    if ref is not None and (not _GIT_REF.fullmatch(ref) or ".." in ref):
        raise FetchError(f"{ref!r} is not a git branch, tag or commit name.")
    watchdog = _Watchdog(time.monotonic() + timeout)
    workspace = pathlib.Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        target = _parse_url(repository_url, allow)
        address = _checked_addresses(
            target, allow, resolver or _system_resolver, watchdog.deadline
        )[0]
        # git gets the URL as checked, so curl's host:port matches the pinned entry exactly.
        _clone_pinned(target.url(), workspace, target, address, ref, watchdog)
        os.replace(workspace / "repository", dest)
    except (_Refused, OSError) as exc:
        logger.info("git clone of %s failed: %s", redact(url), _describe(exc))
        raise FetchError(_clone_failed_message(url, ref, timeout)) from None
    finally:
        watchdog.close()
        shutil.rmtree(workspace, ignore_errors=True)
    logger.info("cloned %s at %s", redact(url), ref or "the default branch")


def _clone_pinned(
    url: str,
    workspace: pathlib.Path,
    target: _Target,
    address: str,
    ref: str | None,
    watchdog: _Watchdog,
) -> None:
    env = _git_environment(workspace)
    git = ["git", *_git_pinning_options(target, address)]
    checkout = str(workspace / "repository")
    branch = ["--branch", ref] if ref else []
    try:
        _run_git([*git, "clone", "--depth", "1", *branch, "--", url, checkout], env, watchdog, url)
        return
    except _Refused as exc:
        shallow_failure = exc
    shutil.rmtree(checkout, ignore_errors=True)
    # Two reasons a shallow clone fails where a full one works: dumb-HTTP servers
    # (plain static file hosting) cannot serve shallow clones, and --branch takes branch
    # and tag names only, not commits.
    names_a_commit = ref is not None and re.fullmatch(r"[0-9a-f]{7,40}", ref) is not None
    if _GIT_DUMB_HTTP_NO_SHALLOW in str(shallow_failure):
        try:
            _run_git([*git, "clone", *branch, "--", url, checkout], env, watchdog, url)
            return
        except _Refused:
            if not names_a_commit:
                raise
        shutil.rmtree(checkout, ignore_errors=True)
    elif not names_a_commit:
        raise shallow_failure
    assert ref is not None
    _run_git([*git, "clone", "--", url, checkout], env, watchdog, url)
    _run_git([*git, "-C", checkout, "checkout", "--detach", ref, "--"], env, watchdog, url)
