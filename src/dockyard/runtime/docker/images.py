"""Release images: the stack, the app's dependencies, the built app; pushed to the registry.

The app's layer is ``/app`` (the release directory) with the release's metadata in labels
(process types). The directories its buildpacks keep from build to build (``keep``: a
virtualenv, node_modules) are a layer of their own below it, named by what they hold: a
rebuild whose dependencies did not change reuses that layer, already in the engine and in
the registry, and builds and pushes the app's layer alone. Config vars stay out of the
image: they are secrets the registry must not keep, and each container gets them in its
environment at start. The image's size, as the deployment reports it, is the compressed
size of its layers above the stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import docker
import docker.errors

from dockyard.errors import BootError, BuildError
from dockyard.runtime.base import ProcessSpec
from dockyard.runtime.docker.registry import Registry, RegistryError

REPOSITORY_PREFIX = "dockyard"
# Engine-local images of the stack plus an app's kept directories (never pushed by name).
DEPENDENCIES_REPOSITORY = "dockyard-deps"
LABEL_PROCESS_TYPES = "dockyard.process-types"


class ReleaseImages:
    """Publishes and removes the images of releases (``ReleaseArtifacts``)."""

    def __init__(self, client: docker.DockerClient, registry: Registry, *, stack: str) -> None:
        self._client = client
        self._registry = registry
        self.stack = stack
        self._stack_layer_count: int | None = None

    def repository(self, app: str) -> str:
        return f"{REPOSITORY_PREFIX}/{app}"

    def reference(self, app: str, release_id: str) -> str:
        return f"{self._registry.access.address}/{self.repository(app)}:{release_id}"

    def image_for(self, spec: ProcessSpec) -> str:
        """The image a process of ``spec`` runs, pulled from the registry if this engine
        does not have it (another machine built it, or it was pruned)."""
        reference = self.reference(spec.app, spec.release_id)
        try:
            self._client.images.get(reference)
        except docker.errors.ImageNotFound:
            try:
                self._client.images.pull(reference, auth_config=self._registry.access.auth_config)
            except docker.errors.APIError as exc:
                raise BootError(
                    f"The image {reference} is neither here nor pullable from the registry:"
                    f" {exc.explanation or exc}",
                    timed_out=False,
                ) from None
        return reference

    def publish(
        self,
        *,
        app: str,
        release_id: str,
        release_dir: Path,
        process_types: Mapping[str, str],
        dependencies: Sequence[str] = (),
    ) -> int:
        """Build the release's image, push it; the size in bytes of its layers above the
        stack, as pushed (compressed)."""
        reference = self.reference(app, release_id)
        labels = {
            "dockyard.app": app,
            "dockyard.release": release_id,
            LABEL_PROCESS_TYPES: json.dumps(dict(process_types), sort_keys=True),
        }
        kept = [path for path in dependencies if _plain_dir(release_dir, path)]
        base = self._dependencies_image(app, release_dir, kept) if kept else self.stack
        self._build(reference, release_dir, base, labels=labels, leave_out=kept)
        repository, tag = reference.rsplit(":", 1)
        try:
            for event in self._client.api.push(
                repository,
                tag=tag,
                auth_config=self._registry.access.auth_config,
                stream=True,
                decode=True,
            ):
                if "error" in event:
                    raise BuildError(f"The release image could not be pushed: {event['error']}")
            sizes = self._registry.layer_sizes(self.repository(app), release_id)
        except (docker.errors.APIError, RegistryError) as exc:
            raise BuildError(f"The release image could not be pushed: {exc}") from None
        return sum(sizes[self._stack_layers() :])

    def _dependencies_image(self, app: str, release_dir: Path, kept: Sequence[str]) -> str:
        """The stack plus a layer of the kept directories (a virtualenv, node_modules),
        named by what they hold: a warm rebuild, whose dependencies did not change, finds
        it made, and its layer is in the registry already (pushed with an earlier
        release), so only the app's own layer is built and pushed."""
        tag = f"{DEPENDENCIES_REPOSITORY}/{app}:{_tree_digest(release_dir, kept, self.stack)}"
        with contextlib.suppress(docker.errors.ImageNotFound):
            self._client.images.get(tag)
            return tag
        self._build(tag, release_dir, self.stack, labels={"dockyard.app": app}, only=kept)
        # One per app: an older one is untagged (its layer lives on in the releases that
        # use it, and goes with the last of them).
        for image in self._client.images.list(name=f"{DEPENDENCIES_REPOSITORY}/{app}"):
            for other in image.tags:
                if other != tag:
                    with contextlib.suppress(docker.errors.APIError):
                        self._client.images.remove(other)
        return tag

    def _build(
        self,
        tag: str,
        release_dir: Path,
        base: str,
        *,
        labels: Mapping[str, str],
        only: Sequence[str] = (),
        leave_out: Sequence[str] = (),
    ) -> None:
        with tempfile.TemporaryFile() as context:
            _write_context(context, release_dir, base, labels, only=only, leave_out=leave_out)
            context.seek(0)
            try:
                self._client.images.build(
                    fileobj=context,
                    custom_context=True,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    pull=False,
                    network_mode="none",
                )
            except docker.errors.BuildError as exc:
                raise BuildError(f"The release image could not be built: {exc.msg}") from None
            except docker.errors.APIError as exc:
                raise BuildError(
                    f"The release image could not be built: {exc.explanation or exc}"
                ) from None

    def _stack_layers(self) -> int:
        if self._stack_layer_count is None:
            image = self._client.images.get(self.stack)
            self._stack_layer_count = len(image.attrs.get("RootFS", {}).get("Layers") or [])
        return self._stack_layer_count

    def remove(self, *, app: str, release_id: str) -> None:
        """The release's image gone from the registry (its manifest; the blobs go at the
        registry's garbage collection) and from this engine."""
        self._registry.delete(self.repository(app), release_id)
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            self._client.images.remove(self.reference(app, release_id), noprune=False)


