"""Separate processes: 8 apps x 3 deployments submitted at once to ``dockyard api``, built
by two ``dockyard worker`` processes against one (each worker with the same build slots,
``SLOTS``, one), served through ``dockyard router``, on PostgreSQL.

Each run has its own database and processes. The wall time is from the first ``POST`` to
the last final status on the streams; the stream also shows whether each app's
deployments ran strictly in order, one at a time, across the workers. On one machine the
two workers share its cores, so the gain is what a second process's build slots and
supervisor bring, not a second machine's CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import apps
from bench.concurrency import run_parallel
from bench.harness import REPO, Api, Mode, Result, Server, StreamRecorder, free_port

NAME = "workers"
SLOTS = 1
POSTGRES_ADMIN_URL = os.environ.get(
    "DOCKYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# One build slot per worker: the second worker doubles the builds running at once, which
# is what it adds on one machine. (With two slots each, on two cores, the builds already
# share the CPU and two workers measured the same as one: 3.48 s against 3.36 s.)
TARGET_RATIO = 0.9


def run(mode: Mode) -> Result:
    result = Result(NAME)
    compare(result, mode, target_ratio=TARGET_RATIO)
    return result


def compare(
    result: Result, mode: Mode, *, target_ratio: float, where: str = "", **worker_env: str
) -> None:
    """8 apps x 3 deployments (4 x 3 when quick) on one worker, then on two, each with
    ``worker_env``; checks that two take at most ``target_ratio`` of one's wall time."""
    app_count = mode.pick(4, 8)
    per_app = 3
    walls: dict[int, float] = {}
    for workers in (1, 2):
        with cluster(workers, **worker_env) as server:
            api = Api(server, server.create_user())
            try:
                # Names of each run's own: a swarm keeps the first run's services.
                parallel = deploy_all(api, app_count, per_app, prefix=f"bench-{workers}w")
            finally:
                api.close()
        walls[workers] = parallel["wall"]
        succeeded = sum(d["status"] == "success" for d in parallel["deployments"])
        result.check(
            f"{workers} worker(s): deployments that succeeded", "", succeeded,
            app_count * per_app, "all", succeeded == app_count * per_app,
        )  # fmt: skip
        result.check(
            f"{workers} worker(s): order or overlap violations", "", len(parallel["violations"]),
            None, "0", not parallel["violations"],
        )  # fmt: skip
        result.notes.extend(parallel["violations"][:5])
        result.samples[f"workers_{workers}"] = parallel
    result.check(
        f"{app_count} apps x {per_app}{where}: wall time, two workers", "s", walls[2], walls[1],
        f"<= {target_ratio} x one worker's", walls[2] <= target_ratio * walls[1],
    )  # fmt: skip


def deploy_all(api: Api, app_count: int, per_app: int, *, prefix: str) -> dict[str, Any]:
    names = [f"{prefix}-{i}" for i in range(app_count)]
    recorders = {}
    try:
        for name in names:
            created = api.create_app(name)
            recorders[name] = StreamRecorder(created["links"]["deployments_stream"], api.token)
        archives = [[apps.stdlib_app(f"{i}-{k}") for k in range(per_app)] for i in range(app_count)]
        return run_parallel(api, recorders, names, archives)
    finally:
        for recorder in recorders.values():
            recorder.close()


@contextmanager
def cluster(workers: int, **worker_env: str) -> Iterator[Server]:
    """api, ``workers`` workers (with ``worker_env``) and a router on a fresh database; the
    ``Server`` is the api's (its env has the database), whose router port is the router
    process's."""
    database = f"dockyard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    database_url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{database}"
    server = Server.create(NAME, DOCKYARD_DATABASE_URL=database_url)
    server.env["DOCKYARD_PUBLIC_URL"] = server.url
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: str, index: int, **extra: str) -> None:
        data_dir = server.data_dir / f"{command}-{index}"
        env = {**server.env, "DOCKYARD_DATA_DIR": str(data_dir), **extra}
        with open(server.data_dir / f"{command}-{index}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dockyard.cli", command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        processes.append(process)

    try:
        start("api", 0)
        _wait_for_api(server, processes[0])
        for index in range(workers):
            start(
                "worker",
                index,
                DOCKYARD_WORKER_NAME=f"bench-{index}",
                DOCKYARD_WORKERS=str(SLOTS),
                DOCKYARD_ATTACH_PORT=str(free_port()),  # each worker's one-offs' terminals
                **worker_env,
            )
        start("router", 0)
        yield server
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        server.remove_data()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_for_api(server: Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = Path(server.data_dir / "api-0.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dockyard api exited:\n{log}")
        try:
            if httpx.get(f"{server.url}/v1/regions", timeout=1).status_code == 401:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("dockyard api did not answer within 60 s")
