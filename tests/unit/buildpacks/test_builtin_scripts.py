"""The pure parts of the built-in buildpacks' scripts, and the static site server."""

from __future__ import annotations

import http.client
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from dockyard.pipeline.buildpacks import BUILTIN_ROOT
from dockyard.pipeline.builtins import BUILTIN_BUILDPACKS


def load(relative: str) -> ModuleType:
    """Import a buildpack script without leaving __pycache__ in the buildpack's directory."""
    path = BUILTIN_ROOT / relative
    loader = importlib.machinery.SourceFileLoader(path.name.replace(".", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


nodejs = load("nodejs/bin/compile")
go = load("go/lib/go_compile.py")
python = load("python/lib/python_compile.py")
static = load("static/lib/static_server.py")


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        (">=18", True),
        ("^20.1", True),
        ("20.x", True),
        ("~20.3", False),
        ("~20.20", True),
        ("18 || 20", True),
        ("^18 || ^19", False),
        (">=16 <20", False),
        (">= 16 < 21", True),
        ("16 - 20", True),
        ("16 - 19", False),
        ("*", True),
        ("v20.20.2", True),
        ("=20.20.1", False),
        ("<=20", True),
        (">20", False),
        ("^0.1", False),
    ],
)
def test_node_engines_ranges(spec: str, ok: bool) -> None:
    assert nodejs.satisfies((20, 20, 2), spec) is ok


def test_pipfile_lock_to_requirements(tmp_path: Path) -> None:
    lock = tmp_path / "Pipfile.lock"
    lock.write_text(
        json.dumps(
            {
                "_meta": {"sources": [{"url": "https://pypi.org/simple"}]},
                "default": {
                    "flask": {"version": "==3.1.0", "hashes": ["sha256:x"]},
                    "colorama": {"version": "==0.4.6", "markers": "sys_platform == 'win32'"},
                    "uvicorn": {"version": "==0.30.0", "extras": ["standard"]},
                },
                "develop": {"pytest": {"version": "==8.0.0"}},
            }
        )
    )
    assert python.pipfile_lock_requirements(lock) == [
        "flask==3.1.0",
        "colorama==0.4.6 ; sys_platform == 'win32'",
        "uvicorn[standard]==0.30.0",
    ]


def test_poetry_lock_to_requirements_keeps_main_and_platform_markers(tmp_path: Path) -> None:
    lock = tmp_path / "poetry.lock"
    lock.write_text(
        """
[[package]]
name = "click"
version = "8.1.7"
groups = ["main"]
[package.dependencies]
colorama = {version = "*", markers = "platform_system == \\"Windows\\""}

[[package]]
name = "colorama"
version = "0.4.6"
groups = ["main"]

[[package]]
name = "pytest"
version = "8.0.0"
groups = ["dev"]

[[package]]
name = "six"
version = "1.16.0"
category = "main"
"""
    )
    assert python.poetry_lock_requirements(lock) == [
        "click==8.1.7",
        'colorama==0.4.6 ; (platform_system == "Windows")',
        "six==1.16.0",
    ]


# -- the static site server ----------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[http.client.HTTPConnection]:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / ".git").mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "style.css").write_text("body{}")
    (root / "app.js").write_text("1")
    (root / "docs" / "index.html").write_text("docs")
    (root / ".env").write_text("SECRET=1")
    (root / ".git" / "config").write_text("x")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    handler = type(
        "H",
        (static.StaticHandler,),
        {"root": root.resolve(), "log_message": lambda *args: None},  # quiet test output
    )
    server = static.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    yield conn
    conn.close()
    server.shutdown()
    server.server_close()


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET", **headers: str):
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    return response, response.read()


def test_static_serves_files_with_types_and_index(site: http.client.HTTPConnection) -> None:
    response, body = get(site, "/")
    assert (response.status, body) == (200, b"<h1>home</h1>")
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    response, _ = get(site, "/style.css")
    assert response.getheader("Content-Type") == "text/css; charset=utf-8"
    response, _ = get(site, "/app.js")
    assert response.getheader("Content-Type") == "text/javascript; charset=utf-8"
    response, body = get(site, "/docs/")
    assert body == b"docs"
    response, _ = get(site, "/docs?x=1")
    assert (response.status, response.getheader("Location")) == (301, "/docs/?x=1")