def _write_context(
    context: IO[bytes],
    release_dir: Path,
    base: str,
    labels: Mapping[str, str],
    *,
    only: Sequence[str] = (),
    leave_out: Sequence[str] = (),
) -> None:
    """A build context: a Dockerfile adding ``release_dir`` at /app on ``base``; with
    ``only``, just those paths of it, and without those of ``leave_out``."""
    label_lines = " ".join(f"{key}={json.dumps(value)}" for key, value in labels.items())
    dockerfile = f"FROM {base}\nCOPY app/ /app/\nLABEL {label_lines}\n".encode()
    left_out = {f"app/{path}" for path in leave_out}

    def keep_entry(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if info.name in left_out else info

    with tarfile.open(fileobj=context, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
        top = tarfile.TarInfo("app")
        top.type = tarfile.DIRTYPE
        top.mode = 0o755
        archive.addfile(top)
        entries = list(only) if only else sorted(os.listdir(release_dir))
        for entry in entries:
            archive.add(
                release_dir / entry, arcname=f"app/{entry}", recursive=True, filter=keep_entry
            )


def _plain_dir(release_dir: Path, path: str) -> bool:
    """``path`` names a directory of the release, through no symlink."""
    current = release_dir
    for part in path.split("/"):
        current = current / part
        if current.is_symlink() or not current.is_dir():
            return False
    return True


def _tree_digest(release_dir: Path, paths: Sequence[str], base: str) -> str:
    """What the directories hold, as a name: every entry's path, type and mode, owner, a
    link's target, and a file's size and modification time (not the contents: a rebuilt
    dependency is a new file, with a new time; a kept one is the same file, or a copy with
    its times)."""
    digest = hashlib.sha256(base.encode() + b"\0")
    for path in sorted(paths):
        top = release_dir / path
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(dirs + files):
                entry = os.path.join(root, name)
                st = os.lstat(entry)
                target = os.readlink(entry) if stat.S_ISLNK(st.st_mode) else ""
                # A directory's or a link's time says how it was made (restored from the
                # cache or built), not what it holds: its entries, its target say that.
                plain = stat.S_ISREG(st.st_mode)
                made = f"{st.st_size}:{st.st_mtime_ns}" if plain else ""
                line = (
                    f"{os.path.relpath(entry, release_dir)}\0{st.st_mode}:{st.st_uid}:"
                    f"{st.st_gid}:{made}\0{target}\0"
                )
                digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]
