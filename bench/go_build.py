"""Go deploys: a vendored Go module (net/http) deployed three ways, each timed from
``POST /v1/sources`` to the first 200 through the router that shows the new code:

- cold host: a fresh data directory, so the deploy installs the Go toolchain from the
  package index (once per host) and compiles everything with an empty build cache;
- cold app: a second app on the same host: the toolchain is installed, its build cache
  is empty (the standard library's packages are compiled again);
- warm: the first app redeployed after a change to its code: toolchain and build cache
  reused, one package recompiled and the program linked again.
"""

from __future__ import annotations

from typing import Any

from bench import apps
from bench.harness import (
    PHASES,
    Api,
    Mode,
    Result,
    StreamRecorder,
    median,
    running_server,
    timed_deploy,
)

NAME = "go"
TARGET_RATIO = 1 / 3


def run(mode: Mode) -> Result:
    rounds = mode.pick(1, 2)
    result = Result(NAME)
    trios: list[dict[str, Any]] = []
    for index in range(rounds):
        # A server of its own per round: every cold-host deploy installs the toolchain.
        with running_server(f"{NAME}-{index}") as server:
            api = Api(server, server.create_user())
            try:
                trios.append(trio(api))
            finally:
                api.close()
    cold = median([t["cold_host"]["total"] for t in trios])
    warm = median([t["warm"]["total"] for t in trios])
    result.check(
        "warm Go deploy vs cold host, median",
        "s",
        warm,
        cold,
        "warm <= 1/3 of cold",
        warm <= cold * TARGET_RATIO,
    )
    cold_build = median([t["cold_host"]["building"] for t in trios])
    warm_build = median([t["warm"]["building"] for t in trios])
    result.check(
        "warm Go build step vs cold host, median",
        "s",
        warm_build,
        cold_build,
        "warm <= 1/3 of cold",
        warm_build <= cold_build * TARGET_RATIO,
    )
    for kind in ("cold_host", "cold_app", "warm"):
        phases = {phase: median([t[kind][phase] for t in trios]) for phase in PHASES}
        result.notes.append(
            f"{kind} phases (s): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items())
        )
    result.samples = {"rounds": rounds, "trios": trios}
    return result


def trio(api: Api) -> dict[str, Any]:
    timings: dict[str, Any] = {}
    for app, kind, mark in (
        ("go-first", "cold_host", "cold"),
        ("go-second", "cold_app", "second"),
        ("go-first", "warm", "warm"),
    ):
        if kind != "warm":
            created = api.create_app(app)
            timings[f"{app}-stream"] = created["links"]["deployments_stream"]
        recorder = StreamRecorder(timings[f"{app}-stream"], api.token)
        try:
            timings[kind] = timed_deploy(
                api, recorder, app, apps.go_app(mark), expect=f"hello {mark}".encode()
            )
        finally:
            recorder.close()
    return {kind: timings[kind] for kind in ("cold_host", "cold_app", "warm")}
