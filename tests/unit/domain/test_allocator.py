"""The allocator settings ``dockyard serve`` applies: buffers the size of an upload's
pieces stop costing fresh pages once the process has had them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A fresh interpreter each time: the thresholds are process-wide and glibc's defaults
# depend on what the process allocated before.
CHURN = """
import resource, sys
from dockyard.allocator import keep_freed_buffers
if sys.argv[1] == "kept" and not keep_freed_buffers():
    print("unsupported")
    raise SystemExit
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(40):
    # Two write batches of an upload in flight, then freed: what the PUT path does.
    held = [b"x" * (256 * 1024) for _ in range(8)]
    del held
print(faults() - before)
"""


def page_faults(mode: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    return subprocess.run(
        [sys.executable, "-c", CHURN, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_upload_sized_buffers_are_reused_instead_of_faulted_in_afresh() -> None:
    kept = page_faults("kept")
    if kept == "unsupported":
        pytest.skip("not glibc: its malloc thresholds do not apply")
    default = int(page_faults("default"))
    # 40 rounds of 2 MiB: ~512 faults a round when the heap is handed back each time,
    # the first round's only when it is kept.
    assert int(kept) < 2_000
    assert default > 5 * int(kept), (default, kept)
