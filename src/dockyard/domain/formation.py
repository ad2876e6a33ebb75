"""An app's formation: how many instances of each process type run, and at which size.

Sizes are Scalingo's names, each with the memory limit its instances get. A deployment
brings the Procfile's types into the formation (a new type starts at one instance, a type
the Procfile no longer has goes to zero) and keeps the amounts and sizes the user chose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    name: str
    memory_bytes: int
    max_processes: int

    @property
    def human_memory(self) -> str:
        mib = self.memory_bytes // MIB
        return f"{mib // 1024} GB" if mib >= 1024 else f"{mib} MB"


SIZES: dict[str, Size] = {
    size.name: size
    for size in (
        Size("S", 256 * MIB, 128),
        Size("M", 512 * MIB, 256),
        Size("L", 1024 * MIB, 512),
        Size("XL", 2048 * MIB, 1024),
        Size("2XL", 4096 * MIB, 2048),
    )
}
DEFAULT_SIZE = "M"
MAX_AMOUNT = 100  # per process type, whatever the quotas say: a typo, not a plan
_TYPE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Quotas:
    """What one user's apps may use in all (settings ``DOCKYARD_MAX_*_PER_USER``)."""

    apps: int = 20
    instances: int = 40
    memory_bytes: int = 16 * 1024 * MIB


@dataclass(frozen=True)
class Scale:
    """One process type's amount and size."""

    amount: int
    size: str = DEFAULT_SIZE


Formation = Mapping[str, Scale]


def with_release(current: Formation, process_types: Mapping[str, str]) -> dict[str, Scale]:
    """The formation after deploying a release with ``process_types``: amounts and sizes
    the user set are kept, new types start at one instance, vanished types go to zero."""
    result = {
        name: Scale(0, scale.size) for name, scale in current.items() if name not in process_types
    }
    for name in process_types:
        result[name] = current.get(name, Scale(1))
    return result


@dataclass(frozen=True)
class ScaleRequest:
    """A checked change: the amount (None keeps it) and the size (None keeps it)."""

    process_type: str
    amount: int | None
    size: str | None


def check_scale(
    items: object, known_types: set[str]
) -> tuple[list[ScaleRequest], dict[str, list[str]]]:
    """Scale requests as the official client sends them (``[{"name", "amount", "size"}]``),
    with one error per bad item naming what to change."""
    if not isinstance(items, list) or not items:
        return [], {
            "containers": ['must be a non-empty list: [{"name": "web", "amount": 2, "size": "M"}]']
        }
    requests: list[ScaleRequest] = []
    errors: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, dict):
            errors.setdefault("containers", []).append("each item must be an object")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not _TYPE_NAME.match(name):
            errors.setdefault("name", []).append(f"{name!r} is not a process type name")
            continue
        if name not in known_types:
            known = ", ".join(sorted(known_types)) or "none yet: deploy a Procfile first"
            errors.setdefault(name, []).append(
                f"is not a process type of this app (its types: {known})"
            )
            continue
        amount = item.get("amount")
        if amount is not None and (
            isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_AMOUNT
        ):
            errors.setdefault(name, []).append(
                f"amount must be a whole number from 0 to {MAX_AMOUNT}, got {amount!r}"
            )
            continue
        size = item.get("size") or None
        if size is not None and size not in SIZES:
            errors.setdefault(name, []).append(
                f"size must be one of {', '.join(SIZES)}, got {size!r}"
            )
            continue
        requests.append(ScaleRequest(name, amount, size))
    return requests, errors


def scaled(current: Formation, requests: list[ScaleRequest]) -> dict[str, Scale]:
    result = dict(current)
    for request in requests:
        before = result[request.process_type]
        result[request.process_type] = Scale(
            before.amount if request.amount is None else request.amount,
            request.size or before.size,
        )
    return result


def instances(formation: Formation) -> int:
    return sum(scale.amount for scale in formation.values())


def memory_bytes(formation: Formation) -> int:
    return sum(scale.amount * SIZES[scale.size].memory_bytes for scale in formation.values())
