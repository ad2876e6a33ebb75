"""Addon providers and their plans: what ``addons-list`` and ``addons-plans`` show, and
what each plan allows a database instance (memory, connections).

Pure: the catalogue, the variables a provider sets and the URL it hands the app, and what
a ``scalingo.json`` asks for. Plan names include those Scalingo's own samples declare
(``postgresql-starter-512``, ``redis-starter-256``), so a manifest written for Scalingo
provisions here unchanged.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

POSTGRESQL = "postgresql"
REDIS = "redis"
ADDON_ID_PREFIX = "ad-"


@dataclass(frozen=True)
class Plan:
    name: str  # also its id: the client sends back the id of the plan it matched by name
    display_name: str
    description: str
    position: int
    memory_mb: int
    max_connections: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


@dataclass(frozen=True)
class Provider:
    id: str  # the client compares it with "PostgreSQL", "Redis" (case-insensitively)
    name: str
    short_description: str
    default_port: int
    scheme: str
    # The variables provisioning sets, all to the addon's URL (Scalingo's names).
    variables: tuple[str, ...]
    plans: tuple[Plan, ...]

    def plan(self, wanted: str) -> Plan | None:
        return next((plan for plan in self.plans if plan.name == wanted), None)


def _plans(provider: str, sizes: list[tuple[str, int, int]]) -> tuple[Plan, ...]:
    return tuple(
        Plan(
            name=f"{provider}-{label}",
            display_name=f"{label.replace('-', ' ').title()}",
            description=f"{memory} MB of memory, {connections} connections",
            position=position,
            memory_mb=memory,
            max_connections=connections,
        )
        for position, (label, memory, connections) in enumerate(sizes, start=1)
    )


PROVIDERS: dict[str, Provider] = {
    POSTGRESQL: Provider(
        id=POSTGRESQL,
        name="PostgreSQL",
        short_description="A PostgreSQL server of the app's own",
        default_port=5432,
        scheme="postgres",
        variables=("SCALINGO_POSTGRESQL_URL", "DATABASE_URL"),
        plans=_plans(
            POSTGRESQL,
            [
                ("sandbox", 128, 10),
                ("starter-512", 512, 20),
                ("starter-1024", 1024, 30),
                ("starter-2048", 2048, 40),
                ("starter-4096", 4096, 60),
            ],
        ),
    ),
    REDIS: Provider(
        id=REDIS,
        name="Redis",
        short_description="A Redis server of the app's own",
        default_port=6379,
        scheme="redis",
        variables=("SCALINGO_REDIS_URL", "REDIS_URL"),
        plans=_plans(
            REDIS,
            [
                ("sandbox", 64, 20),
                ("starter-128", 128, 50),
                ("starter-256", 256, 100),
                ("starter-512", 512, 200),
                ("starter-1024", 1024, 400),
            ],
        ),
    ),
}

# What people type for a provider (the official client's aliases, utils/addon_uuid.go).
ALIASES = {"postgres": POSTGRESQL, "psql": POSTGRESQL, "pg": POSTGRESQL}


def provider(wanted: str) -> Provider | None:
    key = wanted.strip().lower()
    return PROVIDERS.get(ALIASES.get(key, key))


def new_addon_id() -> str:
    return ADDON_ID_PREFIX + secrets.token_hex(12)


def new_password() -> str:
    """192 bits, URL-safe without escaping (letters and digits only)."""
    return secrets.token_hex(24)


_NOT_NAME = re.compile(r"[^a-z0-9_]")


def resource_id(app_name: str, addon_id: str) -> str:
    """The database's (and its user's) name: the app's name, made an SQL identifier that
    needs no quoting, and a part of the addon id (PostgreSQL names end at 63 bytes)."""
    base = _NOT_NAME.sub("_", app_name.lower())[:40].strip("_") or "app"
    if base[0].isdigit():
        base = "db_" + base
    return f"{base}_{addon_id.removeprefix(ADDON_ID_PREFIX)[:8]}"


def url(chosen: Provider, *, user: str, password: str, host: str, port: int, database: str) -> str:
    """The URL the app's variables carry."""
    secret = quote(password, safe="")
    if chosen.id == REDIS:
        return f"redis://{quote(user, safe='')}:{secret}@{host}:{port}"
    return f"{chosen.scheme}://{quote(user, safe='')}:{secret}@{host}:{port}/{database}"


# -- scalingo.json (Scalingo's app manifest) ------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    addons: tuple[tuple[str, str], ...]  # (provider id, plan name)
    postdeploy: str | None  # after every deployment
    first_deploy: str | None  # after the first one, instead of ``postdeploy``

    def hook(self, *, first: bool) -> str | None:
        return (self.first_deploy or self.postdeploy) if first else self.postdeploy


def parse_manifest(data: Any) -> tuple[Manifest, list[str]]:
    """What a parsed ``scalingo.json`` declares, and what in it cannot be honoured (in
    words). Addons are ``["postgresql:postgresql-starter-512", {"plan": "redis:redis-sandbox"}]``;
    a provider without a plan gets its first plan."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        return Manifest((), None, None), ["scalingo.json must hold a JSON object"]
    wanted: list[tuple[str, str]] = []
    declared = data.get("addons") or []
    if not isinstance(declared, list):
        problems.append("addons must be a list")
        declared = []
    for item in declared:
        spec = item.get("plan") if isinstance(item, Mapping) else item
        if not isinstance(spec, str) or not spec.strip():
            problems.append(f"addon {item!r} is neither 'provider:plan' nor {{\"plan\": ...}}")
            continue
        name, _, plan_name = spec.strip().partition(":")
        chosen = provider(name)
        if chosen is None:
            known = ", ".join(sorted(PROVIDERS))
            problems.append(f"addon {spec!r}: no provider {name!r} here (there are {known})")
            continue
        plan = chosen.plan(plan_name) if plan_name else chosen.plans[0]
        if plan is None:
            names = ", ".join(p.name for p in chosen.plans)
            problems.append(f"addon {spec!r}: {chosen.id} has no plan {plan_name!r} ({names})")
            continue
        if all(existing != chosen.id for existing, _ in wanted):
            wanted.append((chosen.id, plan.name))
    scripts = data.get("scripts")
    hooks: dict[str, str | None] = {}
    for key in ("postdeploy", "first-deploy"):
        command = scripts.get(key) if isinstance(scripts, Mapping) else None
        if command is not None and (not isinstance(command, str) or not command.strip()):
            problems.append(f"scripts.{key} must be a command (a non-empty string)")
            command = None
        hooks[key] = command.strip() if command else None
    return Manifest(tuple(wanted), hooks["postdeploy"], hooks["first-deploy"]), problems
