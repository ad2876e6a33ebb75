"""JSON shapes of addons, their providers and plans, as the official client reads them
(API-OPS §9): ``plan`` and ``addon_provider`` are never null (the client dereferences
them unchecked), and a plan's ``id`` is its name (the client matches plans by name and
sends back the id)."""

from __future__ import annotations

from typing_extensions import TypedDict

from dockyard.api.schemas import timestamp
from dockyard.domain import addons as catalogue
from dockyard.services.addons import AddonRecord, BackupRecord


class PlanBody(TypedDict):
    id: str
    name: str
    display_name: str
    description: str
    position: int
    on_demand: bool
    disabled: bool
    disabled_alternative_plan_id: str
    sku: str
    hds_available: bool
    to_be_discontinued: bool
    trial_available: bool


class CategoryBody(TypedDict):
    id: str
    name: str
    description: str
    position: int


class ProviderBody(TypedDict):
    id: str
    name: str
    logo_url: str
    short_description: str
    description: str
    category: CategoryBody
    provider_name: str
    provider_url: str
    hds_available: bool
    plans: list[PlanBody]


class AddonBody(TypedDict):
    id: str
    app_id: str
    resource_id: str
    status: str
    plan: PlanBody
    addon_provider: ProviderBody
    provisioned_at: str
    deprovisioned_at: str | None


class BackupBody(TypedDict):
    id: str
    addon_id: str
    addon_provider_id: str
    size: int
    created_at: str


_DATABASES = CategoryBody(id="databases", name="Databases", description="", position=1)


def plan(row: catalogue.Plan) -> PlanBody:
    return {
        "id": row.name,
        "name": row.name,
        "display_name": row.display_name,
        "description": row.description,
        "position": row.position,
        "on_demand": False,
        "disabled": False,
        "disabled_alternative_plan_id": "",
        "sku": row.name,
        "hds_available": False,
        "to_be_discontinued": False,
        "trial_available": False,
    }


def provider(row: catalogue.Provider) -> ProviderBody:
    return {
        "id": row.id,
        "name": row.name,
        "logo_url": "",
        "short_description": row.short_description,
        "description": f"{row.short_description}, run by dockyard next to the app.",
        "category": _DATABASES,
        "provider_name": "dockyard",
        "provider_url": "",
        "hds_available": False,
        "plans": [plan(p) for p in row.plans],
    }


def addon(row: AddonRecord) -> AddonBody:
    chosen = catalogue.PROVIDERS[row.provider]
    return {
        "id": row.id,
        "app_id": row.app_id,
        "resource_id": row.resource_id,
        "status": row.status,
        "plan": plan(chosen.plan(row.plan) or chosen.plans[0]),
        "addon_provider": provider(chosen),
        "provisioned_at": timestamp(row.created_at),
        "deprovisioned_at": None,
    }


def backup(row: BackupRecord) -> BackupBody:
    return {
        "id": row.id,
        "addon_id": row.addon_id,
        "addon_provider_id": row.provider,
        "size": row.size,
        "created_at": timestamp(row.created_at),
    }
