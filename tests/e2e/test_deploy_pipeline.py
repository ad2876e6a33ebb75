"""Deployments end to end on a real server: real archives, real buildpacks in the
sandbox, real processes answering through the router — and every way a hostile or broken
archive must fail, each with a precise line in the log."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard.pipeline.package import SLUG_SUFFIX
from tests.conftest import SAMPLES, ServerProcess, free_port, server_process
from tests.e2e.deployer import (
    SLOW_COMPILE,
    Deployer,
    buildpack_archive,
    file_server,
    server_with_buildpack_host,
)
from tests.helpers import tar_gz_from_files, tar_gz_of, wait_for


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """An 'external' archive host on loopback, allowed by DOCKYARD_FETCH_ALLOW."""
    directory = tmp_path_factory.mktemp("external")
    with file_server(directory) as port:
        yield directory, port


@pytest.fixture(scope="module")
def deployer(
    tmp_path_factory: pytest.TempPathFactory, external: tuple[Path, int]
) -> Iterator[Deployer]:
    server: ServerProcess = server_process(
        tmp_path_factory.mktemp("server"),
        DOCKYARD_FETCH_ALLOW=f"127.0.0.1:{external[1]}",
        DOCKYARD_BOOT_TIMEOUT="15",
    )
    server.start()
    try:
        yield Deployer(server=server, token=server.create_user("dora"))
    finally:
        server.stop()
        server.remove_data()


def serve_file(external: tuple[Path, int], name: str, content: bytes) -> str:
    directory, port = external
    (directory / name).write_bytes(content)
    return f"http://127.0.0.1:{port}/{name}"


def slug_names(deployer: Deployer, app: str, deployment_id: str) -> list[str]:
    slug = deployer.server.data_dir / "blobs" / "slugs" / f"{deployment_id}{SLUG_SUFFIX}"
    tar = subprocess.run(["zstd", "-d", "-c", str(slug)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return archive.getnames()


# --- apps that must deploy ---------------------------------------------------------


@pytest.mark.slow
def test_python_app_with_a_real_dependency_answers_through_the_router(deployer: Deployer) -> None:
    deployer.create_app("python-sample")
    deployment_id = deployer.start("python-sample", archive=tar_gz_of(SAMPLES / "python-app"))
    status, output = deployer.wait("python-sample", deployment_id)
    assert status == "success", output
    assert "-----> Python app detected" in output or "python" in output.lower()
    response = deployer.get("python-sample")
    assert response.status_code == 200
    assert "six 1.16.0" in response.text
    names = slug_names(deployer, "python-sample", deployment_id)
    assert "app.py" in names and "Procfile" in names
    assert any(name.startswith(".venv/") and "six.py" in name for name in names)


def test_node_app_deploys_and_answers(deployer: Deployer) -> None:
    deployer.create_app("node-sample")
    status, output = deployer.deploy("node-sample", archive=tar_gz_of(SAMPLES / "node-app"))
    assert status == "success", output
    assert deployer.get("node-sample").status_code == 200


def test_static_site_is_served(deployer: Deployer) -> None:
    deployer.create_app("static-sample")
    status, output = deployer.deploy("static-sample", archive=tar_gz_of(SAMPLES / "static-site"))
    assert status == "success", output
    page = deployer.get("static-sample")
    assert page.status_code == 200
    assert (SAMPLES / "static-site" / "index.html").read_text() == page.text
    assert (
        deployer.get("static-sample", "/style.css").headers["content-type"].startswith("text/css")
    )
    assert deployer.get("static-sample", "/../../etc/passwd").status_code in (400, 404)


def test_procfile_only_app_from_an_external_url(
    deployer: Deployer, external: tuple[Path, int]
) -> None:
    deployer.create_app("procfile-sample")
    url = serve_file(external, "procfile-app.tar.gz", tar_gz_of(SAMPLES / "procfile-app"))
    status, output = deployer.deploy("procfile-sample", source_url=url)
    assert status == "success", output
    assert deployer.get("procfile-sample").status_code == 200


# --- archives and builds that must fail, each saying why ------------------------------


def gzip_bomb(uncompressed: int) -> bytes:
    """A tar.gz holding one file of zeros, built without holding it in memory."""
    header = tarfile.TarInfo("app/zeros")
    header.size = uncompressed
    raw_head = header.tobuf(format=tarfile.GNU_FORMAT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(raw_head)]
    block = bytes(1024 * 1024)
    for _ in range(uncompressed // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(1024)))  # end-of-archive blocks
    parts.append(compressor.flush())
    return b"".join(parts)


def hostile_tar(build: Callable[[tarfile.TarFile], object]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        build(archive)
    return buffer.getvalue()


def _traversal(archive: tarfile.TarFile) -> None:
    data = b"owned"
    info = tarfile.TarInfo("app/../../escaped-by-dockyard-test")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _symlink_escape(archive: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("app/etc-link")
    info.type = tarfile.SYMTYPE
    info.linkname = "../../../../etc"
    archive.addfile(info)


@pytest.mark.parametrize(
    ("case", "archive", "words"),
    [
        (
            "two-roots",
            tar_gz_from_files({"x": "1"}, root="one")[:0] or None,
            "exactly one top-level directory",
        ),
        ("traversal", hostile_tar(_traversal), ".."),
        ("symlink", hostile_tar(_symlink_escape), "points outside the application directory"),
        ("bomb", gzip_bomb(400 * 1024 * 1024), "300"),
    ],
)
def test_hostile_archives_end_as_build_error_saying_why(
    deployer: Deployer, case: str, archive: bytes | None, words: str
) -> None:
    if archive is None:  # two top-level directories
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for root in ("one", "two"):
                info = tarfile.TarInfo(f"{root}/file")
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
        archive = buffer.getvalue()
    app = f"hostile-{case}"
    deployer.create_app(app)
    status, output = deployer.deploy(app, archive=archive)
    assert status == "build-error"
    assert words.lower() in output.lower(), output
    data_dir = deployer.server.data_dir
    assert not list(data_dir.parent.rglob("escaped-by-dockyard-test"))
    # The build dir is gone too (deleted in the background, right after the status), its
    # root with it: what the archive left in the root keeps it out of the pool of roots.
    builds = data_dir / "builds"
    wait_for(
        lambda: [path.name for path in builds.iterdir()] in ([], [".roots"]),
        timeout=10,
        what="the build dir to be removed",
    )
    assert not any((builds / ".roots").glob("*/app"))


def test_not_gzip_from_an_external_url(deployer: Deployer, external: tuple[Path, int]) -> None:
    deployer.create_app("not-gzip-app")
    url = serve_file(external, "app.zip", b"PK\x03\x04 this is a zip file, not a tar.gz")
    status, output = deployer.deploy("not-gzip-app", source_url=url)
    assert status == "build-error"
    assert "gzip" in output.lower(), output


def test_ssrf_to_loopback_without_the_allow_list_is_refused(deployer: Deployer) -> None:
    deployer.create_app("ssrf-app")
    secret_port = free_port()
    status, output = deployer.deploy(
        "ssrf-app", source_url=f"http://127.0.0.1:{secret_port}/internal.tar.gz"
    )
    assert status == "build-error"
    assert "could not be downloaded" in output, output
    status, output = deployer.deploy(
        "ssrf-app", source_url="http://169.254.169.254/latest/meta-data.tar.gz"
    )
    assert status == "build-error"
    assert "could not be downloaded" in output


def test_no_buildpack_detected_lists_what_was_looked_for(deployer: Deployer) -> None:
    deployer.create_app("nothing-app")
    status, output = deployer.deploy(
        "nothing-app", archive=tar_gz_from_files({"README.md": "just words"})
    )
    assert status == "build-error"
    assert "No buildpack matched this app: dockyard did not recognise its language" in output
    for language in ("Python (requirements.txt", "Node.js (package.json)", "Go (go.mod"):
        assert language in output
    for marker in ("index.html", "Procfile", "BUILDPACK_URL", ".buildpacks"):
        assert marker in output


def test_a_buildpack_exiting_1_is_a_build_error_with_its_output(
    deployer: Deployer, external: tuple[Path, int]
) -> None:
    url = serve_file(
        external,
        "failing-bp.tar.gz",
        buildpack_archive("#!/bin/sh\necho 'compiling...'\necho 'missing libfoo' >&2\nexit 1\n"),
    )
    deployer.create_app("failing-bp-app")
    status, output = deployer.deploy(
        "failing-bp-app", archive=tar_gz_from_files({".buildpacks": url + "\n", "x.txt": "x"})
    )
    assert status == "build-error"
    assert "missing libfoo" in output
    assert "exit" in output.lower() and "1" in output


def test_a_build_cannot_read_platform_secrets(
    deployer: Deployer, external: tuple[Path, int]
) -> None:
    snoop = (
        "#!/bin/sh\n"
        "echo \"environ: $(tr '\\0' ' ' < /proc/1/environ)\"\n"
        f'echo "datadir: $(ls {deployer.server.data_dir} 2>&1)"\n'
        f"cat {deployer.server.data_dir}/secret.key >/dev/null 2>&1 && echo 'secret: READABLE' || echo 'secret: denied'\n"
        'echo "root: $(ls /root 2>&1)"\n'
    )
    url = serve_file(external, "snoop-bp.tar.gz", buildpack_archive(snoop))
    deployer.create_app("snoop-app")
    with deployer.client() as client:
        client.post(
            "/v1/apps/snoop-app/variables",
            json={"variable": {"name": "BUILDPACK_URL", "value": url}},
        )
    status, output = deployer.deploy("snoop-app", archive=tar_gz_from_files({"x.txt": "x"}))
    assert status == "success", output
    environ_line = next(line for line in output.splitlines() if "environ:" in line)
    assert (
        "DOCKYARD" not in environ_line
        and "PYENV" not in environ_line
        and "HOME=/root" not in environ_line
    )
    assert "No such file" in next(line for line in output.splitlines() if "datadir:" in line)
    assert "secret: denied" in output
    assert "No such file" in next(line for line in output.splitlines() if "root:" in line)


def test_a_build_that_runs_forever_is_stopped(tmp_path: Path) -> None:
    with server_with_buildpack_host(tmp_path, "erin", DOCKYARD_BUILD_TIMEOUT="3") as (
        deployer,
        buildpacks,
    ):
        deployer.create_app("forever-app")
        archive = buildpacks.app_using("forever", "#!/bin/sh\necho started\nsleep infinity\n")
        status, output = deployer.deploy("forever-app", archive=archive)
    assert status == "build-error"
    assert "3 seconds" in output, output


def test_killing_the_server_mid_build_leaves_nothing_stuck(tmp_path: Path) -> None:
    with server_with_buildpack_host(tmp_path, "frank") as (deployer, buildpacks):
        server = deployer.server
        deployer.create_app("killed-app")
        deployment_id = deployer.start(
            "killed-app", archive=buildpacks.app_using("slow", SLOW_COMPILE)
        )
        deployer.wait_for_output("killed-app", deployment_id, "started")
        server.stop(kill=True)
        server.start()
        status, output = deployer.wait("killed-app", deployment_id, timeout=10)
        assert status == "aborted"
        assert "restarted" in output
        assert not any((server.data_dir / "builds").iterdir())
        # A new deployment of the same app is accepted and runs.
        status, output = deployer.deploy("killed-app", archive=tar_gz_of(SAMPLES / "procfile-app"))
        assert status == "success", output
        assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_stray_sleep(p)]


def _is_stray_sleep(cmdline: Path) -> bool:
    try:
        return cmdline.read_bytes().split(b"\0")[:2] == [b"sleep", b"600"]
    except OSError:
        return False


def test_buildpack_url_can_be_a_git_repository(
    deployer: Deployer, external: tuple[Path, int], tmp_path: Path
) -> None:
    source = tmp_path / "bp-src"
    (source / "bin").mkdir(parents=True)
    scripts = {
        "detect": "#!/bin/sh\necho GitPack\n",
        "compile": "#!/bin/sh\necho 'compiled by the git buildpack'\necho ok > \"$1/marker.txt\"\n",
        "release": "#!/bin/sh\necho '---'\necho 'default_process_types:'\necho '  web: python3 -m http.server $PORT'\n",
    }
    for name, body in scripts.items():
        (source / "bin" / name).write_text(body)
        (source / "bin" / name).chmod(0o755)
    git = [
        "git",
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "-c",
        "init.defaultBranch=main",
    ]
    subprocess.run([*git, "init", "-q", str(source)], check=True)
    subprocess.run([*git, "-C", str(source), "add", "."], check=True)
    subprocess.run([*git, "-C", str(source), "commit", "-q", "-m", "buildpack"], check=True)
    bare = external[0] / "git-bp.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)

    deployer.create_app("git-bp-app")
    with deployer.client() as client:
        url = f"http://127.0.0.1:{external[1]}/git-bp.git"
        client.post(
            "/v1/apps/git-bp-app/variables",
            json={"variable": {"name": "BUILDPACK_URL", "value": url}},
        )
    status, output = deployer.deploy("git-bp-app", archive=tar_gz_from_files({"x.txt": "x"}))
    assert status == "success", output
    assert "compiled by the git buildpack" in output
    assert deployer.get("git-bp-app", "/marker.txt").text == "ok\n"
