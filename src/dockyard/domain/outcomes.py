"""How a deployment ends when one of its steps fails: one table, next to the status machine.

    failure        in building    in pushing                in starting
    cancelled      aborted        aborted                   aborted
    build          build-error    build-error               crashed-error
    boot-timeout   -              starting, timeout-error   timeout-error
    boot-crash     -              starting, crashed-error   crashed-error
    internal       build-error    build-error               crashed-error

A boot failure can happen while ``pushing``: the release's processes are started while its
slug is still being made. The deployment then passes through ``starting`` on its way to the
error, so its history says which step failed, as the status machine requires.
"""

from __future__ import annotations

from enum import Enum

from dockyard.domain import status as st


class Failure(Enum):
    CANCELLED = "cancelled"
    BUILD = "build"  # fetching, unpacking, buildpacks or packaging said no
    BOOT_TIMEOUT = "boot-timeout"  # the web process did not accept connections in time
    BOOT_CRASH = "boot-crash"  # a process exited (or could not start) while booting
    HOOK = "hook"  # the postdeploy hook failed, before the switch
    INTERNAL = "internal"  # a bug of dockyard's: the server log has the traceback


_BUILD_PHASES = (st.BUILDING, st.PUSHING)

OUTCOMES: dict[tuple[str, Failure], tuple[str, ...]] = {
    **{(phase, Failure.CANCELLED): (st.ABORTED,) for phase in st.ACTIVE},
    **{(phase, Failure.BUILD): (st.BUILD_ERROR,) for phase in _BUILD_PHASES},
    **{(phase, Failure.INTERNAL): (st.BUILD_ERROR,) for phase in _BUILD_PHASES},
    (st.STARTING, Failure.BUILD): (st.CRASHED_ERROR,),
    (st.STARTING, Failure.INTERNAL): (st.CRASHED_ERROR,),
    (st.PUSHING, Failure.BOOT_TIMEOUT): (st.STARTING, st.TIMEOUT_ERROR),
    (st.PUSHING, Failure.BOOT_CRASH): (st.STARTING, st.CRASHED_ERROR),
    (st.STARTING, Failure.BOOT_TIMEOUT): (st.TIMEOUT_ERROR,),
    (st.STARTING, Failure.BOOT_CRASH): (st.CRASHED_ERROR,),
    (st.STARTING, Failure.HOOK): (st.HOOK_ERROR,),
}


def statuses_after(phase: str, failure: Failure) -> tuple[str, ...]:
    """The statuses a deployment in ``phase`` goes through to its end after ``failure``;
    the last one is final. A failure the table does not name is a bug of dockyard's."""
    try:
        return OUTCOMES[(phase, failure)]
    except KeyError:
        return OUTCOMES.get((phase, Failure.INTERNAL), (st.ABORTED,))
