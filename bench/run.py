"""Run the benchmarks, print the table, write the raw samples as JSON.

    .venv/bin/python -m bench [--quick] [--only NAME[,NAME…]] [--results DIR]

Each benchmark runs on its own fresh server; one failing does not stop the others (its
row says so and the exit status is 1). The exit status is 0 only when every target is met.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as bench/run.py: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    api,
    concurrency,
    deploy_latency,
    docker_runtime,
    formation,
    go_build,
    routers,
    stream,
    swarm_runtime,
    swarm_workers,
    upload,
    warm_rebuild,
    workers,
)
from bench.harness import Mode, Result

BENCHMARKS: dict[str, Callable[[Mode], Result]] = {
    deploy_latency.NAME: deploy_latency.run,
    warm_rebuild.NAME: warm_rebuild.run,
    upload.NAME: upload.run,
    api.NAME: api.run,
    stream.NAME: stream.run,
    concurrency.NAME: concurrency.run,
    go_build.NAME: go_build.run,
    formation.NAME: formation.run,
    routers.NAME: routers.run,
    docker_runtime.NAME: docker_runtime.run,
    workers.NAME: workers.run,
    swarm_runtime.NAME: swarm_runtime.run,
    swarm_workers.NAME: swarm_workers.run,
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_facts() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    bwrap = shutil.which("bwrap")
    bwrap_version = (
        subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if bwrap
        else "missing"
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "database": "SQLite (embedded default)",
        "runtime": f"local (bubblewrap sandbox, {bwrap_version})",
        "speed": f"a 2M-step Python loop in {python_loop_ms():.0f} ms",
    }


def python_loop_ms() -> float:
    """How fast this (shared, often noisy) machine is right now: the best of five runs
    of a fixed pure-Python loop. Compare runs' results with this in mind."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        sum(range(2_000_000))
        best = min(best, time.perf_counter() - started)
    return best * 1000


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit in ("req/s", "lines", "clients", "of", ""):
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:,.1f} {unit}"


def table(results: list[Result]) -> str:
    rows = [("benchmark", "metric", "dockyard", "baseline", "ratio", "target", "met")]
    for result in results:
        if result.error is not None:
            rows.append(
                (result.benchmark, "ERROR", result.error.splitlines()[-1][:60], "", "", "", "no")
            )
        for check in result.checks:
            ratio = check.ratio
            rows.append(
                (
                    result.benchmark,
                    check.metric,
                    _number(check.dockyard, check.unit),
                    _number(check.baseline, check.unit),
                    "-" if ratio is None else f"{ratio:.2f}",
                    check.target,
                    "yes" if check.met else "NO",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs (under two minutes in all)"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the JSON files go")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    mode = Mode(quick=args.quick)
    facts = machine_facts()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    print("machine: " + ", ".join(f"{key} {value}" for key, value in facts.items()), flush=True)
    results: list[Result] = []
    started = time.monotonic()
    for name in chosen:
        print(f"running {name}{' (quick)' if mode.quick else ''}…", flush=True)
        begun = time.monotonic()
        try:
            result = BENCHMARKS[name](mode)
        except Exception:
            result = Result(name, error=traceback.format_exc())
            print(result.error, file=sys.stderr, flush=True)
        elapsed = time.monotonic() - begun
        results.append(result)
        for note in result.notes:
            print(f"  {note}", flush=True)
        print(f"  done in {elapsed:.1f} s", flush=True)
        document = {
            "mode": "quick" if mode.quick else "full",
            "machine": facts,
            "seconds": elapsed,
            **result.to_json(),
        }
        (args.results / f"{stamp}-{name}.json").write_text(json.dumps(document, indent=1))
    summary = {
        "mode": "quick" if mode.quick else "full",
        "machine": facts,
        "seconds": time.monotonic() - started,
        "results": [
            {key: value for key, value in r.to_json().items() if key != "samples"} for r in results
        ],
    }
    (args.results / f"{stamp}-summary.json").write_text(json.dumps(summary, indent=1))
    print()
    print(table(results))
    print(f"\n{time.monotonic() - started:.0f} s in all; JSON in {args.results}/{stamp}-*.json")
    every_target = all(r.error is None and all(c.met for c in r.checks) for r in results)
    return 0 if every_target else 1


if __name__ == "__main__":
    raise SystemExit(main())
