"""The swarm runtime (DOCKYARD_RUNTIME=swarm): deploy latency against the docker runtime
deploying the same app in the same run, and a redeploy (Swarm's rolling update, new task
first) until the new release answers.

Swarm's own timings are the defaults (``DOCKYARD_SWARM_CHECK_SECONDS`` 2 s: health-check
interval, update monitor): a web task counts as running only after a health check passed,
so Swarm's floor is about one interval above the docker runtime's, which probes the port
itself every 10 ms. Needs a Docker engine, the minimal stack and Debian's docker-registry
(tests/dockerenv.py provides them) and a swarm (initialised if the engine is in none, and
left again afterwards). Without an engine the row says so and checks nothing.
"""

from __future__ import annotations

from typing import Any

from bench import apps, engines
from bench.harness import Api, Mode, Result, StreamRecorder, median, running_server, timed_deploy

NAME = "swarm_runtime"
CHECK_SECONDS = 2.0  # the default of DOCKYARD_SWARM_CHECK_SECONDS
# A health-check interval and a margin above the docker runtime's latency.
TARGET_OVERHEAD_SECONDS = CHECK_SECONDS + 2.0
TARGET_REDEPLOY_SECONDS = 15.0


def run(mode: Mode) -> Result:
    result = Result(NAME)
    with engines.engine(result, swarm=True) as engine:
        if engine is not None:
            _measure(result, mode, engine)
    return result


def _deploys(
    env: dict[str, str], rounds: int, *, redeploy: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    firsts: list[dict[str, Any]] = []
    seconds: list[dict[str, Any]] = []
    with running_server(f"{NAME}-{env['DOCKYARD_RUNTIME']}", **env) as server:
        api = Api(server, server.create_user())
        try:
            for index in range(rounds):
                app = f"latency-{index}"
                created = api.create_app(app)
                recorder = StreamRecorder(created["links"]["deployments_stream"], api.token)
                try:
                    firsts.append(timed_deploy(api, recorder, app, apps.stdlib_app("one")))
                    if redeploy:
                        seconds.append(
                            timed_deploy(
                                api, recorder, app, apps.stdlib_app("two"), expect=b"hello two"
                            )
                        )
                finally:
                    recorder.close()
        finally:
            api.close()
    return firsts, seconds


def _measure(result: Result, mode: Mode, engine: engines.Engine) -> None:
    rounds = mode.pick(2, 5)
    docker_firsts, _ = _deploys(engine.settings("docker"), rounds, redeploy=False)
    swarm_firsts, swarm_seconds = _deploys(engine.settings("swarm"), rounds, redeploy=True)
    swarm, baseline = (
        median([d["total"] for d in swarm_firsts]),
        median([d["total"] for d in docker_firsts]),
    )
    result.check(
        "swarm: first deploy to first 200, median", "s", swarm, baseline,
        f"swarm - docker runtime <= {TARGET_OVERHEAD_SECONDS:.1f} s ({swarm - baseline:.2f} s)",
        swarm - baseline <= TARGET_OVERHEAD_SECONDS,
    )  # fmt: skip
    again = median([d["total"] for d in swarm_seconds])
    result.check(
        "swarm: redeploy (rolling update) to new 200, median", "s", again, None,
        f"<= {TARGET_REDEPLOY_SECONDS:.0f} s", again <= TARGET_REDEPLOY_SECONDS,
    )  # fmt: skip
    starting = median([d["starting"] for d in swarm_firsts])
    rolling = median([d["starting"] for d in swarm_seconds])
    result.notes.append(
        f"median starting phase: first deploy {starting:.3f} s, rolling update {rolling:.3f} s"
        f" (health checks every {CHECK_SECONDS:g} s)"
    )
    result.samples = {
        "docker_first": docker_firsts,
        "swarm_first": swarm_firsts,
        "swarm_redeploy": swarm_seconds,
    }
