"""The app the container runtimes' end-to-end tests deploy: it says which instance answered
and what it can reach from inside (the isolation probes)."""

from __future__ import annotations

from tests.helpers import tar_gz_from_files

PROBE_APP = """
import os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def reachable(target):
    host, port = target.rsplit(":", 1)
    if host == "GATEWAY":
        for line in open("/proc/net/route").read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                host = socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return target + " open"
    except OSError as exc:
        return target + " closed " + exc.__class__.__name__

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ.get("MESSAGE", "hello") + "\\n").encode()
        if self.path == "/host":
            body = socket.gethostname().encode()
        if self.path.startswith("/probe/"):
            body = "\\n".join(reachable(t) for t in self.path[7:].split(",")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("request", self.path, flush=True)

print("booting web on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def probe_app(message: str) -> bytes:
    """An app answering ``MESSAGE``, its host name at ``/host`` and what it can reach at
    ``/probe/host:port,…`` (``GATEWAY`` is its default gateway)."""
    return tar_gz_from_files(
        {"Procfile": f"web: MESSAGE='{message}' python3 server.py\n", "server.py": PROBE_APP}
    )
