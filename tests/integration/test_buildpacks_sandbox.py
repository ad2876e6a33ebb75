"""Real builds in the real bubblewrap sandbox: samples, failures, limits and leaks."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tests.helpers import processes_of, wait_for

from dockyard import sandbox
from dockyard.errors import BuildError
from dockyard.pipeline import keep
from dockyard.pipeline.buildpacks import BuildContext, BuildResult, run_buildpacks

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# Each test gets its own sandbox uid, so process counts and leftovers are its own.
_uids = itertools.count(210_000 + (os.getpid() % 1000) * 50)


@pytest.fixture
def work() -> Iterator[Path]:
    # pytest's tmp_path is 0700 root: the sandbox uid could not reach it.
    path = Path(tempfile.mkdtemp(prefix="dockyard-bp-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_buildpack(
    target: Path, *, detect: str = "echo Custom", compile: str, release: str = ""
) -> None:
    (target / "bin").mkdir(parents=True)
    scripts = {"detect": detect, "compile": compile, "release": release or "echo ---"}
    for name, body in scripts.items():
        path = target / "bin" / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body).strip() + "\n")
        path.chmod(0o755)


class Build:
    def __init__(self, work: Path, uid: int) -> None:
        self.work = work
        self.uid = uid
        self.lines: list[str] = []
        self.times: list[float] = []
        # The layout dockyard's runner uses: the app in the sandboxes' root directory.
        self.root = work / "root"
        self.app = self.root / "app"
        self.cache = work / "cache"
        self.buildpacks: dict[str, dict[str, str]] = {}

    def app_from(self, sample: str | None = None, files: Mapping[str, str] | None = None) -> None:
        if self.app.exists():
            shutil.rmtree(self.app)
        if sample:
            shutil.copytree(SAMPLES / sample, self.app)
        else:
            self.app.mkdir(parents=True)
        for name, text in (files or {}).items():
            (self.app / name).parent.mkdir(parents=True, exist_ok=True)
            (self.app / name).write_text(text)

    def fetch(self, url: str, target: Path) -> None:
        write_buildpack(target, **self.buildpacks[url])

    def run(
        self,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        limits: sandbox.Limits | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> BuildResult:
        scratch = self.work / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        ctx = BuildContext(
            app_dir=self.app,
            cache_dir=self.cache,
            scratch_dir=scratch,
            env=dict(env or {}),
            host_uid=self.uid,
            limits=limits or sandbox.Limits(),
            timeout=timeout,
            sandbox_root=self.root,
        )

        def log(line: str) -> None:
            self.lines.append(line)
            self.times.append(time.monotonic())

        result = run_buildpacks(ctx, log=log, fetch_buildpack=self.fetch, cancelled=cancelled)
        keep.apply_requests(self.cache, self.app, owner=self.uid, log=log)  # as the runner does
        return result

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def build(work: Path) -> Iterator[Build]:
    b = Build(work, next(_uids))
    yield b
    # The sandbox's pid namespace is torn down as the build ends; on a loaded machine its
    # last bwrap can still be exiting (state R) a moment later. What outlives a build for
    # real (a background process) never goes: that is what this catches.
    leftovers: list[str] = []

    def none_left() -> bool:
        leftovers[:] = processes_of(b.uid)
        return not leftovers

    with contextlib.suppress(AssertionError):
        wait_for(none_left, timeout=10, interval=0.05, what="the build's processes to end")
    assert leftovers == [], "a process of the build outlived it"


# -- the samples ------------------------------------------------------------------------


@pytest.mark.slow
def test_python_sample_builds_with_its_dependency(build: Build) -> None:
    build.app_from("python-app")
    result = build.run()
    assert result.buildpacks == ["python"]
    assert result.process_types == {"web": "python app.py"}
    assert result.config_vars["PATH"].startswith("/app/.venv/bin:")
    assert "-----> Python app detected" in build.lines
    site = build.app / ".venv/lib/python3.11/site-packages"
    assert (site / "six.py").is_file()
    assert (build.app / ".venv/bin/python").exists()
    assert "/app/.venv/bin" in (build.app / ".profile.d/python.sh").read_text()
    assert any((build.cache / "uv").iterdir()), "the uv cache should be kept in the build cache"


def test_python_with_empty_requirements_is_near_instant(build: Build) -> None:
    build.app_from(
        files={
            "requirements.txt": "# nothing\n",
            "app.py": "print('hi')\n",
            "Procfile": "web: python app.py\n",
        }
    )
    started = time.monotonic()
    result = build.run()
    elapsed = time.monotonic() - started
    print(f"empty requirements.txt build: {elapsed:.2f}s")
    assert result.process_types == {"web": "python app.py"}
    assert (build.app / ".venv/bin/python").exists()
    assert not (build.app / ".venv/bin/pip").exists(), "pip costs seconds to bootstrap"
    assert elapsed < 3.0  # about 0.2 s here; generous for a noisy machine
    # The next build links the same (empty) venv back from the cache.
    build.app_from(files={"requirements.txt": "# nothing\n", "app.py": "print('hi, again')\n"})
    build.run()
    assert any("Reused the environment built last time" in line for line in build.lines)
    assert (build.app / ".venv/bin/python").exists()


def test_node_sample_builds(build: Build) -> None:
    build.app_from("node-app")
    result = build.run()
    assert result.buildpacks == ["nodejs"]
    assert result.process_types == {"web": "npm start"}
    assert result.config_vars["NODE_ENV"] == "production"
    assert any("Using Node.js v20" in line for line in build.lines)


def test_static_sample_builds_and_ships_its_server(build: Build) -> None:
    build.app_from("static-site")
    result = build.run()
    assert result.buildpacks == ["static"]
    assert result.process_types == {"web": "python3 /app/.dockyard/static_server.py /app"}
    assert (build.app / ".dockyard/static_server.py").is_file()


def test_procfile_sample_builds(build: Build) -> None:
    build.app_from("procfile-app")
    result = build.run()
    assert result.buildpacks == ["procfile"]
    assert result.process_types == {"web": "python3 -m http.server $PORT"}


# -- what a user gets when it goes wrong --------------------------------------------------


def test_no_buildpack_matches(build: Build) -> None:
    build.app_from(files={"README": "hello\n"})
    with pytest.raises(BuildError) as caught:
        build.run()
    message = caught.value.message
    assert message.startswith("No buildpack matched this app")
    for marker in ("requirements.txt", "package.json", "index.html", "Procfile"):
        assert marker in message


def test_failing_compile_names_step_status_and_output(build: Build) -> None:
    build.buildpacks["https://example.test/bp.tgz"] = {
        "compile": "echo 'compiling...'; echo 'error: no such thing' >&2; exit 3"
    }
    build.app_from(files={"x": "1"})
    with pytest.raises(BuildError) as caught:
        build.run(env={"BUILDPACK_URL": "https://example.test/bp.tgz"})
    message = caught.value.message
    assert "https://example.test/bp.tgz buildpack failed to compile" in message
    assert "exit status 3" in message
    assert "error: no such thing" in message
    assert "What to try" in message
    assert "error: no such thing" in build.lines


def test_unsupported_python_version_names_the_stacks(build: Build) -> None:
    build.app_from(files={"requirements.txt": "", ".python-version": "3.12\n"})
    with pytest.raises(BuildError) as caught:
        build.run()
    assert "Python 3.12 (.python-version) is not available" in caught.value.message
    assert "This stack has Python 3.11" in caught.value.message


def test_runtime_txt_is_honoured(build: Build) -> None:
    build.app_from(files={"requirements.txt": "", "runtime.txt": "python-3.11.4\n"})
    build.run()
    assert "-----> Using Python 3.11 (from runtime.txt)" in build.lines


def test_engines_node_mismatch_names_the_available_version(build: Build) -> None:
    build.app_from(files={"package.json": '{"engines": {"node": "^18.2"}}'})
    with pytest.raises(BuildError) as caught:
        build.run()
    assert "asks for Node.js ^18.2, but this stack has Node.js v20" in caught.value.message


# -- containment --------------------------------------------------------------------------


FORK_BOMBS = {
    # The classic, kept in the foreground so that it occupies the build.
    "sh": "bomb() { bomb | bomb & bomb; }; bomb",
    # One that shrugs off failed forks and so runs until the build's timeout.
    "python": "python3 -c 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass'",
}


@pytest.mark.parametrize("bomb", FORK_BOMBS.values(), ids=FORK_BOMBS.keys())
def test_fork_bomb_ends_as_a_build_error_and_the_host_is_fine(build: Build, bomb: str) -> None:
    build.buildpacks["bomb"] = {"compile": bomb}
    build.app_from(files={"x": "1"})
    started = time.monotonic()
    with pytest.raises(BuildError) as caught:
        build.run(env={"BUILDPACK_URL": "bomb"}, timeout=4, limits=sandbox.Limits(max_processes=64))
    print(
        f"fork bomb: {caught.value.message.splitlines()[0]} after {time.monotonic() - started:.1f}s"
    )
    assert time.monotonic() - started < 30
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork


def test_a_build_that_never_ends_is_killed_at_the_timeout(build: Build) -> None:
    build.buildpacks["slow"] = {"compile": "echo starting; sleep infinity"}
    build.app_from(files={"x": "1"})
    started = time.monotonic()
    with pytest.raises(BuildError) as caught:
        build.run(env={"BUILDPACK_URL": "slow"}, timeout=2)
    assert "exceeded 2 seconds" in caught.value.message
    assert time.monotonic() - started < 6


def test_background_processes_do_not_survive_a_successful_build(build: Build) -> None:
    build.buildpacks["leaky"] = {
        "compile": """
            sleep infinity &
            setsid nohup sleep 1000 >/dev/null 2>&1 &
            (setsid sh -c 'sleep 999' &)
            echo left three behind
        """
    }
    build.app_from(files={"x": "1"})
    started = time.monotonic()
    build.run(env={"BUILDPACK_URL": "leaky"})
    assert time.monotonic() - started < 5
    assert "left three behind" in build.lines
    # the fixture asserts that no process of the build's uid is left


def test_cancel_kills_the_build(build: Build) -> None:
    build.buildpacks["slow"] = {"compile": "sleep 60"}
    build.app_from(files={"x": "1"})
    deadline = time.monotonic() + 1
    with pytest.raises(BuildError, match=r"^The build was cancelled\.$"):
        build.run(env={"BUILDPACK_URL": "slow"}, cancelled=lambda: time.monotonic() > deadline)
    assert time.monotonic() - deadline < 2


def test_output_is_streamed_while_the_step_runs(build: Build) -> None:
    build.buildpacks["chatty"] = {"compile": "echo first; sleep 1.5; echo second"}
    build.app_from(files={"x": "1"})
    build.run(env={"BUILDPACK_URL": "chatty"})
    first, second = build.lines.index("first"), build.lines.index("second")
    assert build.times[second] - build.times[first] > 1.0


def test_a_build_sees_its_app_config_but_no_platform_secret(
    build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_TEST_PLATFORM_SECRET", "platform-s3cr3t")
    build.buildpacks["nosy"] = {
        "compile": """
            echo "env: $(env | sort | tr '\\n' ' ')"
            echo "pid1: $(tr '\\0' ' ' < /proc/1/environ)"
            echo "envdir: $(cat /env/APP_SETTING)"
            for path in /work /root /work/main/pyproject.toml /var/lib; do
              ls "$path" >/dev/null 2>&1 && echo "READABLE $path"
            done
            echo "uid: $(id -u)"
            touch /usr/x 2>/dev/null && echo "WROTE /usr"
            echo done
        """
    }
    build.app_from(files={"x": "1"})
    build.run(env={"BUILDPACK_URL": "nosy", "APP_SETTING": "app-value"})
    out = build.output
    assert "platform-s3cr3t" not in out
    assert "DOCKYARD_TEST_PLATFORM_SECRET" not in out
    assert "APP_SETTING=app-value" in out
    assert "envdir: app-value" in out
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in out
    assert "READABLE /work" not in out and "READABLE /root" not in out
    assert "WROTE" not in out
    assert "uid: 0" not in out
    assert "done" in build.lines


def test_buildpacks_file_runs_each_in_order_and_procfile_wins(build: Build) -> None:
    build.buildpacks["one"] = {
        "compile": "echo one >> $1/order",
        "release": "printf -- '---\\ndefault_process_types:\\n  web: one\\n  worker: one\\n'",
    }
    build.buildpacks["two"] = {
        "compile": "echo two >> $1/order",
        "release": "echo 'config_vars: {A: b}'; echo 'default_process_types: {worker: two}'",
    }
    build.app_from(
        files={".buildpacks": "one\n\n# comment\ntwo\n", "Procfile": "web: from-procfile\n"}
    )
    result = build.run()
    assert (build.app / "order").read_text() == "one\ntwo\n"
    assert result.buildpacks == ["one", "two"]
    assert result.process_types == {"web": "from-procfile", "worker": "two"}
    assert result.config_vars == {"A": "b"}


@pytest.mark.slow
def test_second_python_build_reuses_the_cache(build: Build) -> None:
    files = {"requirements.txt": "flask==3.1.0\ngunicorn==23.0.0\n", "app.py": "import flask\n"}
    timings = []
    for _ in range(2):
        build.app_from(files=files)
        started = time.monotonic()
        build.run()
        timings.append(time.monotonic() - started)
    cold, warm = timings
    print(f"flask+gunicorn: cold {cold:.2f}s, warm {warm:.2f}s ({warm / cold:.2f} of cold)")
    assert (build.app / ".venv/bin/gunicorn").exists()
    assert any("Reused the environment built last time" in line for line in build.lines)
    assert warm < cold
    # Moved back from the cache and kept there again: the same files, not copies, and
    # read-only to every build.
    (cached,) = (build.cache / "python").glob("venv-*")
    module = Path("lib/python3.11/site-packages/flask/app.py")
    in_app = (build.app / ".venv" / module).stat()
    assert in_app.st_ino == (cached / module).stat().st_ino
    assert in_app.st_uid == 0 and not in_app.st_mode & 0o222


def test_the_next_build_cannot_change_a_kept_venv_that_a_release_uses(build: Build) -> None:
    build.app_from(files={"requirements.txt": ""})
    build.run()
    release = build.work / "release"
    build.app.rename(release)  # the first build's app, now serving
    config = release / ".venv" / "pyvenv.cfg"
    before = config.read_bytes()
    (kept,) = (build.cache / "python").glob("venv-*")
    cached = f"/cache/python/{kept.name}/pyvenv.cfg"
    build.buildpacks["vandal"] = {
        "compile": """
            for f in "$2"/python/venv-*/pyvenv.cfg; do
              [ -f "$f" ] && echo "found the kept venv"
              echo tampered >> "$f" 2>/dev/null && echo "wrote to it"
              chmod u+w "$f" 2>/dev/null && echo "made it writable"
              ln "$f" "$1/linked" 2>/dev/null && echo "linked it"
              mv "$(dirname "$f")" "$1/.venv" && echo "moved it"
            done
        """
    }
    build.app_from(files={"x": "1"})
    build.run(env={"BUILDPACK_URL": "vandal"})
    assert build.lines[-3:] == [
        "found the kept venv",
        # Only the shell's own complaint: nothing of the file changed.
        f"/buildpack/bin/compile: 4: cannot create {cached}: Permission denied",
        "moved it",
    ]
    assert config.read_bytes() == before


def test_compile_can_hard_link_from_the_cache_into_the_app(build: Build) -> None:
    build.cache.mkdir()
    (build.cache / "big.bin").write_bytes(b"x" * 4096)
    sandbox.prepare_writable_dir(build.cache, build.uid)
    build.buildpacks["linker"] = {"compile": 'ln "$2/big.bin" "$1/big.bin" && echo linked'}
    build.app_from(files={"x": "1"})
    build.run(env={"BUILDPACK_URL": "linker"})
    assert "linked" in build.lines
    assert (build.app / "big.bin").stat().st_ino == (build.cache / "big.bin").stat().st_ino


def test_a_build_cannot_write_to_its_root_and_the_cache_comes_back_on_failure(
    build: Build,
) -> None:
    build.buildpacks["vandal"] = {
        "compile": """
            touch /planted 2>/dev/null && echo "wrote to /"
            mkdir /usr/x 2>/dev/null && echo "wrote to /usr"
            touch "$2/from-compile"
            exit 3
        """
    }
    build.app_from(files={"x": "1"})
    with pytest.raises(BuildError):
        build.run(env={"BUILDPACK_URL": "vandal"})
    assert "wrote to /" not in build.output
    assert "wrote to /usr" not in build.output
    assert not (build.root / "planted").exists()
    # The cache is where the caller keeps it again (to be discarded: the build failed).
    assert (build.cache / "from-compile").exists()
    assert not (build.root / "cache").exists()


DJANGO_SETTINGS = """
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.staticfiles"]
ROOT_URLCONF = "site_app.urls"
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "assets"]
"""

DJANGO_MANAGE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_app.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""


DJANGO_APP = {
    "requirements.txt": "Django>=4.2,<6\n",
    "manage.py": DJANGO_MANAGE,
    "site_app/__init__.py": "",
    "site_app/settings.py": DJANGO_SETTINGS,
    "site_app/urls.py": "urlpatterns = []\n",
    "assets/site.css": "body { color: teal; }\n",
}


@pytest.mark.slow
def test_django_collectstatic_runs_like_the_reference_buildpack(build: Build) -> None:
    build.app_from(files=DJANGO_APP)
    build.run(timeout=300)
    assert "collectstatic" in build.output
    assert (build.app / "staticfiles" / "site.css").read_text() == "body { color: teal; }\n"


@pytest.mark.slow
def test_django_collectstatic_can_be_disabled(build: Build) -> None:
    build.app_from(files=DJANGO_APP)
    build.run(env={"DISABLE_COLLECTSTATIC": "1"}, timeout=300)
    assert not (build.app / "staticfiles").exists()


@pytest.mark.slow
def test_pyproject_with_uv_lock_installs_the_locked_versions(build: Build) -> None:
    build.app_from(
        files={
            "pyproject.toml": '[project]\nname = "locked-app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
            'dependencies = ["six>=1.12,<1.15"]\n',
            "Procfile": "web: python -c 'import six'\n",
        }
    )
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [str(uv), "lock", "--quiet"],
        cwd=build.app,
        check=True,
        timeout=120,
        env={**os.environ, "UV_NATIVE_TLS": "1"},
    )
    lock = (build.app / "uv.lock").read_text()
    locked = lock.split('name = "six"\nversion = "', 1)[1].split('"', 1)[0]
    build.run(timeout=300)
    installed = list((build.app / ".venv").rglob("six-*.dist-info"))
    assert [path.name for path in installed] == [f"six-{locked}.dist-info"]
    assert "uv.lock" in build.output


PIPFILE_LOCK = """{
    "_meta": {"hash": {"sha256": "test"}, "pipfile-spec": 6, "requires": {"python_version": "3.11"},
              "sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": true}]},
    "default": {"six": {"hashes": [], "index": "pypi", "version": "==1.15.0"}},
    "develop": {"pytest": {"hashes": [], "version": "==8.0.0"}}
}
"""

POETRY_LOCK = """[[package]]
name = "six"
version = "1.14.0"
description = "Python 2 and 3 compatibility utilities"
optional = false
python-versions = ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*"
files = []

