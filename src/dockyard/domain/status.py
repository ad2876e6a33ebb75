"""The deployment status machine: exactly the strings and transitions of docs/api.md.

queued -> building -> pushing -> starting -> success | crashed-error | timeout-error | hook-error
                   -> build-error
any non-final state -> aborted
"""

from __future__ import annotations

QUEUED = "queued"
BUILDING = "building"
PUSHING = "pushing"
STARTING = "starting"
SUCCESS = "success"
BUILD_ERROR = "build-error"
CRASHED_ERROR = "crashed-error"
TIMEOUT_ERROR = "timeout-error"
# The postdeploy hook failed (Scalingo's name): the new release never served.
HOOK_ERROR = "hook-error"
ABORTED = "aborted"

ACTIVE = frozenset({BUILDING, PUSHING, STARTING})
FINAL = frozenset({SUCCESS, BUILD_ERROR, CRASHED_ERROR, TIMEOUT_ERROR, HOOK_ERROR, ABORTED})

_ALLOWED: dict[str, frozenset[str]] = {
    QUEUED: frozenset({BUILDING, ABORTED}),
    BUILDING: frozenset({PUSHING, BUILD_ERROR, ABORTED}),
    PUSHING: frozenset({STARTING, BUILD_ERROR, ABORTED}),
    STARTING: frozenset({SUCCESS, CRASHED_ERROR, TIMEOUT_ERROR, HOOK_ERROR, ABORTED}),
}


class InvalidTransition(ValueError):
    pass


def check_transition(current: str, new: str) -> None:
    if new not in _ALLOWED.get(current, frozenset()):
        raise InvalidTransition(f"a deployment cannot go from {current!r} to {new!r}")


def is_final(status: str) -> bool:
    return status in FINAL
