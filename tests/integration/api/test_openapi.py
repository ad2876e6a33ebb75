"""The OpenAPI document: it describes every route the application serves, and a
schemathesis run (fixed seed) against a real server finds no 5xx and no response that
breaks it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from starlette.routing import Route, WebSocketRoute
from tests.conftest import Api, make_settings, serving_api

from dockyard.api.app import create_app
from dockyard.api.openapi import OPERATIONS, UNDOCUMENTED

# Every response the fuzz provokes must be one the document lists, of its media type and
# shape, and never a server error. (Checks about what a server should reject are left
# out: dockyard reads bodies leniently where the official client sends extra fields.)
REAL_APP = "fuzzed-app"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def test_the_document_lists_exactly_the_routes_served(api: Api) -> None:
    served: set[tuple[str, str]] = set()
    for route in create_app(api.platform).routes:
        if isinstance(route, WebSocketRoute):
            assert route.path in UNDOCUMENTED
            continue
        if not isinstance(route, Route) or not route.path.startswith(("/v1/", "/api/")):
            continue  # the dashboard (web/), its static files and /internal: not the API
            # (/api/ is the database API of addons-info)
        served |= {(method, route.path) for method in route.methods or ()}
    documented = {(op.method, op.path) for op in OPERATIONS}
    # Starlette adds HEAD to every GET route; only the source download documents it.
    served = {(m, p) for m, p in served if m != "HEAD" or p == "/v1/sources/{source_id}"}
    assert served == documented

    document = httpx.get(f"{api.url}/v1/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    rollback = document["paths"]["/v1/apps/{app}/rollback"]["post"]
    assert rollback["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeploymentEnvelope"
    }
    assert "rollback_of" in document["components"]["schemas"]["DeploymentBody"]["required"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with serving_api(make_settings(tmp, "", DOCKYARD_RATE_LIMIT_PER_MINUTE="100000")) as api:
        with api.client() as client:
            jwt = client.post(
                "/v1/tokens/exchange", auth=("", api.token), content=b"{}"
            ).json()["token"]
        yield api, jwt


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Api, str]) -> schemathesis.BaseSchema:
    api, _ = fuzzed
    return schemathesis.openapi.from_url(f"{api.url}/v1/openapi.json")


# Uploads and downloads take raw archives through capability URLs (tested on their own);
# the deployment stream is a WebSocket and is not in the document.
FUZZED = [
    (op.method, op.path) for op in OPERATIONS if op.path != "/v1/sources/{source_id}"
]


@pytest.mark.parametrize(("method", "path"), FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
def test_fuzzing_finds_no_server_error_and_no_undocumented_response(
    method: str, path: str, api_schema: schemathesis.BaseSchema, fuzzed: tuple[Api, str]
) -> None:
    api, jwt = fuzzed
    operation = api_schema[path][method]
    headers = {} if path == "/v1/tokens/exchange" else {"Authorization": f"Bearer {jwt}"}

    @given(case=operation.as_strategy(), on_real_app=st.booleans())
    @settings(
        max_examples=25,
        derandomize=True,  # the fixed seed: the same examples on every run
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def fuzz(case: schemathesis.Case, on_real_app: bool) -> None:
        # Half the examples name an app that exists (random names are only 404s); an
        # example may have destroyed or renamed it, so it is made again first.
        if on_real_app and "app" in (case.path_parameters or {}):
            client.post("/v1/apps", json={"app": {"name": REAL_APP}})
            case.path_parameters = {**(case.path_parameters or {}), "app": REAL_APP}
        case.call_and_validate(base_url=api.url, headers=headers, checks=CHECKS)

    with api.client() as client:
        fuzz()
