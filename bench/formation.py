"""Formations: how fast an app scales out, and what running many apps costs at rest.

- scale out: a stdlib app at web:1 is scaled to web:4; timed from the ``POST .../scale``
  until each of the four instances has answered through the router (new connections,
  each instance recognised by the ``CONTAINER`` it prints). The baseline is the same app
  scaled from web:0 to web:1 on the same server: one instance's start, boot and routing.
- at rest: N small apps deployed (50; 10 with ``--quick``), then the server process's CPU
  over 10 s of nothing happening, and its resident memory.
"""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path

from bench.apps import CONTAINER, stdlib_app
from bench.harness import Api, Mode, Result, median, must_succeed, running_server

NAME = "formation"
SCALE_TARGET_RATIO = 2.0  # four instances start side by side: not four times one
IDLE_CPU_TARGET = 0.01  # of one core (BENCHMARKS.md: "server CPU < 1 % of a core")
RSS_PER_APP_TARGET_KIB = 1024  # BENCHMARKS.md: "RSS growth per app < 1 MiB"
IDLE_SECONDS = 10.0

def app_archive() -> bytes:
    return stdlib_app(body=CONTAINER)


def run(mode: Mode) -> Result:
    result = Result(NAME)
    # Fifty apps deployed at once: more sources than one user may hold by default.
    with running_server(
        NAME, DOCKYARD_MAX_APPS_PER_USER="100", DOCKYARD_MAX_PENDING_SOURCES="200"
    ) as server:
        api = Api(server, server.create_user())
        try:
            rounds = mode.pick(1, 3)
            outs, ones = [], []
            for index in range(rounds):
                app = f"scaled-{index}"
                deploy(api, app)
                scale_to_zero(api, app)
                ones.append(scale_until_answering(api, app, from_amount=0, to_amount=1))
                outs.append(scale_until_answering(api, app, from_amount=1, to_amount=4))
            result.samples.update(scale_1_to_4=outs, scale_0_to_1=ones)
            out, one = median(outs), median(ones)
            result.check(
                "scale web:1 -> web:4 until all four answer, median",
                "s",
                out,
                one,
                f"<= {SCALE_TARGET_RATIO:g} x one instance (web:0 -> web:1)",
                out <= SCALE_TARGET_RATIO * one,
            )

            count = mode.pick(10, 50)
            rss_before = rss_kib(server.pid)
            for index in range(count):
                deploy(api, f"idle-{index}")
            cpu, rss = idle_cost(server.pid)
            result.samples.update(idle_apps=count, idle_cpu=cpu, rss_kib=rss, rss_before=rss_before)
            result.notes.append(
                f"{count} apps running: server RSS {rss / 1024:.0f} MiB "
                f"(+{(rss - rss_before) / 1024:.0f} MiB for them)"
            )
            result.check(
                f"server CPU at rest with {count} apps running",
                "core",
                cpu,
                None,
                f"< {IDLE_CPU_TARGET:g} of a core",
                cpu < IDLE_CPU_TARGET,
            )
            per_app = (rss - rss_before) / count
            result.check(
                f"server RSS growth per app, {count} apps running",
                "KiB",
                per_app,
                None,
                f"< {RSS_PER_APP_TARGET_KIB} KiB",
                per_app < RSS_PER_APP_TARGET_KIB,
            )
        finally:
            api.close()
    return result


def deploy(api: Api, app: str) -> None:
    api.create_app(app)
    deployment_id = api.submit(app, api.upload(app_archive()))
    must_succeed(api, app, deployment_id, api.wait(app, deployment_id))


def scale_until_answering(api: Api, app: str, *, from_amount: int, to_amount: int) -> float:
    started = time.monotonic()
    response = api.http.post(
        f"/v1/apps/{app}/scale", json={"containers": [{"name": "web", "amount": to_amount}]}
    )
    response.raise_for_status()
    wanted = {f"{app}-web-{index}" for index in range(from_amount + 1, to_amount + 1)}
    port = api.server.router_port
    deadline = started + 60
    while wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sorted(wanted)} did not answer within 60 s")
        status, body = visit(port, app)
        if status == 200:
            wanted.discard(body)
    return time.monotonic() - started


def visit(port: int, app: str) -> tuple[int, str]:
    """One request through the router on a new connection: (status, body); (0, "") when
    nothing answered."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": f"{app}.localhost:{port}"})
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        connection.close()


def scale_to_zero(api: Api, app: str) -> None:
    """web:0, and wait until the router says so (the baseline starts from no instance)."""
    api.http.post(
        f"/v1/apps/{app}/scale", json={"containers": [{"name": "web", "amount": 0}]}
    ).raise_for_status()
    port = api.server.router_port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if visit(port, app)[0] == 503:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{app} was not scaled to zero within 30 s")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def idle_cost(pid: int) -> tuple[float, int]:
    """The server's share of one core over ``IDLE_SECONDS`` of rest, and its RSS (KiB)."""
    time.sleep(2)  # the last deployment's background work (cache copy, old release) ends
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    used = cpu_seconds(pid) - before
    return used / (time.monotonic() - started), rss_kib(pid)
