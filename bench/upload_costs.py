"""Where a 256 MiB PUT's time goes, dockyard against the baseline receiver of upload.py.

Usage: .venv/bin/python -m bench.upload_costs [--rounds 6]

For each PUT the receiving process's own counters, read from /proc before and after
(all its threads): user and system CPU seconds, minor page faults, context switches; and
the wall time. Rounds alternate which side goes first, like upload.py. This is the
measurement behind the upload section of docs/performance.md: a ratio alone does not say
whether a machine is slower at what dockyard does more of than the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bench.harness import Api, running_server, traversable_dir
from bench.upload import RECEIVER, SIZE, WARM_UP_BYTES, put

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def counters(pid: int) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    return {
        "user_s": int(fields[11]) / CLOCK_TICKS,
        "sys_s": int(fields[12]) / CLOCK_TICKS,
        "minor_faults": int(fields[7]),
        "switches": switches,
    }


def measured(pid: int, port: int, target: str, payload: memoryview) -> dict[str, float]:
    os.sync()
    before = counters(pid)
    seconds = put(port, target, payload)
    after = counters(pid)
    return {"wall_s": seconds, **{k: after[k] - before[k] for k in before}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for the dockyard server (try glibc's MALLOC_*)",
    )  # fmt: skip
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)
    payload = memoryview(b"\x1f\x8b" + os.urandom(SIZE - 2))
    scratch = traversable_dir("upload-costs-")
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(scratch / "received")],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples: dict[str, list[dict[str, float]]] = {"baseline": [], "dockyard": []}
    try:
        assert receiver.stdout is not None
        baseline_port = int(receiver.stdout.readline())
        with running_server("upload-costs", **server_env) as server:
            api = Api(server, server.create_user())
            stored = Path(server.env["DOCKYARD_DATA_DIR"]) / "blobs" / "sources"
            assert server.process is not None
            try:
                for round_ in range(args.rounds):
                    sides = (
                        ("baseline", "dockyard") if round_ % 2 == 0 else ("dockyard", "baseline")
                    )
                    for side in sides:
                        for size in (WARM_UP_BYTES, SIZE):  # warm-up first, as upload.py
                            if side == "baseline":
                                pid, port, target = receiver.pid, baseline_port, "/"
                            else:
                                source = api.http.post("/v1/sources", json={}).json()["source"]
                                url = urlsplit(source["upload_url"])
                                assert url.port is not None
                                pid, port = server.process.pid, url.port
                                target = f"{url.path}?{url.query}"
                            sample = measured(pid, port, target, payload[:size])
                            for leftover in stored.glob("*"):
                                leftover.unlink()
                            if size == SIZE:
                                samples[side].append(sample)
            finally:
                api.close()
    finally:
        receiver.kill()
        receiver.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"per 256 MiB PUT, median of {args.rounds} (all threads of the receiving process)")
    keys = ["wall_s", "user_s", "sys_s", "minor_faults", "switches"]
    print(f"{'side':<9}" + "".join(f"{k:>14}" for k in keys))
    for side, rows in samples.items():
        medians = [statistics.median(row[k] for row in rows) for k in keys]
        print(f"{side:<9}" + "".join(f"{m:>14.3f}" for m in medians))


if __name__ == "__main__":
    main()
