"""The apps the benchmarks deploy, as the tar.gz archives a user would upload."""

from __future__ import annotations

import io
import tarfile

# A stdlib web server: nothing to install, so a deployment's time is the platform's own.
# ``python3`` (not ``python``) so the same Procfile runs in the floor, where no venv exists.
STDLIB_APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARK = "{mark}"


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {body}.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Hello).serve_forever()
"""

FLASK_APP = """\
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "hello {mark}\\n"
"""


def tar_gz(files: dict[str, str], root: str = "app") -> bytes:
    """A code-host style archive: one top-level directory holding ``files``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


HELLO = 'f"hello {MARK}\\n"'
CONTAINER = 'os.environ["CONTAINER"]'  # which instance answered: web-1, web-2, ...


def stdlib_app(
    mark: str = "v1", extra: dict[str, str] | None = None, *, body: str = HELLO
) -> bytes:
    """A stdlib web server answering ``body`` (a Python expression) to every GET."""
    files = {
        "Procfile": "web: python3 app.py\n",
        "requirements.txt": "",
        "app.py": STDLIB_APP.format(mark=mark, body=body),
        **(extra or {}),
    }
    return tar_gz(files)


def flask_app(mark: str = "v1") -> bytes:
    return tar_gz(
        {
            "Procfile": "web: gunicorn --bind 0.0.0.0:$PORT --workers 2 app:app\n",
            "requirements.txt": "flask==3.1.3\ngunicorn==23.0.0\n",
            "app.py": FLASK_APP.format(mark=mark),
        }
    )


# A Go module with its one dependency vendored (a local module, laid out as `go mod
# vendor` does) and the version comment of Scalingo's sample-go-martini: builds with no
# download but the toolchain's.
GO_MAIN = """\
package main

import (
	"net/http"
	"os"

	"example.com/greeting"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(greeting.Hello("{mark}")))
	})
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
"""


def go_app(mark: str = "v1") -> bytes:
    return tar_gz(
        {
            "Procfile": "web: hello\n",
            "go.mod": "module example.com/hello\n\n// +scalingo goVersion go1.17\ngo 1.17\n\n"
            "require example.com/greeting v1.0.0\n",
            "main.go": GO_MAIN.replace("{mark}", mark),
            "vendor/modules.txt": "# example.com/greeting v1.0.0\n## explicit\nexample.com/greeting\n",
            "vendor/example.com/greeting/greeting.go": "package greeting\n\n"
            'func Hello(mark string) string { return "hello " + mark + "\\n" }\n',
        }
    )
