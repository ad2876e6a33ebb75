"""Server error bodies in words, and the one place that prints them."""

from __future__ import annotations

import httpx
import pytest
import typer

from dockyard.cli.client.errors import (
    ApiError,
    AuthFailed,
    UsageError,
    describe_api_error,
    reported,
)
from dockyard.cli.client.http import ApiClient, NetworkError

URL = "http://dock.test/v1/apps/shop/deployments"


def test_plain_error_message() -> None:
    assert (
        describe_api_error(409, {"error": "already exists"}, method="POST", url=URL)
        == "already exists"
    )


def test_validation_errors_name_their_field() -> None:
    body = {"errors": {"name": ["must be lowercase", "is too long"], "value": ["is required"]}}
    text = describe_api_error(422, body, method="POST", url=URL)
    assert text == "name: must be lowercase; name: is too long; value: is required"


def test_not_found_names_the_resource_and_the_app() -> None:
    assert describe_api_error(
        404, {"resource": "app", "error": "not found"}, method="GET", url=URL
    ) == ("app not found: there is no app named 'shop' in your account")
    assert (
        describe_api_error(404, {"resource": "deployment"}, method="GET", url=URL)
        == "deployment not found"
    )


def test_unknown_route_says_the_server_lacks_it() -> None:
    text = describe_api_error(
        404, {"resource": "route", "error": "not found"}, method="GET", url=URL + "?x=1"
    )
    assert text.startswith("The server does not provide GET /v1/apps/shop/deployments (404)")


def test_non_json_body_keeps_status_and_url() -> None:
    text = describe_api_error(502, "<html>Bad Gateway</html>", method="GET", url=URL)
    assert text == f"The server answered 502 to GET {URL}: <html>Bad Gateway</html>"


def client_answering(status: int, body: object, headers: dict[str, str] | None = None) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tokens/exchange":
            return httpx.Response(200, json={"token": "a.b.c"})
        return httpx.Response(status, json=body, headers=headers)

    return ApiClient("http://dock.test", "tk", transport=httpx.MockTransport(handler))


def test_a_refused_token_says_to_log_in() -> None:
    with (
        pytest.raises(AuthFailed) as caught,
        client_answering(401, {"error": "token expired"}) as api,
    ):
        api.get("/v1/apps")
    assert caught.value.message == "token expired"
    assert "dockyard login" in caught.value.hint


def test_rate_limit_says_when_to_retry() -> None:
    with (
        pytest.raises(ApiError) as caught,
        client_answering(429, {"error": "slow down", "code": "rate"}, {"Retry-After": "7"}) as api,
    ):
        api.get("/v1/apps")
    assert "7 seconds" in caught.value.hint


def test_unreachable_server_names_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with (
        pytest.raises(NetworkError) as caught,
        ApiClient("http://dock.test:9", "tk", transport=httpx.MockTransport(refuse)) as api,
    ):
        api.get("/v1/apps")
    assert "http://dock.test:9/v1/tokens/exchange" in caught.value.message
    assert "server is running" in caught.value.hint


def test_reported_prints_words_and_exits_with_the_errors_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @reported
    def command() -> None:
        raise UsageError("No app selected.", "Pass --app NAME.")

    with pytest.raises(typer.Exit) as caught:
        command()
    assert caught.value.exit_code == 2
    err = capsys.readouterr().err
    assert "Error: No app selected." in err
    assert "Pass --app NAME." in err
    assert "Traceback" not in err
