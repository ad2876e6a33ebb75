"""Validating real responses against the server's own ``/v1/openapi.json``."""

from __future__ import annotations

import re
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import httpx
from jsonschema import Draft202012Validator


@cache
def _document(server_url: str) -> dict[str, Any]:
    response = httpx.get(f"{server_url}/v1/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    assert document["openapi"].startswith("3.1")
    return document


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            operation: dict[str, Any] = item[method.lower()]
            return operation
    raise AssertionError(f"{method} {path} is not in /v1/openapi.json")


def check_response(server_url: str, method: str, url: str, response: httpx.Response) -> None:
    """Fail unless ``response`` has a status, media type and body the document allows."""
    document = _document(server_url)
    operation = _operation(document, method, urlsplit(url).path)
    described = operation["responses"].get(str(response.status_code))
    assert described is not None, (
        f"{method} {url} answered {response.status_code}, which the document does not list"
    )
    content = described.get("content")
    if content is None:
        assert not response.content, f"{method} {url}: a body where the document has none"
        return
    media = response.headers.get("content-type", "").split(";")[0]
    assert media in content, f"{method} {url}: {media} is not among {list(content)}"
    if media != "application/json":
        return
    schema = {**content[media]["schema"], "components": document["components"]}
    errors = sorted(
        Draft202012Validator(schema).iter_errors(response.json()), key=lambda e: list(e.path)
    )
    assert not errors, f"{method} {url}: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5]
    )
