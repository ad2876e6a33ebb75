"""A build flooding its output (issue 15, item 5): figures, not a target.

Starts a ``dockyard serve`` (default settings) and deploys an app whose buildpack prints
``--mib`` MiB of 100-byte lines, then one error line, and fails. Reports what was stored
(the output's size, the database's growth), the server's RSS before and its peak
(``VmHWM`` after ``clear_refs``), and the API's latency meanwhile.

    .venv/bin/python -m bench.probe_build_flood --mib 100

To measure another version of the server, put its sources first on the path:
``PYTHONPATH=/path/to/other/src .venv/bin/python -m bench.probe_build_flood``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tarfile
import threading
import time
from pathlib import Path

from bench.apps import stdlib_app
from bench.harness import Api, free_port, memory_kib, running_server, traversable_dir
from bench.stream import file_server

ERROR_LINE = "ERROR: the real cause, at the very end"


def _database_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in data_dir.glob("dockyard.db*"))


def _tarball(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(f"flood-buildpack/{name}")
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100)
    args = parser.parse_args()
    compile_script = (
        "#!/bin/sh\n"
        f"head -c {args.mib * 1024 * 1024} /dev/zero | tr '\\0' 'x' | fold -w 99\n"
        f"echo '{ERROR_LINE}'\n"
        "exit 1\n"
    )
    shelf = traversable_dir("flood-buildpack-")
    buildpack = _tarball(
        {
            "bin/detect": "#!/bin/sh\necho flood\n",
            "bin/compile": compile_script,
            "bin/release": "#!/bin/sh\necho '--- {}'\n",
        }
    )
    (shelf / "buildpack.tar.gz").write_bytes(buildpack)
    port = free_port()
    with (
        file_server(shelf, port),
        running_server(
            "probe-flood",
            DOCKYARD_FETCH_ALLOW=f"127.0.0.1:{port}",
            # The latency probe, not the limit, is measured.
            DOCKYARD_RATE_LIMIT_PER_MINUTE="1000000",
        ) as server,
    ):
        api = Api(server, server.create_user())
        try:
            api.create_app("flood-app")
            payload = stdlib_app(
                extra={".buildpacks": f"http://127.0.0.1:{port}/buildpack.tar.gz\n"}
            )
            source = api.upload(payload)
            data_dir = server.data_dir / "data"
            database_before = _database_bytes(data_dir)
            with open(f"/proc/{server.pid}/clear_refs", "w") as refs:
                refs.write("5")
            rss_before, _ = memory_kib(server.pid)
            latencies: list[float] = []
            done = threading.Event()

            def poll() -> None:
                while not done.is_set():
                    began = time.monotonic()
                    api.http.get("/v1/apps")
                    latencies.append(time.monotonic() - began)
                    time.sleep(0.02)

            poller = threading.Thread(target=poll)
            poller.start()
            began = time.monotonic()
            deployment_id = api.submit("flood-app", source)
            status = api.wait("flood-app", deployment_id, timeout=1800)
            took = time.monotonic() - began
            done.set()
            poller.join()
            _, peak = memory_kib(server.pid)
            output = api.output("flood-app", deployment_id)
            database_after = _database_bytes(data_dir)
        finally:
            api.close()
    shutil.rmtree(shelf, ignore_errors=True)
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)] if ordered else 0.0
    print(
        f"build flood: {args.mib} MiB printed; {status} in {took:.1f} s; output stored "
        f"{len(output.encode()) / 1024:.0f} KiB (error line kept: {ERROR_LINE in output}); "
        f"database +{(database_after - database_before) / 1024 / 1024:.1f} MiB; server RSS "
        f"{rss_before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB; GET /v1/apps "
        f"meanwhile: median {statistics.median(ordered) * 1000:.0f} ms, p99 "
        f"{p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms ({len(ordered)} requests)"
    )


if __name__ == "__main__":
    main()
