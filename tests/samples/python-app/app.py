"""The python sample app: a stdlib web server that proves its dependency is installed."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import six


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"Hello from python-app (six {six.__version__})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
