"""Probes of the API with input of the wrong type or shape (issue 15, items 7, 9, 10), over
real HTTP on SQLite and PostgreSQL: every refusal is a JSON 4xx saying what to change,
never a 500 with a traceback."""

from __future__ import annotations

import base64
import itertools
import socket
from typing import Any

import httpx
import pytest
from tests.conftest import Api

from dockyard.domain.variables import (
    MAX_VALUE_BYTES,
    MAX_VARIABLES,
    MAX_VARIABLES_BYTES,
)

# What a JSON field can be instead of the string or object an endpoint expects.
WRONG_TYPES: list[Any] = [5, 1.5, True, None, [], ["x"], {}, {"a": "b"}, ""]


def _assert_json_4xx(response: httpx.Response, *expected: int) -> None:
    assert response.status_code in expected, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert response.json()


def test_a_token_name_that_is_not_a_string_is_a_422(api: Api) -> None:
    with api.client() as client:
        for name in WRONG_TYPES:
            response = client.post("/v1/tokens", json={"token": {"name": name}})
            _assert_json_4xx(response, 422)
            assert "name" in response.json()["errors"]


def test_fields_of_the_wrong_type_are_a_json_4xx_never_a_500(api: Api) -> None:
    """Every field of every JSON body, replaced by values of each other type."""
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "probe-app"}}).status_code == 201
        bodies: list[tuple[str, str, Any]] = []
        for wrong in WRONG_TYPES:
            bodies += [
                ("POST", "/v1/tokens", {"token": wrong}),
                ("POST", "/v1/apps", {"app": wrong}),
                ("POST", "/v1/apps", {"app": {"name": wrong}}),
                ("POST", "/v1/apps/probe-app/variables", {"variable": wrong}),
                (
                    "POST",
                    "/v1/apps/probe-app/variables",
                    {"variable": {"name": wrong, "value": "v"}},
                ),
                ("PUT", "/v1/apps/probe-app/variables", {"variables": [wrong]}),
                (
                    "PUT",
                    "/v1/apps/probe-app/variables",
                    {"variables": [{"name": wrong, "value": "v"}]},
                ),
                ("POST", "/v1/apps/probe-app/deployments", {"deployment": wrong}),
                ("POST", "/v1/apps/probe-app/deployments", {"deployment": {"source_url": wrong}}),
            ]
            if wrong != "":  # an empty value is a value
                bodies += [
                    (
                        "POST",
                        "/v1/apps/probe-app/variables",
                        {"variable": {"name": "K", "value": wrong}},
                    ),
                    (
                        "PUT",
                        "/v1/apps/probe-app/variables",
                        {"variables": [{"name": "K", "value": wrong}]},
                    ),
                ]
            if wrong != []:  # an empty list of variables is a valid (empty) update
                bodies.append(("PUT", "/v1/apps/probe-app/variables", {"variables": wrong}))
            if wrong not in (None, ""):  # both mean "no git_ref"
                deployment = {"source_url": "https://example.com/a.tar.gz", "git_ref": wrong}
                bodies.append(
                    ("POST", "/v1/apps/probe-app/deployments", {"deployment": deployment})
                )
        wholes: list[Any] = [5, "x", [], None]
        for whole in wholes:
            bodies += [("POST", "/v1/tokens", whole), ("POST", "/v1/apps", whole)]
        for method, path, body in bodies:
            response = client.request(method, path, json=body)
            _assert_json_4xx(response, 400, 422)


def test_odd_path_parameters_are_a_json_4xx_never_a_500(api: Api) -> None:
    """PostgreSQL refuses a NUL in a string literal; an id must never reach it unchecked."""
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "probe-app"}}).status_code == 201
        odd = ["%00", "a%00b", "%1f", "%ff%fe", "x" * 3000, "%2e%2e", "%e2%80%ae"]
        for bad, (method, path) in itertools.product(
            odd,
            [
                ("GET", "/v1/apps/{bad}"),
                ("DELETE", "/v1/apps/{bad}"),
                ("GET", "/v1/apps/{bad}/variables"),
                ("GET", "/v1/apps/probe-app/deployments/{bad}"),
                ("GET", "/v1/apps/probe-app/deployments/{bad}/output"),
                ("DELETE", "/v1/apps/probe-app/variables/{bad}"),
                ("DELETE", "/v1/tokens/{bad}"),
                ("GET", "/v1/sources/{bad}?token=x"),
            ],
        ):
            path = path.format(bad=bad)
            response = client.request(method, path)
            _assert_json_4xx(response, 400, 403, 404, 414)


# --- item 7: variables no build can take -------------------------------------------------


def _variables(client: httpx.Client, items: list[dict[str, str]]) -> httpx.Response:
    return client.put("/v1/apps/vars-app/variables", json={"variables": items})


@pytest.fixture
def vars_client(api: Api) -> Any:
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "vars-app"}}).status_code == 201
        yield client


