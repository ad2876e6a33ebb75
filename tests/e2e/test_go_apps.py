"""Go apps end to end: the built-in Go buildpack on a real server, with a real Go from the
package index installed once for the host, and the build cache making redeploys fast."""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess, server_process
from tests.e2e.deployer import Deployer
from tests.helpers import tar_gz_from_files

# A module with its dependency vendored (a tiny local module, as `go mod vendor` lays it
# out), the version comment of Scalingo's sample-go-martini, and a second main package.
GO_MOD = """module example.com/hello

// +scalingo goVersion go1.17
go 1.17

require example.com/greeting v1.0.0
"""
MAIN_GO = """package main

import (
	"fmt"
	"net/http"
	"os"

	"example.com/greeting"
)

var version = "unset"

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s (%s)\\n", greeting.Hello("dockyard"), version)
	})
	if err := http.ListenAndServe(":"+os.Getenv("PORT"), nil); err != nil {
		panic(err)
	}
}
"""
GREETING_GO = """package greeting

func Hello(name string) string { return "hello from go, " + name }
"""
MODULES_TXT = "# example.com/greeting v1.0.0\n## explicit\nexample.com/greeting\n"


def go_app(*, procfile: str = "web: hello\n") -> bytes:
    return tar_gz_from_files(
        {
            "go.mod": GO_MOD,
            "main.go": MAIN_GO,
            "vendor/modules.txt": MODULES_TXT,
            "vendor/example.com/greeting/greeting.go": GREETING_GO,
            "cmd/migrate/main.go": "package main\n\nfunc main() {}\n",
            "Procfile": procfile,
            # The app's own code runs in the build: it must not be able to change the
            # toolchain that every app of the host builds with.
            "bin/go-pre-compile": TAMPER,
        }
    )


TAMPER = """#!/bin/sh
go="$DOCKYARD_GO/bin/go"
if echo evil >>"$go" || chmod u+w "$go" || touch "$DOCKYARD_GO/bin/planted"; then
  echo "TAMPERED with the toolchain"
else
  echo "the toolchain is read-only"
fi
"""


@pytest.fixture(scope="module")
def deployer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployer]:
    server: ServerProcess = server_process(tmp_path_factory.mktemp("go-server"))
    server.start()
    try:
        yield Deployer(server=server, token=server.create_user("gopher"))
    finally:
        server.stop()
        server.remove_data()


def timed_deploy(deployer: Deployer, app: str, archive: bytes) -> tuple[str, str, float]:
    started = time.monotonic()
    status, output = deployer.deploy(app, archive=archive)
    return status, output, time.monotonic() - started


@pytest.mark.slow
def test_a_vendored_go_module_deploys_and_its_redeploy_reuses_toolchain_and_caches(
    deployer: Deployer,
) -> None:
    deployer.create_app("go-sample")
    with deployer.client() as client:
        for name, value in (("GO_LINKER_SYMBOL", "main.version"), ("GO_LINKER_VALUE", "v42")):
            response = client.post(
                "/v1/apps/go-sample/variables", json={"variable": {"name": name, "value": value}}
            )
            assert response.status_code == 201, response.text
    status, cold_output, cold_seconds = timed_deploy(deployer, "go-sample", go_app())
    assert status == "success", cold_output
    assert "-----> Go app detected" in cold_output
    # go1.17 is not on the package index: the nearest newer release is used, and said so.
    chosen = re.search(
        r"Go 1\.17 \(go\.mod's `// \+scalingo goVersion` comment\) is not on the package "
        r"index \(it has Go [\d.]+ to [\d.]+\): using (1\.\d+\.\d+), the nearest newer release",
        cold_output,
    )
    assert chosen is not None, cold_output
    go_version = chosen[1]
    assert f"Installing Go {go_version}" in cold_output
    assert "-mod=vendor, GOPROXY=off" in cold_output
    assert "the toolchain is read-only" in cold_output and "TAMPERED" not in cold_output
    assert "bin/hello, bin/migrate" in cold_output
    assert deployer.get("go-sample").text == "hello from go, dockyard (v42)\n"

    # The toolchain is the host's, root's and read-only: no build can change it.
    store = deployer.server.data_dir / "toolchains" / "go"
    [release] = [p for p in store.iterdir() if p.name[0].isdigit()]
    go_binary = os.stat(release / "bin" / "go")
    assert go_binary.st_uid == 0 and not go_binary.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert not go_binary.st_mode & stat.S_IWUSR

    # The same code again: the build cache has every package, the toolchain is installed.
    status, warm_output, warm_seconds = timed_deploy(deployer, "go-sample", go_app())
    assert status == "success", warm_output
    assert f"Go {go_version} is installed on this host already" in warm_output
    assert "Installing Go" not in warm_output
    assert deployer.get("go-sample").text == "hello from go, dockyard (v42)\n"
    # The whole deployment, not only its build step, is three times faster: everything
    # else (fetch, unpack, push, boot) takes as long in both, so the build step alone is
    # faster still.
    assert warm_seconds * 3 <= cold_seconds, (cold_seconds, warm_seconds)


def test_a_procfile_program_nothing_builds_is_a_build_error_not_a_crash(
    deployer: Deployer,
) -> None:
    # What sample-go-martini got before dockyard built Go: its Procfile alone was taken
    # as the app, and the release crashed on `sample-go-martini: command not found`.
    deployer.create_app("no-language")
    archive = tar_gz_from_files({"Procfile": "web: sample-go-martini\n", "main.rb": "puts 1\n"})
    status, output = deployer.deploy("no-language", archive=archive)
    assert status == "build-error", output
    assert "The Procfile's web process starts `sample-go-martini`" in output
    assert "dockyard recognised no language in this app" in output
    for language in ("Python (requirements.txt", "Node.js (package.json)", "Go (go.mod"):
        assert language in output
