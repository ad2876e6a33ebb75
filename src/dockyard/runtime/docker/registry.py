"""The image registry's HTTP API (Docker Registry v2), as dockyard uses it: manifests (for
the pushed layer's size and for deletion) and the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from dockyard.errors import DockyardError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class RegistryError(DockyardError):
    pass


@dataclass(frozen=True)
class RegistryAccess:
    """Where the registry is and how dockyard signs in (``DOCKYARD_REGISTRY*``)."""

    address: str  # host:port, as in image references
    username: str
    password: str
    scheme: str = "https"

    @classmethod
    def parse(cls, value: str, *, username: str, password: str) -> RegistryAccess:
        scheme = "https"
        if "://" in value:
            scheme, value = value.split("://", 1)
        address = value.strip("/")
        if not address or "/" in address or scheme not in ("http", "https"):
            raise DockyardError(
                f"DOCKYARD_REGISTRY must be host:port (optionally http:// or https://), got {value!r}"
            )
        return cls(address=address, username=username, password=password, scheme=scheme)

    @property
    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


class Registry:
    def __init__(self, access: RegistryAccess, *, timeout: float = 30.0) -> None:
        self.access = access
        self._http = httpx.Client(
            base_url=f"{access.scheme}://{access.address}",
            auth=(access.username, access.password),
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def catalog(self) -> list[str]:
        return list(self._get("/v2/_catalog").json().get("repositories") or [])

    def tags(self, repository: str) -> list[str]:
        response = self._http.get(f"/v2/{repository}/tags/list")
        if response.status_code == 404:
            return []
        _check(response, f"the tags of {repository}")
        return list(response.json().get("tags") or [])

    def manifest(self, repository: str, tag: str) -> tuple[str, dict[str, Any]]:
        """The manifest's digest and body."""
        response = self._get(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"},
        )
        return response.headers.get("Docker-Content-Digest", ""), response.json()

    def layer_sizes(self, repository: str, tag: str) -> list[int]:
        _, body = self.manifest(repository, tag)
        return [int(layer["size"]) for layer in body.get("layers", [])]

    def delete(self, repository: str, tag: str) -> bool:
        """Delete the image's manifest (its blobs go at the registry's next garbage
        collection); False if it was not there."""
        response = self._http.head(
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"},
        )
        if response.status_code == 404:
            return False
        _check(response, f"{repository}:{tag}")
        digest = response.headers.get("Docker-Content-Digest", "")
        deleted = self._http.delete(f"/v2/{repository}/manifests/{digest}")
        if deleted.status_code == 404:
            return False
        _check(deleted, f"the deletion of {repository}:{tag}")
        return True

    def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.get(path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"The registry at {self.access.address} does not answer: {exc}") from None
        _check(response, path)
        return response


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code == 401:
        raise RegistryError("The registry refused dockyard's credentials (DOCKYARD_REGISTRY_USER).")
    if response.status_code == 405:
        raise RegistryError(
            "The registry does not allow deletes: enable storage.delete in its configuration."
        )
    if response.status_code >= 400:
        raise RegistryError(f"The registry answered {response.status_code} for {what}.")
