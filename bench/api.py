"""API: reading an app with 10,000 deployments under 16 concurrent clients, against a
trivial endpoint of the same server (``GET /v1/regions``, authenticated the same way).

The 10,000 deployments are written straight into the server's SQLite database, through
dockyard's own models, before the server starts. The API path that creates deployments
also queues them for the workers, which would then build 10,000 apps; what is measured
here is reading, and the rows are the same rows a server writes (same schema, same
indexes, migrations applied by dockyard itself).

Each endpoint is loaded for the same time by ``bench.loadgen`` in its own process, after
a warm-up second. Every request carries the exchanged JWT, as the official client's do.
The per-token rate limit is raised for this server: it would otherwise answer 429 after
the first few hundred requests, and the benchmark measures serving, not refusing.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, update

from bench.harness import REPO, Mode, Result, Server, median, percentile
from dockyard.bootstrap import build_platform
from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment
from dockyard.services.apps import create_app
from dockyard.services.auth import create_user
from dockyard.settings import Settings

NAME = "api"
DEPLOYMENTS = 10_000
PER_PAGE = 20
CLIENTS = 16
TARGET_P99_MS = 25.0
TARGET_LIST_RATIO = 0.5
APP = "crowded"


def run(mode: Mode) -> Result:
    seconds = mode.pick(3.0, 10.0)
    result = Result(NAME)
    server = Server.create(NAME, DOCKYARD_RATE_LIMIT_PER_MINUTE=str(10**9))
    try:
        token, middle_id = seed(server)
        server.start()
        jwt = exchange(server, token)
        last_page = -(-DEPLOYMENTS // PER_PAGE)
        base = f"/v1/apps/{APP}/deployments"
        endpoints = {
            "trivial": "/v1/regions?",
            "list first page": f"{base}?page=1&per_page={PER_PAGE}",
            "list last page": f"{base}?page={last_page}&per_page={PER_PAGE}",
            "show one": f"{base}/{middle_id}?",
        }
        runs = {name: load(server.port, path, jwt, seconds) for name, path in endpoints.items()}
    finally:
        server.stop()
        server.remove_data()
    stats = {name: summarize(out, seconds) for name, out in runs.items()}
    trivial = stats["trivial"]
    for name in ("list first page", "list last page", "show one"):
        result.check(
            f"{name} p99", "ms", stats[name]["p99_ms"], trivial["p99_ms"],
            f"< {TARGET_P99_MS:.0f} ms", stats[name]["p99_ms"] < TARGET_P99_MS,
        )  # fmt: skip
    for name in ("list first page", "list last page"):
        result.check(
            f"{name} throughput", "req/s", stats[name]["throughput"], trivial["throughput"],
            f">= {TARGET_LIST_RATIO} x trivial",
            stats[name]["throughput"] >= TARGET_LIST_RATIO * trivial["throughput"],
        )  # fmt: skip
    for name, stat in stats.items():
        result.notes.append(
            f"{name}: p50 {stat['p50_ms']:.1f} ms, p99 {stat['p99_ms']:.1f} ms, "
            f"{stat['throughput']:.0f} req/s, {stat['errors']} errors"
        )
    errors = sum(stat["errors"] for stat in stats.values())
    if errors:
        result.error = f"{errors} responses were not 200: {runs}"[:2000]
    result.samples = {
        "deployments": DEPLOYMENTS,
        "clients": CLIENTS,
        "seconds": seconds,
        "stats": stats,
        "latencies_ms": {name: out["latencies_ms"] for name, out in runs.items()},
        "errors": {name: out["errors"][:20] for name, out in runs.items()},
    }
    return result


def seed(server: Server) -> tuple[str, str]:
    """A user, the app and its deployments, written before the server starts; returns the
    user's API token and the id of a deployment in the middle of the list."""
    platform = build_platform(Settings.from_mapping(server.env))
    try:
        issued = create_user(db=platform.db, username="bench", email="bench@example.com")
        app = create_app(db=platform.db, owner=issued.user, name=APP)
        start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        rows: list[dict[str, Any]] = []
        for index in range(DEPLOYMENTS):
            created = start + datetime.timedelta(minutes=index)
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "app_id": app.id,
                    "pusher_id": app.owner.id,
                    "status": "success" if index % 10 else "build-error",
                    "git_ref": f"v{index}",
                    "previous_git_ref": f"v{index - 1}" if index else None,
                    "source_url": f"https://example.com/archive/v{index}.tar.gz",
                    "source_id": None,
                    "created_at": created,
                    "started_at": created + datetime.timedelta(seconds=1),
                    "finished_at": created + datetime.timedelta(seconds=30),
                    "image_size": 2_500_000 + index,
                    "process_types": {"web": "gunicorn app:app"},
                    "config_vars": {},
                    "cancel_requested": False,
                }
            )
        with transaction(platform.db) as session:
            session.execute(insert(Deployment), rows)
            # Written behind the service's back, so keep the app's count as it would.
            session.execute(update(App).where(App.id == app.id).values(deployment_count=len(rows)))
        return issued.secret, rows[DEPLOYMENTS // 2]["id"]
    finally:
        platform.engine.dispose()


def exchange(server: Server, token: str) -> str:
    basic = base64.b64encode(f":{token}".encode()).decode()
    response = httpx.post(
        f"{server.url}/v1/tokens/exchange", content=b"{}",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
    )  # fmt: skip
    response.raise_for_status()
    jwt: str = response.json()["token"]
    return jwt


def load(port: int, path: str, jwt: str, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dockyard-loadgen-") as scratch:
        result = Path(scratch) / "result.json"
        subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--path", path,
             "--connections", str(CLIENTS), "--seconds", str(seconds), "--warmup", "1",
             "--header", f"Authorization: Bearer {jwt}", "--out", str(result)],
            check=True, cwd=REPO,
        )  # fmt: skip
        loaded: dict[str, Any] = json.loads(result.read_text())
    return loaded


def summarize(out: dict[str, Any], seconds: float) -> dict[str, float]:
    latencies = out["latencies_ms"]
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / seconds,
        "p50_ms": median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "errors": len(out["errors"]),
    }
