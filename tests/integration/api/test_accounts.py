"""Accounts over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import time

import httpx
import jwt
from tests.conftest import Api


def test_exchange_gives_a_signed_jwt_with_exp_that_authenticates(api: Api) -> None:
    basic = base64.b64encode(f":{api.token}".encode()).decode()
    response = httpx.post(
        f"{api.url}/v1/tokens/exchange", json={}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200
    token = response.json()["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] > time.time() + 3000
    me = httpx.get(f"{api.url}/v1/users/self?", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["user"]["username"] == "alice"
    assert "admin" not in me.json()["user"]["flags"]


def test_api_token_works_as_bearer_and_as_basic_password(api: Api) -> None:
    basic = base64.b64encode(f":{api.token}".encode()).decode()
    for header in (
        f"Bearer {api.token}",
        f"bearer {api.token}",
        f"Basic {basic}",
        f"BASIC {basic}",
    ):
        assert (
            httpx.get(f"{api.url}/v1/users/self", headers={"Authorization": header}).status_code
            == 200
        )


def test_bad_credentials_are_401_with_www_authenticate(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": "Digest x"},
    ):
        response = httpx.get(f"{api.url}/v1/apps", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]
        assert "WWW-Authenticate" in response.headers


def test_tampered_or_expired_jwt_is_refused(api: Api) -> None:
    forged = jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 60},
        "not-the-key-but-long-enough-for-hs256!",
        algorithm="HS256",
    )
    assert (
        httpx.get(
            f"{api.url}/v1/users/self", headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    with api.client() as client:
        user_id = client.get("/v1/users/self").json()["user"]["id"]
    expired = jwt.encode(
        {"sub": user_id, "tid": "t", "exp": int(time.time()) - 10},
        api.platform.jwt_key,
        algorithm="HS256",
    )
    response = httpx.get(f"{api.url}/v1/users/self", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]


def test_regions_are_never_empty_and_point_at_this_server(api: Api) -> None:
    with api.client() as client:
        regions = client.get("/v1/regions?").json()["regions"]
    assert len(regions) == 1
    assert regions[0]["api"] == api.url
    assert regions[0]["default"] is True


def test_tokens_can_be_listed_created_and_revoked(api: Api) -> None:
    with api.client() as client:
        created = client.post("/v1/tokens", json={"token": {"name": "ci"}})
        assert created.status_code == 201
        new = created.json()["token"]
        assert new["token"].startswith("tk-us-")
        listed = client.get("/v1/tokens").json()["tokens"]
        assert {t["name"] for t in listed} == {"default", "ci"}
        assert all("token" not in t for t in listed)
        assert (
            httpx.get(
                f"{api.url}/v1/apps", headers={"Authorization": f"Bearer {new['token']}"}
            ).status_code
            == 200
        )
        assert client.delete(f"/v1/tokens/{new['id']}").status_code == 204
        assert (
            httpx.get(
                f"{api.url}/v1/apps", headers={"Authorization": f"Bearer {new['token']}"}
            ).status_code
            == 401
        )


def test_tokens_are_stored_hashed(api: Api) -> None:
    from sqlalchemy import text

    with api.platform.engine.connect() as conn:
        stored = [row[0] for row in conn.execute(text("select token_hash from api_tokens"))]
    assert api.token not in stored
    assert all(len(value) == 64 for value in stored)


def test_jwt_secret_file_is_private(api: Api) -> None:
    mode = api.platform.settings.secret_file.stat().st_mode & 0o777
    assert mode == 0o600


def test_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    from dockyard.api.ratelimit import RateLimiter

    api.platform.rate_limiter = RateLimiter(60, burst=3)
    with api.client() as client:
        statuses = [client.get("/v1/apps").status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        limited = client.get("/v1/apps")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["code"] == "rate_limited"
