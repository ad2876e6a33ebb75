"""The router's own responses: small HTML pages that say what happened in one sentence.

Every page is a complete HTTP/1.1 response in bytes, ready to write to the client. Names
shown on a page come from the client's Host header, so they are always HTML-escaped.
"""

from __future__ import annotations

import html

_REASONS = {
    301: "Moved Permanently",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

RETRY_AFTER_DEPLOYING = 5


def render(
    status: int,
    sentence: str,
    *,
    keep_alive: bool,
    head_only: bool = False,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A full response whose body is ``sentence`` (plain text, escaped here) in HTML."""
    reason = _REASONS[status]
    text = html.escape(sentence)
    body = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{status} {reason}</title></head>\n"
        f"<body><h1>{status} {reason}</h1>\n<p>{text}</p></body></html>\n"
    ).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/html; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        *(f"{name}: {value}" for name, value in extra_headers),
        "Connection: keep-alive" if keep_alive else "Connection: close",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def for_status(app: str, status: str, *, host: str, keep_alive: bool, head_only: bool) -> bytes:
    """The page for an app that has no backend, chosen by its route status."""
    if status == "deploying":
        return render(
            503,
            f"The app {app} is being deployed, try again in a moment.",
            keep_alive=keep_alive,
            head_only=head_only,
            extra_headers=(("Retry-After", str(RETRY_AFTER_DEPLOYING)),),
        )
    if status == "stopped":
        return render(
            503,
            f"The app {app} is stopped.",
            keep_alive=keep_alive,
            head_only=head_only,
        )
    if status == "scaled-down":
        return render(
            503,
            f"The app {app} is scaled to zero web instances: scale web up to serve it again.",
            keep_alive=keep_alive,
            head_only=head_only,
        )
    if status == "crashed":
        return render(
            502,
            f"The app {app} is not answering: its process crashed.",
            keep_alive=keep_alive,
            head_only=head_only,
        )
    return not_found(app_host=host, keep_alive=keep_alive, head_only=head_only)


def not_found(*, app_host: str, keep_alive: bool, head_only: bool = False) -> bytes:
    return render(
        404,
        f"No app is served at {app_host}.",
        keep_alive=keep_alive,
        head_only=head_only,
    )


def to_https(host: str, target: str, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """The redirect of an app that is served over HTTPS only (``force-https``)."""
    location = f"https://{host}{target if target.startswith('/') else '/'}"
    return render(
        301,
        f"This app is served over HTTPS only: {location}",
        keep_alive=keep_alive,
        head_only=head_only,
        extra_headers=(("Location", location),),
    )


def not_answering(app: str, *, keep_alive: bool, head_only: bool = False) -> bytes:
    return render(
        502,
        f"The app {app} is not answering right now.",
        keep_alive=keep_alive,
        head_only=head_only,
    )


def too_slow(app: str) -> bytes:
    return render(504, f"The app {app} took too long to answer.", keep_alive=False)


def bad_request(reason: str) -> bytes:
    return render(400, f"The request could not be understood: {reason}.", keep_alive=False)


def head_too_large(limit: int) -> bytes:
    return render(
        431,
        f"The request line and headers are larger than the {limit // 1024} KiB allowed.",
        keep_alive=False,
    )


def head_timeout() -> bytes:
    return render(408, "The request headers took too long to arrive.", keep_alive=False)


def too_many_connections(limit: int) -> bytes:
    return render(
        429,
        f"Too many open connections from your address (at most {limit}): close some first.",
        keep_alive=False,
    )
