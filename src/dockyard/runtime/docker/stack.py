"""The stack image: the Debian root file system that builds and apps run on.

No image can be pulled here (nor should a PaaS trust one it did not make), so dockyard
builds it from Debian packages with ``mmdebstrap`` and imports the tarball into the
engine. Its tag is the content hash of its recipe (suite, variant, packages): a changed
recipe gives a new tag and a rebuild; an unchanged one is found and reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from dockyard.errors import DockyardError

STACK_REPOSITORY = "dockyard/stack"
# What the host's apt reads; the stack is fetched from the same Debian mirror (and
# through the same proxy, since mmdebstrap runs the host's apt configuration).
HOST_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The host's CA bundle, mounted read-only where the package index is reached (builds).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class StackMissing(DockyardError):
    """The engine has no image for the stack recipe the settings ask for."""


@dataclass(frozen=True)
class StackRecipe:
    """What goes into the stack; its hash is the image's tag."""

    name: str
    suite: str
    variant: str
    packages: tuple[str, ...]

    @property
    def digest(self) -> str:
        canonical = json.dumps(
            {
                "suite": self.suite,
                "variant": self.variant,
                "packages": sorted(self.packages),
                # Bumped when the way the tarball is made changes (same recipe, new image).
                "format": 1,
            },
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def tag(self) -> str:
        return f"{STACK_REPOSITORY}:{self.name}-{self.digest}"


# What apps and buildpacks need: the languages dockyard builds, and the tools the
# buildpacks call (git for dependencies from git, curl and certificates for indexes).
FULL = StackRecipe(
    name="full",
    suite="bookworm",
    variant="minbase",
    packages=(
        "bash", "ca-certificates", "curl", "git", "python3", "python3-venv", "python3-pip",
        "nodejs", "npm", "build-essential", "zstd", "procps",
    ),
)
# Tests: the smallest root that runs the test apps (Python) and the launcher (bash).
MINIMAL = StackRecipe(
    name="minimal", suite="bookworm", variant="minbase", packages=("bash", "python3")
)
RECIPES = {recipe.name: recipe for recipe in (FULL, MINIMAL)}


def recipe_named(name: str) -> StackRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise DockyardError(
            f"Unknown stack {name!r}: DOCKYARD_STACK must be one of {', '.join(RECIPES)}."
        ) from None


def mirror_argument() -> str:
    """The host's Debian sources as mmdebstrap takes them (a sources file), else the
    default mirror. Only Debian's own: the host's third-party sources stay out."""
    for path in HOST_SOURCES:
        if path.is_file() and path.read_text().strip():
            return str(path)
    return DEFAULT_MIRROR


def build_tarball(recipe: StackRecipe, target: Path) -> Path:
    """The stack's root file system as a tarball at ``target`` (written atomically)."""
    if shutil.which("mmdebstrap") is None:
        raise DockyardError(
            "mmdebstrap is not installed: run scripts/setup.sh (or apt-get install mmdebstrap)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".stack-") as scratch:
        partial = Path(scratch) / "stack.tar"
        argv = [
            "mmdebstrap",
            "--quiet",
            f"--variant={recipe.variant}",
            f"--include={','.join(recipe.packages)}",
            # Documentation and locales are never read in a container: smaller image.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            recipe.suite,
            str(partial),
            mirror_argument(),
        ]
        # stdin closed: mmdebstrap reads mirrors from a stdin that is not a terminal.
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DockyardError(
                f"mmdebstrap failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            )
        partial.replace(target)
    return target


# The image's defaults; each container gets its own environment on top.
_IMAGE_CHANGES = [
    "ENV PATH=/app/bin:/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8",
    "WORKDIR /app",
]


def present(client: docker.DockerClient, recipe: StackRecipe) -> bool:
    try:
        client.images.get(recipe.tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def require(client: docker.DockerClient, recipe: StackRecipe) -> str:
    """The stack's tag; ``StackMissing`` saying what to run when the engine lacks it."""
    if not present(client, recipe):
        raise StackMissing(
            f"The stack image {recipe.tag} is missing from the container engine: run"
            " `dockyard admin build-stack` (once per recipe change; a few minutes)."
        )
    return recipe.tag


def import_tarball(client: docker.DockerClient, recipe: StackRecipe, tarball: Path) -> str:
    repository, tag = recipe.tag.split(":", 1)
    answer = client.api.import_image(
        src=str(tarball), repository=repository, tag=tag, changes=_IMAGE_CHANGES
    )
    # Tagged again by the id the engine answers: Podman's Docker-compatible import
    # ignores the tag it is given (it names the image ``:latest``).
    image_id = _imported_id(str(answer))
    if image_id:
        client.images.get(image_id).tag(repository, tag)
    if not present(client, recipe):
        raise DockyardError(f"The engine did not keep the imported stack {recipe.tag}.")
    return recipe.tag


def ensure(client: docker.DockerClient, recipe: StackRecipe, cache: Path) -> str:
    """The stack in the engine: already there, imported from ``cache/<hash>.tar``, or built
    into that cache first. Only a changed recipe (a new hash) builds again."""
    if present(client, recipe):
        return recipe.tag
    tarball = cache / f"{recipe.name}-{recipe.digest}.tar"
    if not tarball.is_file():
        build_tarball(recipe, tarball)
    return import_tarball(client, recipe, tarball)


def _imported_id(answer: str) -> str:
    for line in answer.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            for key in ("id", "status"):
                value = event.get(key, "") if isinstance(event, dict) else ""
                if isinstance(value, str) and value.startswith("sha256:"):
                    return value
    return ""