[metadata]
lock-version = "2.0"
python-versions = "^3.11"
content-hash = "test"
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("files", "version", "source"),
    [
        (
            {"Pipfile": "[packages]\nsix = '*'\n", "Pipfile.lock": PIPFILE_LOCK},
            "1.15.0",
            "Pipfile.lock",
        ),
        (
            {
                "pyproject.toml": '[tool.poetry]\nname = "app"\nversion = "0.1.0"\n\n'
                '[tool.poetry.dependencies]\npython = "^3.11"\nsix = "*"\n',
                "poetry.lock": POETRY_LOCK,
            },
            "1.14.0",
            "poetry.lock",
        ),
    ],
)
def test_locked_python_apps_install_their_locked_versions(
    build: Build, files: dict[str, str], version: str, source: str
) -> None:
    build.app_from(files={**files, "Procfile": "web: python -c 'import six'\n"})
    build.run(timeout=300)
    installed = [path.name for path in (build.app / ".venv").rglob("six-*.dist-info")]
    assert installed == [f"six-{version}.dist-info"]
    assert f"Installing dependencies from {source}" in build.output
    assert not list((build.app / ".venv").rglob("pytest-*.dist-info"))  # dev packages stay out


@pytest.mark.slow
def test_node_app_with_yarn_lock_installs_with_yarn(build: Build) -> None:
    build.app_from(
        files={
            "package.json": '{"name": "yarn-app", "version": "1.0.0", "private": true,'
            ' "dependencies": {"is-number": "7.0.0"}, "scripts": {"start": "node server.js"}}\n',
            "yarn.lock": '# yarn lockfile v1\n\n\nis-number@7.0.0:\n  version "7.0.0"\n'
            '  resolved "https://registry.yarnpkg.com/is-number/-/is-number-7.0.0.tgz'
            '"\n'
            "  integrity sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==\n",
            "server.js": "require('is-number'); require('http').createServer((q, r) => r.end('ok')).listen(process.env.PORT);\n",
        }
    )
    result = build.run(timeout=300)
    assert (build.app / "node_modules" / "is-number" / "package.json").is_file()
    assert "yarn" in build.output.lower()
    assert result.process_types["web"] == "npm start"


