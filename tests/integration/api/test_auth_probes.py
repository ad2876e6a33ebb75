"""Probes of authentication (issue 15, items 4 and 10), over real HTTP on SQLite and
PostgreSQL: a revoked API token's JWTs stop working, and the rate limiter cannot be
dodged or reset with made-up credentials."""

from __future__ import annotations

import base64
import json
import secrets
import time

import httpx
import jwt
from tests.conftest import Api
from websockets.sync.client import connect

from dockyard.api.ratelimit import RateLimiter


def _exchange(api: Api, api_token: str) -> str:
    basic = base64.b64encode(f":{api_token}".encode()).decode()
    response = httpx.post(
        f"{api.url}/v1/tokens/exchange", json={}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _status(api: Api, bearer: str) -> int:
    return httpx.get(
        f"{api.url}/v1/apps", headers={"Authorization": f"Bearer {bearer}"}
    ).status_code


def test_revoking_an_api_token_revokes_the_jwts_exchanged_from_it(api: Api) -> None:
    with api.client() as client:
        created = client.post("/v1/tokens", json={"token": {"name": "ci"}}).json()["token"]
    doomed_jwt = _exchange(api, created["token"])
    kept_jwt = _exchange(api, api.token)
    assert jwt.decode(doomed_jwt, options={"verify_signature": False})["tid"] == created["id"]
    assert _status(api, doomed_jwt) == 200  # used once: its user is now cached
    with api.client() as client:
        assert client.delete(f"/v1/tokens/{created['id']}").status_code == 204
    refused = httpx.get(f"{api.url}/v1/apps", headers={"Authorization": f"Bearer {doomed_jwt}"})
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]
    assert _status(api, kept_jwt) == 200  # the user's other tokens are untouched
    # The stream refuses it too.
    with api.client() as client:
        app = client.post("/v1/apps", json={"app": {"name": "jwt-app"}}).json()["app"]
    with connect(app["links"]["deployments_stream"], open_timeout=10) as socket:
        socket.send(json.dumps({"type": "auth", "data": {"token": doomed_jwt}}))
        try:
            socket.recv(timeout=10)
        except Exception as closed:  # the server closes with 4001
            assert "4001" in str(closed)
        else:
            raise AssertionError("the stream accepted a revoked token's JWT")


def test_a_jwt_without_its_token_is_refused(api: Api) -> None:
    """A JWT signed with the right key but naming no API token (as issued before)."""
    with api.client() as client:
        user_id = client.get("/v1/users/self").json()["user"]["id"]
    key = api.platform.jwt_key
    old_style = jwt.encode({"sub": user_id, "exp": int(time.time()) + 600}, key, algorithm="HS256")
    response = httpx.get(f"{api.url}/v1/apps", headers={"Authorization": f"Bearer {old_style}"})
    assert response.status_code == 401 and "exchange" in response.json()["error"]
    other = jwt.encode(
        {"sub": user_id, "tid": "not-a-token", "exp": int(time.time()) + 600},
        key,
        algorithm="HS256",
    )
    assert _status(api, other) == 401


def test_made_up_tokens_are_limited_per_address_and_reset_nobody(api: Api) -> None:
    # One request back every 10 s: nothing refills while the test runs.
    api.platform.rate_limiter = RateLimiter(6, burst=5, max_buckets=20)
    with api.client() as client:
        statuses = [client.get("/v1/apps").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]  # alice's bucket is empty
    # Random credentials from another address: limited there after the burst, without
    # a lookup of each; they fill no table that would reset alice's bucket.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=api.url, transport=transport) as stranger:
        answers = [
            stranger.get(
                "/v1/apps", headers={"Authorization": f"Bearer tk-us-{secrets.token_urlsafe(32)}"}
            )
            for _ in range(40)
        ]
    assert [a.status_code for a in answers[:5]] == [401] * 5
    assert {a.status_code for a in answers[5:]} == {429}
    assert "invalid credentials from your address" in answers[-1].json()["error"]
    with api.client() as client:
        assert client.get("/v1/apps").status_code == 429  # still limited, not reset
    # A valid token from the address that sent the random ones waits too, then passes.
    bob = api.new_user("bob")
    with httpx.Client(base_url=api.url, transport=transport) as same_address:
        limited = same_address.get("/v1/apps", headers={"Authorization": f"Bearer {bob}"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_the_limit_follows_the_user_not_the_credential(api: Api) -> None:
    """Before, each credential had its own bucket: an API token and its JWT doubled it."""
    api.platform.rate_limiter = RateLimiter(6, burst=4)
    as_jwt = _exchange(api, api.token)
    statuses = [_status(api, credential) for credential in [api.token, as_jwt] * 3]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
