"""Separate processes on Docker Swarm: 8 apps x 3 deployments submitted at once to
``dockyard api``, built and rolled out by two ``dockyard worker`` processes against one
(``DOCKYARD_RUNTIME=swarm``, one build slot each as in ``bench/workers.py``), served through
``dockyard router``, on PostgreSQL, with the release images in a registry.

A deployment on swarm spends most of its time waiting for Swarm (a health check passed,
the update monitor over), not computing, so a second worker's build slot should cut the
wall time even on one machine.

Needs a Docker engine, the minimal stack, Debian's docker-registry and a swarm
(tests/dockerenv.py provides them); without an engine the row says so and checks nothing.
"""

from __future__ import annotations

from bench import engines
from bench.harness import Mode, Result
from bench.workers import compare

NAME = "swarm_workers"
TARGET_RATIO = 0.65  # BENCHMARKS.md, "swarm concurrency"


def run(mode: Mode) -> Result:
    result = Result(NAME)
    with engines.engine(result, swarm=True) as engine:
        if engine is not None:
            settings = engine.settings("swarm")
            compare(result, mode, target_ratio=TARGET_RATIO, where=" on swarm", **settings)
    return result
