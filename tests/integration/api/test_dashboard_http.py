"""The dashboard's pages and forms over real HTTP, on SQLite and PostgreSQL: sessions,
CSRF, the security headers, errors in words and the same authorization as the API.
(tests/e2e/test_dashboard.py drives the same pages in a browser.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from tests.conftest import Api

from dockyard.db.models import WebSession
from dockyard.errors import Unauthenticated
from dockyard.services import web_sessions


@contextmanager
def browser(api: Api) -> Iterator[httpx.Client]:
    """A cookie-keeping client that does not follow redirects (so tests see them)."""
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as client:
        yield client


def sign_in(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/signin")
    signin_token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
    assert signin_token, form.text
    return client.post("/signin", data={"signin_token": signin_token[1], "api_token": token})


def csrf_of(client: httpx.Client, path: str = "/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found[1]


def alert_of(page: httpx.Response) -> str:
    found = re.search(r'role="alert">(.*?)</(?:div|p)>', page.text, re.S)
    assert found, page.text
    return re.sub(r"<[^>]+>", "", found[1]).replace("&#39;", "'").strip()


def test_pages_ask_for_a_session_and_carry_a_strict_policy(api: Api) -> None:
    with browser(api) as client:
        home = client.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/signin"
        assert client.get("/apps/anything").headers["location"] == "/signin"
        page = client.get("/signin")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text  # no inline script anywhere: the policy forbids it
        # The API keeps answering JSON at /v1, next to the dashboard.
        assert client.get("/v1/apps").json()["error"].startswith("Authentication required")


def test_sign_in_sets_a_strict_http_only_session_and_sign_out_ends_it(api: Api) -> None:
    with browser(api) as client:
        signed = sign_in(client, api.token)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = next(
            header
            for header in signed.headers.get_list("set-cookie")
            if header.startswith("dockyard_session=")
        )
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert api.token not in cookie  # the API token never goes back to the browser
        assert "Signed in as <strong>alice</strong>" in client.get("/").text
        session = client.cookies["dockyard_session"]
        csrf = csrf_of(client)
        assert client.post("/signout", data={"csrf": csrf}).headers["location"] == "/signin"
    # The session is gone on the server: its cookie, replayed, signs nobody in.
    with browser(api) as replay:
        replay.cookies.set("dockyard_session", session)
        assert replay.get("/").headers["location"] == "/signin"


def test_a_bad_token_or_a_forged_sign_in_is_refused_in_words(api: Api) -> None:
    with browser(api) as client:
        refused = sign_in(client, "tk-us-not-a-token")
        assert refused.status_code == 401
        assert "The API token is not valid" in alert_of(refused)
        assert "dockyard_session" not in client.cookies
    with browser(api) as forger:
        # A sign-in posted from elsewhere has no matching sign-in cookie.
        forged = forger.post("/signin", data={"signin_token": "x", "api_token": api.token})
        assert forged.status_code == 403
        assert "reload the page" in alert_of(forged)
        assert "dockyard_session" not in forger.cookies


def test_forms_without_the_session_csrf_token_change_nothing(api: Api) -> None:
    with browser(api) as client, api.client() as rest:
        sign_in(client, api.token)
        for csrf in ("", "0" * 64):
            refused = client.post("/apps", data={"csrf": csrf, "name": "forged-app"})
            assert refused.status_code == 403
            assert "security token" in alert_of(refused)
        assert rest.get("/v1/apps").json()["apps"] == []
        # Another session's token does not fit this one.
        with browser(api) as other:
            sign_in(other, api.token)
            foreign = csrf_of(other)
        assert client.post("/apps", data={"csrf": foreign, "name": "x-app"}).status_code == 403
        created = client.post("/apps", data={"csrf": csrf_of(client), "name": "real-app"})
        assert created.headers["location"] == "/apps/real-app?done=created"
        assert [a["name"] for a in rest.get("/v1/apps").json()["apps"]] == ["real-app"]


def test_the_page_token_is_a_short_lived_jwt_the_api_accepts(api: Api) -> None:
    with browser(api) as client:
        sign_in(client, api.token)
        assert client.post("/session/token").status_code == 403  # no CSRF header
        answer = client.post("/session/token", headers={"X-CSRF-Token": csrf_of(client)})
        token = answer.json()["token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 300
        me = httpx.get(f"{api.url}/v1/users/self", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["user"]["username"] == "alice"
    with browser(api) as stranger:
        assert stranger.post("/session/token", headers={"X-CSRF-Token": "x"}).status_code == 401


def test_variables_are_added_edited_and_removed_through_the_apps_service(api: Api) -> None:
    with browser(api) as client, api.client() as rest:
        rest.post("/v1/apps", json={"app": {"name": "vars-app"}})
        sign_in(client, api.token)
        csrf = csrf_of(client)
        path = "/apps/vars-app/variables"
        saved = client.post(path, data={"csrf": csrf, "name": "COLOUR", "value": "blue"})
        assert saved.headers["location"] == "/apps/vars-app?done=variable-saved"
        client.post(path, data={"csrf": csrf, "name": "COLOUR", "value": "green"})
        variables = rest.get("/v1/apps/vars-app/variables").json()["variables"]
        assert [(v["name"], v["value"]) for v in variables] == [("COLOUR", "green")]
        page = client.get("/apps/vars-app?done=variable-saved").text
        assert "The variable is saved" in page
        # Hidden until revealed: the value sits in a closed <details>.
        assert re.search(r"<details>\s*<summary>Reveal and edit</summary>", page)
        bad = client.post(path, data={"csrf": csrf, "name": "1BAD", "value": "x"})
        assert bad.status_code == 422
        assert "a POSIX environment variable name" in alert_of(bad)
        removed = client.post(
            f"{path}/remove", data={"csrf": csrf, "variable_id": variables[0]["id"]}
        )
        assert removed.headers["location"] == "/apps/vars-app?done=variable-removed"
        assert rest.get("/v1/apps/vars-app/variables").json()["variables"] == []


def test_refusals_are_shown_in_words_with_the_apis_status(api: Api) -> None:
    with browser(api) as client, api.client() as rest:
        rest.post("/v1/apps", json={"app": {"name": "words-app"}})
        sign_in(client, api.token)
        csrf = csrf_of(client)
        taken = client.post("/apps", data={"csrf": csrf, "name": "words-app"})
        assert (
            taken.status_code == 422
            and alert_of(taken) == "That did not work: name is already taken"
        )
        scale = client.post(
            "/apps/words-app/scale", data={"csrf": csrf, "type": "web", "amount": "2"}
        )
        assert scale.status_code == 422
        assert "web is not a process type of this app" in alert_of(scale)
        restart = client.post("/apps/words-app/restart", data={"csrf": csrf})
        assert restart.status_code == 409
        assert "This server runs no apps" in alert_of(restart)
        reset = client.post("/apps/words-app/cache/reset", data={"csrf": csrf})
        assert reset.headers["location"] == "/apps/words-app?done=cache-reset"


def test_someone_elses_app_is_not_found_for_pages_and_forms(api: Api) -> None:
    with api.client() as rest:
        rest.post("/v1/apps", json={"app": {"name": "alices-app"}})
        rest.post("/v1/apps/alices-app/variables", json={"variable": {"name": "K", "value": "v"}})
    bob_token = api.new_user("bob")
    with browser(api) as bob:
        sign_in(bob, bob_token)
        assert "alices-app" not in bob.get("/").text
        page = bob.get("/apps/alices-app")
        assert page.status_code == 404
        assert "No app of that name is yours" in alert_of(page)
        csrf = csrf_of(bob)
        for action, data in (
            ("variables", {"name": "K", "value": "bob"}),
            ("scale", {"type": "web", "amount": "1"}),
            ("cache/reset", {}),
        ):
            refused = bob.post(f"/apps/alices-app/{action}", data={"csrf": csrf, **data})
            assert refused.status_code == 404, action
    with api.client() as rest:
        variables = rest.get("/v1/apps/alices-app/variables").json()["variables"]
        assert [(v["name"], v["value"]) for v in variables] == [("K", "v")]


def test_an_expired_session_signs_nobody_in_and_is_swept_at_the_next_sign_in(api: Api) -> None:
    db = api.platform.db
    expired = web_sessions.sign_in(db=db, api_token=api.token, ttl=timedelta(seconds=-1))
    with pytest.raises(Unauthenticated, match="sign in again"):
        web_sessions.user_for_session(db=db, secret=expired.secret)
    with browser(api) as client:
        client.cookies.set("dockyard_session", expired.secret)
        assert client.get("/").headers["location"] == "/signin"
    live = web_sessions.sign_in(db=db, api_token=api.token, ttl=timedelta(hours=1))
    assert web_sessions.user_for_session(db=db, secret=live.secret).user.username == "alice"
    assert web_sessions.active_sessions(db=db, user=live.user) == 1
    with db() as session:  # the expired one is gone from the table, not only ignored
        assert session.scalar(select(func.count()).select_from(WebSession)) == 1
    with pytest.raises(Unauthenticated):
        web_sessions.sign_in(db=db, api_token="tk-us-revoked", ttl=timedelta(hours=1))


def test_revoking_the_api_token_ends_the_dashboard_sessions_opened_with_it(api: Api) -> None:
    db = api.platform.db
    with api.client() as client:
        created = client.post("/v1/tokens", json={"token": {"name": "laptop"}}).json()["token"]
        live = web_sessions.sign_in(db=db, api_token=created["token"], ttl=timedelta(hours=1))
        assert web_sessions.user_for_session(db=db, secret=live.secret).user.username == "alice"
        assert client.delete(f"/v1/tokens/{created['id']}").status_code == 204
    with pytest.raises(Unauthenticated, match="sign in again"):
        web_sessions.user_for_session(db=db, secret=live.secret)