def test_a_nul_in_a_value_is_refused_naming_the_variable(vars_client: httpx.Client) -> None:
    response = vars_client.post(
        "/v1/apps/vars-app/variables", json={"variable": {"name": "SECRET", "value": "a\x00b"}}
    )
    _assert_json_4xx(response, 422)
    message = " ".join(response.json()["errors"]["value"])
    assert "SECRET" in message and "NUL" in message


def test_a_value_over_the_byte_limit_is_refused_counting_bytes_not_characters(
    vars_client: httpx.Client,
) -> None:
    # Three bytes per character in UTF-8: under the limit in characters, over it in bytes.
    value = "€" * (MAX_VALUE_BYTES // 3 + 1)
    assert len(value) < MAX_VALUE_BYTES < len(value.encode())
    response = vars_client.post(
        "/v1/apps/vars-app/variables", json={"variable": {"name": "BIG", "value": value}}
    )
    _assert_json_4xx(response, 422)
    message = " ".join(response.json()["errors"]["value"])
    assert "BIG" in message and f"{MAX_VALUE_BYTES // 1024} KiB" in message
    fits = "€" * (MAX_VALUE_BYTES // 3)
    ok = vars_client.post(
        "/v1/apps/vars-app/variables", json={"variable": {"name": "BIG", "value": fits}}
    )
    assert ok.status_code == 201


def test_the_total_size_of_an_apps_variables_is_bounded(vars_client: httpx.Client) -> None:
    value = "v" * (MAX_VALUE_BYTES - 64)
    count = MAX_VARIABLES_BYTES // MAX_VALUE_BYTES  # these fit, with their names
    names = [f"V{i}" for i in range(count)]
    stored = _variables(vars_client, [{"name": n, "value": value} for n in names])
    assert stored.status_code == 200, stored.text
    one_more = vars_client.post(
        "/v1/apps/vars-app/variables", json={"variable": {"name": "LAST", "value": value}}
    )
    _assert_json_4xx(one_more, 422)
    message = " ".join(one_more.json()["errors"]["variables"])
    assert "LAST" in message and f"{MAX_VARIABLES_BYTES // 1024} KiB" in message
    # Growing one that is stored counts too (PATCH of its value).
    listed = vars_client.get("/v1/apps/vars-app/variables").json()["variables"]
    grown = vars_client.patch(
        f"/v1/apps/vars-app/variables/{listed[0]['id']}",
        json={"variable": {"value": value + "x" * 63}},
    )
    assert grown.status_code == 200, grown.text  # still within its own and the app's bounds
    shrunk = vars_client.patch(
        f"/v1/apps/vars-app/variables/{listed[0]['id']}", json={"variable": {"value": "small"}}
    )
    assert shrunk.status_code == 200


def test_too_many_variables_are_refused(vars_client: httpx.Client) -> None:
    items = [{"name": f"N{i}", "value": "1"} for i in range(MAX_VARIABLES + 1)]
    response = _variables(vars_client, items)
    _assert_json_4xx(response, 422)
    assert str(MAX_VARIABLES) in " ".join(response.json()["errors"]["variables"])
    assert vars_client.get("/v1/apps/vars-app/variables").json()["variables"] == []
    assert _variables(vars_client, items[:MAX_VARIABLES]).status_code == 200


def test_names_that_are_not_posix_names_are_refused(vars_client: httpx.Client) -> None:
    for name in ["1ABC", "A-B", "A B", "A=B", "É", "A\x00", "x" * 256]:
        response = vars_client.post(
            "/v1/apps/vars-app/variables", json={"variable": {"name": name, "value": "v"}}
        )
        _assert_json_4xx(response, 422)
        assert response.json()["errors"]["name"]


# --- item 10: smaller ---------------------------------------------------------------------


def test_a_64_kib_url_gets_a_json_refusal(api: Api) -> None:
    port = int(api.url.rsplit(":", 1)[1])
    target = "/v1/apps?" + "q=" + "x" * (64 * 1024)
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        reply = _read_all(sock)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.split()[1] in (b"414", b"431"), reply[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    assert b"error" in body


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_basic_auth_with_a_user_name_is_refused(api: Api) -> None:
    for user in ("alice", "x", " "):
        basic = base64.b64encode(f"{user}:{api.token}".encode()).decode()
        response = httpx.get(
            f"{api.url}/v1/users/self", headers={"Authorization": f"Basic {basic}"}
        )
        _assert_json_4xx(response, 401)
        assert "empty user" in response.json()["error"]
    empty = base64.b64encode(f":{api.token}".encode()).decode()
    assert (
        httpx.get(
            f"{api.url}/v1/users/self", headers={"Authorization": f"Basic {empty}"}
        ).status_code
        == 200
    )


def test_wrong_types_in_query_parameters_are_400(api: Api) -> None:
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "probe-app"}}).status_code == 201
        for query in itertools.product(("page", "per_page"), ("-1", "x", "1e3", "%00", "9" * 40)):
            response = client.get(f"/v1/apps/probe-app/deployments?{query[0]}={query[1]}")
            _assert_json_4xx(response, 400)
