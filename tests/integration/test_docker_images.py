"""Release images and the registry, for real (Docker engine, Debian's docker-registry):
what ``dockyard serve`` says when a part is missing, and what becomes of a removed image
once the registry collects its garbage."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from tests import dockerenv

from dockyard.errors import DockyardError
from dockyard.runtime.docker import stack
from dockyard.runtime.docker.engine import EngineUnavailable
from dockyard.runtime.docker.images import ReleaseImages
from dockyard.runtime.docker.wiring import docker_runtime
from dockyard.settings import Settings

pytestmark = pytest.mark.docker


def test_serve_says_what_to_run_when_the_stack_is_missing(
    docker_client: docker.DockerClient, test_registry: dockerenv.RunningRegistry
) -> None:
    unbuilt = dataclasses.replace(stack.MINIMAL, name="full", packages=("bash", "no-such-pkg"))
    assert not stack.present(docker_client, unbuilt)
    settings = Settings(runtime="docker", stack="full", registry="x:1")
    with pytest.raises(stack.StackMissing, match="dockyard admin build-stack"):
        stack.require(docker_client, unbuilt)
    with pytest.raises(EngineUnavailable, match="does not answer"):
        docker_runtime(dataclasses.replace(settings, docker_host="unix:///nonexistent.sock"))
    with pytest.raises(DockyardError, match="DOCKYARD_REGISTRY"):
        docker_runtime(dataclasses.replace(settings, stack="minimal", registry=""))


def test_serve_refuses_a_registry_that_refuses_its_credentials(
    test_stack: str, test_registry: dockerenv.RunningRegistry
) -> None:
    settings = Settings(
        runtime="docker",
        stack="minimal",
        registry=f"http://{test_registry.access.address}",
        registry_user=test_registry.access.username,
        registry_password="wrong",
    )
    with pytest.raises(DockyardError, match="refused dockyard's credentials"):
        docker_runtime(settings)


def test_a_removed_image_is_gone_from_the_registry_after_its_garbage_collection(
    docker_client: docker.DockerClient, test_stack: str, tmp_path: Path
) -> None:
    with dockerenv.registry(tmp_path / "gc") as running:
        registry = running.client()
        try:
            images = ReleaseImages(docker_client, registry, stack=test_stack)
            layers = {}
            for release in ("old", "new"):
                app_dir = tmp_path / release
                app_dir.mkdir()
                (app_dir / "app.py").write_text(f"print({release!r})\n")
                size = images.publish(
                    app="gc-app", release_id=release, release_dir=app_dir, process_types={}
                )
                _, manifest = registry.manifest("dockyard/gc-app", release)
                layers[release] = manifest["layers"][-1]["digest"].split(":", 1)[1]
                assert size == manifest["layers"][-1]["size"] > 0
            images.remove(app="gc-app", release_id="old")
            assert registry.tags("dockyard/gc-app") == ["new"]
        finally:
            registry.close()
        running.stop()  # the registry collects garbage offline
        running.garbage_collect()
    blobs = {
        path.name
        for path in (running.root / "docker/registry/v2/blobs").rglob("*")
        if path.is_dir()
    }
    assert layers["new"] in blobs
    assert layers["old"] not in blobs


def test_unchanged_dependencies_stay_one_layer_that_a_rebuild_does_not_build_again(
    docker_client: docker.DockerClient,
    test_stack: str,
    test_registry: dockerenv.RunningRegistry,
    tmp_path: Path,
) -> None:
    registry = test_registry.client()
    images = ReleaseImages(docker_client, registry, stack=test_stack)
    app_dir = tmp_path / "release"
    (app_dir / ".venv/lib").mkdir(parents=True)
    (app_dir / ".venv/lib/dependency.py").write_text("VERSION = 1\n" * 1000)
    layers = {}
    try:
        for release, code in (("one", "v1"), ("two", "v2")):
            (app_dir / "app.py").write_text(f"print({code!r})\n")
            size = images.publish(
                app="deps-app",
                release_id=release,
                release_dir=app_dir,
                process_types={},
                dependencies=[".venv"],
            )
            _, manifest = registry.manifest("dockyard/deps-app", release)
            layers[release] = [layer["digest"] for layer in manifest["layers"]]
            assert size == sum(layer["size"] for layer in manifest["layers"][1:])
        # The stack, the dependencies (the same layer), the app's own (a new one).
        assert len(layers["one"]) == len(layers["two"]) == 3
        assert layers["one"][:2] == layers["two"][:2]
        assert layers["one"][2] != layers["two"][2]
        (app_dir / ".venv/lib/dependency.py").write_text("VERSION = 2\n")
        images.publish(
            app="deps-app",
            release_id="three",
            release_dir=app_dir,
            process_types={},
            dependencies=[".venv"],
        )
        _, manifest = registry.manifest("dockyard/deps-app", "three")
        assert manifest["layers"][1]["digest"] != layers["two"][1]
        # One dependencies image per app is kept tagged in the engine.
        assert len(docker_client.images.list(name="dockyard-deps/deps-app")) == 1
        container = docker_client.containers.run(
            f"{registry.access.address}/dockyard/deps-app:three",
            [
                "python3",
                "-c",
                "import sys; sys.path.insert(0, '/app/.venv/lib'); import dependency;"
                " print(dependency.VERSION, open('/app/app.py').read())",
            ],
            remove=True,
        )
        assert container.decode().split() == ["2", "print('v2')"]
    finally:
        for release in ("one", "two", "three"):
            images.remove(app="deps-app", release_id=release)
        registry.close()


def test_build_stack_finds_an_unchanged_recipe_already_built(test_stack: str) -> None:
    env = {**os.environ, "DOCKYARD_STACK": "minimal"}
    done = subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "admin", "build-stack"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"The stack {test_stack} is already built." in done.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "admin", "build-stack"],
        env={**env, "DOCKYARD_STACK": "alpine"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 1
    assert "DOCKYARD_STACK must be one of full, minimal" in unknown.stderr
