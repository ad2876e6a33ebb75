"""The OpenAPI 3.1 document of the API, served at ``/v1/openapi.json``.

Generated from the typed models of ``dockyard.api.schemas`` (the shapes the handlers
render and read) and the route table below; a test checks that the table and the
application's routes are the same set, so an endpoint cannot go undocumented.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from dockyard.api import addon_schemas as a
from dockyard.api import schemas as s

# -- envelopes: the top-level bodies --------------------------------------------------


class TokenExchanged(TypedDict):
    token: str


class UserEnvelope(TypedDict):
    user: s.UserBody


class RegionList(TypedDict):
    regions: list[s.RegionBody]


class TokenList(TypedDict):
    tokens: list[s.TokenBody]


class TokenEnvelope(TypedDict):
    token: s.TokenBody


class AppEnvelope(TypedDict):
    app: s.AppBody


class AppList(TypedDict):
    apps: list[s.AppBody]


class VariableEnvelope(TypedDict):
    variable: s.VariableBody


class VariableList(TypedDict):
    variables: list[s.VariableBody]


class SourceEnvelope(TypedDict):
    source: s.SourceBody


class UploadedSource(TypedDict):
    id: str
    size: int


class UploadedEnvelope(TypedDict):
    source: UploadedSource


class BuildCacheBody(TypedDict):
    size: int
    etag: str  # the ETag a GET of the cache now answers with


class BuildCacheEnvelope(TypedDict):
    build_cache: BuildCacheBody


class DeploymentEnvelope(TypedDict):
    deployment: s.DeploymentBody


class DeploymentList(TypedDict):
    deployments: list[s.DeploymentBody]
    meta: s.PageMeta


class ContainerTypeList(TypedDict):
    containers: list[s.ContainerTypeBody]


class ContainerList(TypedDict):
    containers: list[s.ContainerBody]


class AutoscalerList(TypedDict):
    autoscalers: list[dict[str, Any]]


class LogsUrl(TypedDict):
    logs_url: str
    app: s.AppBody


class OperationEnvelope(TypedDict):
    operation: s.OperationBody


class EventList(TypedDict):
    events: list[s.EventBody]
    meta: s.PageMeta


class CollaboratorList(TypedDict):
    collaborators: list[s.CollaboratorBody]


class CollaboratorEnvelope(TypedDict):
    collaborator: s.CollaboratorBody


class ProviderList(TypedDict):
    addon_providers: list[a.ProviderBody]


class PlanList(TypedDict):
    plans: list[a.PlanBody]


class AddonList(TypedDict):
    addons: list[a.AddonBody]


class AddonEnvelope(TypedDict):
    addon: a.AddonBody


class AddonProvisioned(TypedDict):
    addon: a.AddonBody
    message: str
    variables: list[str]


class AddonChanged(TypedDict):
    addon: a.AddonBody
    message: str


class PlanChangeFields(TypedDict):
    plan_id: str


class PlanChange(TypedDict):
    addon: PlanChangeFields


class AddonToken(TypedDict):
    token: str


class AddonTokenEnvelope(TypedDict):
    addon: AddonToken


class AddonAddFields(TypedDict):
    addon_provider_id: str
    plan_id: str


class AddonAdd(TypedDict):
    addon: AddonAddFields


class RestoreRequest(TypedDict):
    backup_id: str


class BackupEnvelope(TypedDict):
    backup: a.BackupBody


class BackupList(TypedDict):
    backups: list[a.BackupBody]


class DatabaseEnvelope(TypedDict):
    database: dict[str, Any]


# -- errors (dockyard.api.errors) ---------------------------------------------------------


class NotFoundError(TypedDict):
    resource: str
    error: str


class CodedError(TypedDict):
    error: str
    code: str


class PlainError(TypedDict):
    error: str


class ValidationErrors(TypedDict):
    errors: dict[str, list[str]]


TEXT = "text/plain"
BINARY = "application/octet-stream"

_COMMON_ERRORS: dict[int, Any] = {
    400: CodedError,
    401: PlainError,
    404: NotFoundError,
    405: PlainError,
    413: PlainError,
    415: PlainError,
    429: CodedError,
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    # status -> a model, TEXT or BINARY, or None for no body
    responses: dict[int, Any]
    request: Any = None
    query: tuple[tuple[str, str], ...] = ()  # (name, JSON type)
    auth: str = "bearer"  # "bearer", "basic" (the token exchange) or "token" (the URL's)
    extra_errors: dict[int, Any] = field(default_factory=dict)


_APP_ERRORS = {403: CodedError, 409: PlainError, 422: ValidationErrors}
_PAGE = (("page", "integer"), ("per_page", "integer"))

OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/v1/tokens/exchange", "An API token for a JWT", {200: TokenExchanged},
              request=s.EmptyBody, auth="basic"),
    Operation("GET", "/v1/users/self", "The current user", {200: UserEnvelope}),
    Operation("GET", "/v1/regions", "The one region: this server", {200: RegionList}),
    Operation("GET", "/v1/tokens", "The user's API tokens", {200: TokenList}),
    Operation("POST", "/v1/tokens", "A new API token (its secret shown once)", {201: TokenEnvelope},
              request=s.TokenCreate, extra_errors={422: ValidationErrors}),
    Operation("DELETE", "/v1/tokens/{token_id}", "Revoke an API token", {204: None}),
    Operation("POST", "/v1/apps", "Create an app", {201: AppEnvelope}, request=s.AppCreate,
              extra_errors={422: ValidationErrors, 409: PlainError}),
    Operation("GET", "/v1/apps", "The apps the user owns or collaborates on", {200: AppList}),
    Operation("GET", "/v1/apps/{app}", "An app", {200: AppEnvelope}),
    Operation("DELETE", "/v1/apps/{app}", "Destroy an app (its owner only)", {204: None},
              extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/rename", "Rename an app; its URL follows",
              {200: AppEnvelope}, request=s.RenameRequest, extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/apps/{app}/variables", "The app's variables", {200: VariableList}),
    Operation("POST", "/v1/apps/{app}/variables", "Add or change a variable",
              {201: VariableEnvelope}, request=s.VariableCreate, extra_errors=_APP_ERRORS),
    Operation("PUT", "/v1/apps/{app}/variables", "Add or change several variables",
              {200: VariableList}, request=s.VariablesUpdate, extra_errors=_APP_ERRORS),
    Operation("PATCH", "/v1/apps/{app}/variables/{variable_id}", "Change a variable's value",
              {200: VariableEnvelope}, request=s.VariableUpdate, extra_errors=_APP_ERRORS),
    Operation("PUT", "/v1/apps/{app}/variables/{variable_id}", "Change a variable's value",
              {200: VariableEnvelope}, request=s.VariableUpdate, extra_errors=_APP_ERRORS),
    Operation("DELETE", "/v1/apps/{app}/variables/{variable_id}", "Remove a variable",
              {204: None}, extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/sources", "A place to upload a source archive",
              {201: SourceEnvelope}, request=s.EmptyBody),
    Operation("PUT", "/v1/sources/{source_id}", "Upload the archive (the upload URL)",
              {200: UploadedEnvelope}, request=BINARY, query=(("token", "string"),),
              auth="token", extra_errors={403: CodedError}),
    Operation("GET", "/v1/sources/{source_id}", "Download the archive (the download URL)",
              {200: BINARY}, query=(("token", "string"),), auth="token",
              extra_errors={403: CodedError, 409: PlainError}),
    Operation("HEAD", "/v1/sources/{source_id}", "The archive's size (the download URL)",
              {200: None}, query=(("token", "string"),), auth="token",
              extra_errors={403: CodedError, 409: PlainError}),
    Operation("GET", "/v1/internal/build-caches/{deployment_id}",
              "The app's build cache, for a worker building the deployment (If-None-Match: 304)",
              {200: BINARY, 304: None}, query=(("token", "string"),), auth="token",
              extra_errors={403: CodedError}),
    Operation("PUT", "/v1/internal/build-caches/{deployment_id}",
              "Replace the app's build cache (a worker, after building the deployment)",
              {200: BuildCacheEnvelope}, request=BINARY, query=(("token", "string"),),
              auth="token", extra_errors={403: CodedError, 409: PlainError}),
    Operation("POST", "/v1/apps/{app}/deployments", "Deploy a source archive",
              {201: DeploymentEnvelope}, request=s.DeploymentCreate, extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/apps/{app}/deployments", "The app's deployments, newest first",
              {200: DeploymentList}, query=_PAGE),
    Operation("GET", "/v1/apps/{app}/deployments/{deployment_id}", "A deployment",
              {200: DeploymentEnvelope}),
    Operation("GET", "/v1/apps/{app}/deployments/{deployment_id}/output",
              "A deployment's log", {200: TEXT}),
    Operation("POST", "/v1/apps/{app}/deployments/{deployment_id}/cancel",
              "Cancel a deployment", {200: DeploymentEnvelope}, request=s.EmptyBody,
              extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/rollback",
              "Start a kept release again, without a build, as a new deployment",
              {201: DeploymentEnvelope}, request=s.RollbackRequest, extra_errors=_APP_ERRORS),
    Operation("DELETE", "/v1/apps/{app}/caches/deployment", "Empty the build cache",
              {204: None}, extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/stop", "Stop every instance", {202: AppEnvelope},
              request=s.EmptyBody, extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/start", "Start the instances again", {202: AppEnvelope},
              request=s.EmptyBody, extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/restart", "Restart instances (all when no scope)",
              {202: AppEnvelope}, request=s.RestartRequest, extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/scale", "Change the formation",
              {202: ContainerTypeList}, request=s.ScaleRequest, extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/apps/{app}/containers", "The formation", {200: ContainerTypeList}),
    Operation("GET", "/v1/apps/{app}/ps", "The running instances", {200: ContainerList},
              extra_errors={409: PlainError}),
    Operation("GET", "/v1/apps/{app}/autoscalers", "Always empty", {200: AutoscalerList}),
    Operation("GET", "/v1/apps/{app}/operations/{operation_id}", "A scale or restart",
              {200: OperationEnvelope}),
    Operation("GET", "/v1/apps/{app}/logs", "The app's logs URL (a capability)",
              {200: LogsUrl}),
    Operation("GET", "/v1/logs/{app_id}", "An app's log lines, through its logs URL",
              {200: TEXT, 204: None},
              query=(("token", "string"), ("timestamp", "string"), ("n", "integer"),
                     ("filter", "string")),
              auth="token", extra_errors={401: PlainError}),
    Operation("POST", "/v1/apps/{app}/run", "Start a one-off command", {200: dict[str, Any]},
              request=dict[str, Any], extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/containers/{container_id}/stop", "Stop a one-off",
              {202: dict[str, Any]}, request=s.EmptyBody, extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/apps/{app}/domains", "The app's custom domains",
              {200: dict[str, Any]}),
    Operation("POST", "/v1/apps/{app}/domains", "Add a custom domain", {201: dict[str, Any]},
              request=dict[str, Any], extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/apps/{app}/domains/{domain_id}", "A custom domain",
              {200: dict[str, Any]}),
    Operation("PATCH", "/v1/apps/{app}/domains/{domain_id}", "A domain's own certificate",
              {200: dict[str, Any]}, request=dict[str, Any], extra_errors=_APP_ERRORS),
    Operation("PUT", "/v1/apps/{app}/domains/{domain_id}", "A domain's own certificate",
              {200: dict[str, Any]}, request=dict[str, Any], extra_errors=_APP_ERRORS),
    Operation("DELETE", "/v1/apps/{app}/domains/{domain_id}", "Remove a custom domain",
              {204: None}, extra_errors=_APP_ERRORS),
    Operation("PATCH", "/v1/apps/{app}", "App settings (force_https)", {200: AppEnvelope},
              request=dict[str, Any], extra_errors=_APP_ERRORS),
    Operation("PUT", "/v1/apps/{app}", "App settings (force_https)", {200: AppEnvelope},
              request=dict[str, Any], extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/events", "The user's timeline, newest first", {200: EventList},
              query=_PAGE),
    Operation("GET", "/v1/apps/{app}/events", "The app's timeline, newest first",
              {200: EventList}, query=_PAGE),
    Operation("GET", "/v1/apps/{app}/collaborators", "The app's collaborators",
              {200: CollaboratorList}),
    Operation("POST", "/v1/apps/{app}/collaborators", "Add a collaborator (owner only)",
              {201: CollaboratorEnvelope}, request=s.CollaboratorAdd, extra_errors=_APP_ERRORS),
    Operation("DELETE", "/v1/apps/{app}/collaborators/{collaborator_id}",
              "Remove a collaborator (owner only)", {204: None}, extra_errors=_APP_ERRORS),
    Operation("PATCH", "/v1/apps/{app}/collaborators/{collaborator_id}",
              "collaborators-update (is_limited false only)", {200: CollaboratorEnvelope},
              request=dict[str, Any], extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/addon_providers", "The addon providers (addons-list)",
              {200: ProviderList}),
    Operation("GET", "/v1/addon_providers/{provider}/plans", "A provider's plans",
              {200: PlanList}, query=(("show_all", "boolean"),)),
    Operation("GET", "/v1/apps/{app}/addons", "The app's addons", {200: AddonList}),
    Operation("POST", "/v1/apps/{app}/addons", "Provision an addon (a database of the app's)",
              {201: AddonProvisioned}, request=AddonAdd, extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/apps/{app}/addons/{addon_id}", "An addon", {200: AddonEnvelope}),
    Operation("PATCH", "/v1/apps/{app}/addons/{addon_id}",
              "Change an addon's plan (addons-upgrade)", {200: AddonChanged},
              request=PlanChange, extra_errors=_APP_ERRORS),
    Operation("DELETE", "/v1/apps/{app}/addons/{addon_id}",
              "Remove an addon: its variables, then its data", {204: None},
              extra_errors=_APP_ERRORS),
    Operation("POST", "/v1/apps/{app}/addons/{addon_id}/token",
              "A token for the database API (addons-info)", {200: AddonTokenEnvelope},
              request=s.EmptyBody),
    Operation("POST", "/v1/apps/{app}/addons/{addon_id}/backups",
              "Back the addon's data up into the blob store", {201: BackupEnvelope},
              request=s.EmptyBody, extra_errors=_APP_ERRORS),
    Operation("GET", "/v1/apps/{app}/addon_backups", "The app's addon backups, newest first",
              {200: BackupList}),
    Operation("POST", "/v1/apps/{app}/addons/{addon_id}/restore",
              "Put a backup of the app's back into the addon", {200: AddonEnvelope},
              request=RestoreRequest, extra_errors=_APP_ERRORS),
    Operation("GET", "/api/databases/{addon_id}",
              "The database API: an addon's database (with the addon token)",
              {200: DatabaseEnvelope}),
    Operation("GET", "/v1/openapi.json", "This document", {200: dict[str, Any]}, auth="none"),
)

# Paths not described here: the deployment stream and the logs' follow are WebSockets
# (docs/api.md); the dashboard's pages and Caddy's certificate check are not the API.
UNDOCUMENTED = frozenset({"/v1/apps/{app_id}/deployments-stream", "/v1/logs/{app_id}"})

_REF = "#/components/schemas/{model}"


class _Components:
    """The schemas the document refers to, each generated once from its model."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: Any) -> dict[str, Any]:
        name = getattr(model, "__name__", None)
        schema = TypeAdapter(model).json_schema(ref_template=_REF, mode="serialization")
        self.schemas.update(schema.pop("$defs", {}))
        if name is None or not isinstance(model, type):
            return schema
        self.schemas[name] = schema
        return {"$ref": _REF.format(model=name)}


