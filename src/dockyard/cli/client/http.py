"""The dockyard API over httpx: JWT authentication, and every failure as a ClientError.

httpx's exceptions never leave this module (and :mod:`upload`): transport failures become
:class:`NetworkError` naming the URL, error statuses become :class:`ApiError` with the
server's body in words.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from dockyard.cli.client.errors import LOGIN_HINT, ApiError, AuthFailed, NetworkError
from dockyard.cli.client.tokens import TokenManager

USER_AGENT = "dockyard-cli/0.1"
NETWORK_HINT = (
    "Check that the dockyard server is running and that the API URL is right "
    "(`dockyard login --api-url …`, or DOCKYARD_API_URL)."
)
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def transport_error(exc: httpx.TransportError, method: str, url: str) -> NetworkError:
    url = redact(url)
    if isinstance(exc, httpx.ConnectError):
        return NetworkError(f"Could not connect to {url} ({_reason(exc)}).", NETWORK_HINT)
    if isinstance(exc, httpx.TimeoutException):
        return NetworkError(f"{method} {url} timed out ({type(exc).__name__}).", NETWORK_HINT)
    return NetworkError(f"{method} {url} failed: {_reason(exc)}.", NETWORK_HINT)


def redact(url: str) -> str:
    """``url`` without its query: source URLs carry their capability token there."""
    return url.split("?", 1)[0]


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def parsed_body(response: httpx.Response) -> Any:
    """JSON when the body is JSON, else its text: error bodies are shown either way."""
    try:
        return response.json()
    except ValueError:
        return response.text


def raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    method, url = response.request.method, redact(str(response.request.url))
    body = parsed_body(response)
    if response.status_code == 401:
        raise AuthFailed(401, body, method=method, url=url, hint=LOGIN_HINT)
    hint = ""
    if response.status_code == 429:
        hint = f"Try again in {response.headers.get('retry-after', 'a few')} seconds."
    raise ApiError(response.status_code, body, method=method, url=url, hint=hint)


class ApiClient:
    """One server, one user: ``get``/``post``/``put``/``delete`` return the parsed JSON."""

    def __init__(
        self,
        base_url: str,
        api_token: str,
        *,
        tokens: TokenManager | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_token = api_token
        self._http = httpx.Client(
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=DEFAULT_TIMEOUT,
            transport=transport,
        )
        self.tokens = tokens

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.base_url}{path}"

    def exchange(self) -> str:
        """The API token for a JWT (``POST /v1/tokens/exchange``, Basic with an empty user)."""
        basic = base64.b64encode(f":{self._api_token}".encode()).decode()
        response = self._send(
            "POST", "/v1/tokens/exchange", json={}, authorization=f"Basic {basic}"
        )
        if response.status_code == 401:
            raise AuthFailed(
                401,
                {"error": f"{self.base_url} refused the API token ({_error_of(response)})"},
                method="POST",
                url=redact(str(response.request.url)),
                hint=LOGIN_HINT,
            )
        raise_for_status(response)
        body = parsed_body(response)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiError(
                response.status_code,
                response.text,
                method="POST",
                url=redact(str(response.request.url)),
            )
        return token

    def jwt(self) -> str:
        return self.tokens.token() if self.tokens is not None else self.exchange()

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        response = self._send(
            method, path, json=json, params=params, authorization=f"Bearer {self.jwt()}"
        )
        if response.status_code == 401 and self.tokens is not None:
            # A cached JWT can be refused (server key rotated); one fresh exchange decides.
            self.tokens.forget()
            response = self._send(
                method, path, json=json, params=params, authorization=f"Bearer {self.jwt()}"
            )
        raise_for_status(response)
        return response

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return parsed_body(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None) -> Any:
        return _json_or_none(self.request("POST", path, json={} if body is None else body))

    def put(self, path: str, body: Any) -> Any:
        return _json_or_none(self.request("PUT", path, json=body))

    def patch(self, path: str, body: Any) -> Any:
        return _json_or_none(self.request("PATCH", path, json=body))

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def text(self, path: str, params: dict[str, Any] | None = None) -> str:
        return self.request("GET", path, params=params).text

    def _send(
        self,
        method: str,
        path: str,
        *,
        authorization: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        url = self.url(path)
        try:
            return self._http.request(
                method, url, json=json, params=params, headers={"Authorization": authorization}
            )
        except httpx.TransportError as exc:
            raise transport_error(exc, method, url) from None


def _json_or_none(response: httpx.Response) -> Any:
    return parsed_body(response) if response.content else None


def _error_of(response: httpx.Response) -> str:
    body = parsed_body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"status {response.status_code}"