def test_detect_does_not_see_the_cache_and_release_runs_after_compile(build: Build) -> None:
    build.buildpacks["probe"] = {
        "detect": "[ -e /cache ] && echo SeesCache || echo NoCache",
        "compile": 'echo "compile cache: $2"; touch "$2/written-by-compile" "$1/compiled"',
        # As in a Heroku build container: the same sandbox, right after compile.
        "release": '[ -e "$1/compiled" ] && echo "release after compile, $# argument" >&2\n'
        "echo ---",
    }
    build.app_from(files={"x": "1"})
    build.run(env={"BUILDPACK_URL": "probe"})
    assert "-----> NoCache app detected" in build.lines
    assert "compile cache: /cache" in build.lines
    assert "release after compile, 1 argument" in build.lines
    assert (build.cache / "written-by-compile").exists()


@pytest.mark.parametrize(
    ("compile", "release", "message"),
    [
        ("exit 3", "echo ---", "failed to compile the app (exit status 3)"),
        ("true", "echo ---; exit 4", "release step failed (exit status 4)"),
        # What compile writes to the release step's pipe never reaches it.
        ("echo 'config_vars: {A: b}' >&3 || exit 5", "echo ---", "(exit status 5)"),
        ("true", "yes 'x: y' | head -c 2000000", "printed more than 1048576 bytes"),
    ],
)
def test_a_failure_is_put_down_to_the_step_that_failed(
    build: Build, compile: str, release: str, message: str
) -> None:
    build.buildpacks["steps"] = {"compile": compile, "release": release}
    build.app_from(files={"x": "1"})
    with pytest.raises(BuildError, match=re.escape(message)):
        build.run(env={"BUILDPACK_URL": "steps"})
