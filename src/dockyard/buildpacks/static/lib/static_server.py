#!/usr/bin/python3
"""A small static file server for production: python3 static_server.py [ROOT].

Listens on $PORT (all interfaces, or $HOST), one thread per connection. Serves files
under ROOT (default: the current directory) and nothing else:

- GET and HEAD only; ``index.html`` for a directory, never a listing;
- no path outside ROOT: ``..``, encoded separators and symlinks that lead out are 404;
- hidden files and directories (``.git``, ``.env``, ``.dockyard``) are 404, except
  ``.well-known``;
- ETag and Last-Modified, answered with 304 to If-None-Match / If-Modified-Since;
- ``404.html`` from ROOT, when present, as the body of a 404.

Standard library only, so it runs with the stack's python3 without installing anything.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import posixpath
import signal
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EXTRA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".xml": "application/xml",
}
CHUNK = 256 * 1024


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    kind = EXTRA_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
    kind = kind or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/json", "application/xml", "image/svg+xml"):
        kind += "; charset=utf-8"
    return kind


class StaticHandler(BaseHTTPRequestHandler):
    server_version = "dockyard-static"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    root: Path  # set on the subclass made by serve()

    def do_GET(self) -> None:
        self.serve(body=True)

    def do_HEAD(self) -> None:
        self.serve(body=False)

    def do_POST(self) -> None:
        self.not_allowed()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def resolve(self, url_path: str) -> Path | None:
        """The file under root that ``url_path`` names, or None."""
        raw = urllib.parse.urlsplit(url_path).path
        decoded = urllib.parse.unquote(raw, errors="strict")
        if "\x00" in decoded or "\\" in decoded:
            return None
        parts = [p for p in posixpath.normpath("/" + decoded).split("/") if p]
        for part in parts:
            if part == ".." or (part.startswith(".") and part != ".well-known"):
                return None
        candidate = self.root.joinpath(*parts)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real != self.root and self.root not in real.parents:
            return None  # a symlink that leads out of the root
        return real

    def serve(self, *, body: bool) -> None:
        try:
            path = self.resolve(self.path)
        except UnicodeDecodeError:
            path = None
        if path is not None and path.is_dir():
            raw = urllib.parse.urlsplit(self.path).path
            if not raw.endswith("/"):
                self.redirect(raw + "/")
                return
            path = path / "index.html"
            if not path.is_file():
                path = None
        if path is None or not path.is_file():
            self.not_found(body=body)
            return
        self.send_file(path, body=body)

    def redirect(self, location: str) -> None:
        query = urllib.parse.urlsplit(self.path).query
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location + (f"?{query}" if query else ""))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def not_found(self, *, body: bool) -> None:
        page = self.root / "404.html"
        data = page.read_bytes() if page.is_file() else b"404 Not Found\n"
        kind = "text/html; charset=utf-8" if page.is_file() else "text/plain; charset=utf-8"
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def send_file(self, path: Path, *, body: bool) -> None:
        try:
            file = path.open("rb")
        except OSError:
            self.not_found(body=body)
            return
        with file:
            st = os.fstat(file.fileno())
            etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            if self.not_modified(etag, st.st_mtime):
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", modified)
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type(path))
            self.send_header("Content-Length", str(st.st_size))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            # Revalidate every time: cheap with the ETag, and a new deploy shows at once.
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if body:
                while chunk := file.read(CHUNK):
                    self.wfile.write(chunk)

    def not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
            return "*" in tags or etag in tags
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                parsed = email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
            return int(mtime) <= parsed.timestamp()
        return False

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def serve(root: Path, host: str, port: int) -> None:
    handler = type("Handler", (StaticHandler,), {"root": root.resolve()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"Serving {root} on http://{host}:{port}/", flush=True)
    server.serve_forever()
    server.server_close()


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    port = int(os.environ.get("PORT", "5000"))
    serve(root, os.environ.get("HOST", "0.0.0.0"), port)


if __name__ == "__main__":
    main()