def _content(components: _Components, model: Any) -> dict[str, Any]:
    if model == TEXT:
        return {TEXT: {"schema": {"type": "string"}}}
    if model == BINARY:
        return {BINARY: {"schema": {"type": "string", "contentMediaType": BINARY}}}
    return {"application/json": {"schema": components.ref(model)}}


def _operation(components: _Components, op: Operation) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_parameters(op.path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": {"type": kind}}
        for name, kind in op.query
    ]
    responses: dict[str, Any] = {}
    for status, model in {**op.responses}.items():
        described: dict[str, Any] = {"description": "Success"}
        if model is not None:
            described["content"] = _content(components, model)
        responses[str(status)] = described
    if op.auth != "none":
        for status, model in {**_COMMON_ERRORS, **op.extra_errors}.items():
            responses[str(status)] = {
                "description": "Error (docs/api.md, Errors)",
                "content": _content(components, model),
            }
    body: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}{op.path.replace('/', '_').replace('{', '').replace('}', '')}",
        "parameters": parameters,
        "responses": responses,
    }
    if op.request is not None:
        body["requestBody"] = {"required": True, "content": _content(components, op.request)}
    if op.auth == "bearer":
        body["security"] = [{"bearer": []}]
    elif op.auth == "basic":
        body["security"] = [{"basic": []}]
    else:
        body["security"] = []
    return body


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


@functools.cache
def document(server_url: str) -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(components, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dockyard",
            "version": "1",
            "description": "Scalingo's API as dockyard serves it (docs/api.md).",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }
