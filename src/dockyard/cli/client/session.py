"""Wiring: the API client for the configured server, with its JWT cache in the config file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dockyard.cli.client import config
from dockyard.cli.client.http import ApiClient
from dockyard.cli.client.tokens import CachedJwt, TokenManager, fingerprint


def open_api(env: Mapping[str, str] | None = None) -> ApiClient:
    """The configured server (environment over file); raises NotLoggedIn when there is none."""
    env = os.environ if env is None else env
    path = config.config_path(env)
    data = config.load(path)
    creds = config.credentials(env, data)
    return client_for(creds, path=path, cached=CachedJwt.from_dict(data.get("jwt")))


def client_for(
    creds: config.Credentials, *, path: Path | None, cached: CachedJwt | None = None
) -> ApiClient:
    client = ApiClient(creds.api_url, creds.api_token)

    def remember(jwt: CachedJwt) -> None:
        # Only an existing file is updated: credentials given purely by the environment
        # (CI) must not make a configuration file appear.
        if path is not None and path.exists():
            data = config.load(path)
            data["jwt"] = jwt.as_dict()
            config.save(path, data)

    client.tokens = TokenManager(
        fingerprint=fingerprint(creds.api_url, creds.api_token),
        exchange=client.exchange,
        cached=cached,
        on_renew=remember,
    )
    return client
