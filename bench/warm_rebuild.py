"""Warm rebuild: an app with real dependencies from the package index (Flask under
gunicorn), deployed first with an empty deployment cache (cold), then again after a
change to its code but not to its requirements (warm).

Both are timed the same way, from ``POST /v1/sources`` to the first 200 through the
router that shows the new code. Each round uses a new app, so every cold build really
starts from an empty cache (the package downloads are per-app, in the deployment cache).
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

NAME = "warm_rebuild"
TARGET_RATIO = 1 / 3


def run(mode: Mode) -> Result:
    rounds = mode.pick(1, 3)
    result = Result(NAME)
    pairs: list[dict[str, Any]] = []
    with running_server(NAME) as server:
        api = Api(server, server.create_user())
        try:
            for index in range(rounds):
                pairs.append(pair(api, f"flask-{index}"))
        finally:
            api.close()
    cold = median([p["cold"]["total"] for p in pairs])
    warm = median([p["warm"]["total"] for p in pairs])
    result.check(
        "warm deploy vs cold, median",
        "s",
        warm,
        cold,
        "warm <= 1/3 of cold",
        warm <= cold * TARGET_RATIO,
    )
    for kind in ("cold", "warm"):
        phases = {phase: median([p[kind][phase] for p in pairs]) for phase in PHASES}
        result.notes.append(
            f"{kind} phases (s): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items())
        )
    result.samples = {"rounds": rounds, "pairs": pairs}
    return result


def pair(api: Api, app: str) -> dict[str, Any]:
    created = api.create_app(app)
    recorder = StreamRecorder(created["links"]["deployments_stream"], api.token)
    try:
        cold = timed_deploy(api, recorder, app, apps.flask_app("cold"), expect=b"hello cold")
        warm = timed_deploy(api, recorder, app, apps.flask_app("warm"), expect=b"hello warm")
    finally:
        recorder.close()
    return {"cold": cold, "warm": warm}