def test_static_conditional_requests_and_head(site: http.client.HTTPConnection) -> None:
    response, _ = get(site, "/style.css")
    etag, modified = response.getheader("ETag"), response.getheader("Last-Modified")
    assert etag and modified
    response, body = get(site, "/style.css", **{"If-None-Match": etag})
    assert (response.status, body) == (304, b"")
    response, body = get(site, "/style.css", **{"If-Modified-Since": modified})
    assert response.status == 304
    response, body = get(site, "/style.css", "HEAD")
    assert (response.status, body, response.getheader("Content-Length")) == (200, b"", "6")
    response, _ = get(site, "/", "POST")
    assert (response.status, response.getheader("Allow")) == (405, "GET, HEAD")


@pytest.mark.parametrize(
    "path",
    [
        "/empty/",  # no listing
        "/.env",
        "/.git/config",
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/docs/..%2f..%2foutside.txt",
        "/link.txt",  # a symlink out of the root
        "/nope.html",
        "/a%00b",
        "/%ff",
    ],
)
def test_static_refuses_what_is_not_a_file_under_the_root(
    site: http.client.HTTPConnection, path: str
) -> None:
    response, body = get(site, path)
    assert response.status == 404
    assert b"outside" not in body and b"SECRET" not in body


# -- go ------------------------------------------------------------------------------------


def test_go_install_spec_from_the_variable_the_go_mod_comment_or_every_main_package(
    tmp_path: Path,
) -> None:
    (tmp_path / "go.mod").write_text("module x\n\n// +scalingo install ./cmd/... ./web\ngo 1.22\n")
    assert go.install_spec(tmp_path, {"GO_INSTALL_PACKAGE_SPEC": "./a ./b"}) == (
        ["./a", "./b"],
        "GO_INSTALL_PACKAGE_SPEC",
    )
    assert go.install_spec(tmp_path, {})[0] == ["./cmd/...", "./web"]
    (tmp_path / "go.mod").write_text("module x\ngo 1.22\n")
    assert go.install_spec(tmp_path, {}) == (["./..."], "every main package of the module")


@pytest.mark.parametrize(
    ("env", "flags"),
    [
        ({}, []),
        (
            {"GO_LINKER_SYMBOL": "main.version", "SOURCE_VERSION": "abc123"},
            ["-X main.version=abc123"],
        ),
        ({"GO_LINKER_SYMBOL": "main.v", "GO_LINKER_VALUE": "1 two"}, ["-X 'main.v=1 two'"]),
        ({"GO_LINKER_SYMBOL": "main.v", "GO_LINKER_VALUE": "it's"}, ['-X "main.v=it\'s"']),
    ],
)
def test_go_linker_symbol_and_value(env: dict[str, str], flags: list[str]) -> None:
    result = go.linker_flags(env)
    assert result == (["-ldflags", *flags] if flags else [])


def test_go_vendored_modules_build_offline_with_this_toolchain_only(tmp_path: Path) -> None:
    (tmp_path / "vendor").mkdir()
    env = go.go_environment(
        {"GOROOT": "/elsewhere", "GOFLAGS": "-trimpath", "PATH": "/usr/bin"},
        Path("/opt/dockyard/go/bin/go"),
        tmp_path,
        Path("/cache"),
    )
    assert env["GOTOOLCHAIN"] == "local" and env["GOPROXY"] == "off"
    assert env["GOFLAGS"] == "-trimpath -mod=vendor"
    assert env["GOCACHE"] == "/cache/go/build" and env["GOMODCACHE"] == "/cache/go/mod"
    assert env["GOBIN"] == str(tmp_path / "bin") and "GOROOT" not in env
    assert env["PATH"].startswith("/opt/dockyard/go/bin:")


# -- procfile ------------------------------------------------------------------------------


def procfile_compile(app: Path) -> subprocess.CompletedProcess[str]:
    script = BUILTIN_ROOT / "procfile" / "bin" / "compile"
    return subprocess.run(
        [str(script), str(app), "/nonexistent", "/nonexistent"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_procfile_programs_that_exist_pass(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "tool").chmod(0o755)
    (tmp_path / "Procfile").write_text(
        "web: python3 -m http.server $PORT\n# a comment\nworker: LEVEL=2 exec tool --x\n"
        "clock: bin/tool\nshell: $HOME/anything\n"
    )
    assert procfile_compile(tmp_path).returncode == 0


def test_a_procfile_program_that_is_nowhere_fails_the_build_naming_the_languages(
    tmp_path: Path,
) -> None:
    (tmp_path / "Procfile").write_text("web: sample-go-martini\nworker: python3 w.py\n")
    result = procfile_compile(tmp_path)
    assert result.returncode == 1
    assert "The Procfile's web process starts `sample-go-martini`" in result.stdout
    assert "worker" not in result.stdout
    for builtin in BUILTIN_BUILDPACKS[:-1]:  # the script's list is builtins.py's
        assert f" !       {builtin.language} ({builtin.looks_for})" in result.stdout
