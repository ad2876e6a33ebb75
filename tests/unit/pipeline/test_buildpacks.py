"""The buildpack runner's logic, with tiny shell buildpacks and the sandbox turned off.

The same behaviour inside the real sandbox is in tests/integration/test_buildpacks_sandbox.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard import sandbox
from dockyard.errors import BuildError
from dockyard.pipeline import buildpacks
from dockyard.pipeline.buildpacks import (
    BuildContext,
    _LineBuffer,
    build_environment,
    parse_release,
    run_buildpacks,
)
from dockyard.pipeline.builtins import BUILTIN_BUILDPACKS

# -- pure helpers -------------------------------------------------------------------------


def test_parse_release_reads_both_mappings() -> None:
    text = """---
addons:
  - heroku-postgresql
config_vars:
  PATH: /app/.venv/bin:/usr/bin
  QUOTED: "a: b"
  SINGLE: 'it''s'
default_process_types:
  web: gunicorn app:app --bind 0.0.0.0:$PORT  # a comment
  worker: python worker.py
"""
    process_types, config_vars = parse_release(text)
    assert process_types == {
        "web": "gunicorn app:app --bind 0.0.0.0:$PORT",
        "worker": "python worker.py",
    }
    assert config_vars == {"PATH": "/app/.venv/bin:/usr/bin", "QUOTED": "a: b", "SINGLE": "it's"}


def test_parse_release_empty_and_flow_forms() -> None:
    assert parse_release("") == ({}, {})
    assert parse_release("---\ndefault_process_types: {}\nconfig_vars: {A: b}\n") == (
        {},
        {"A": "b"},
    )


def test_parse_release_keeps_quoted_values_with_commas_whole() -> None:
    text = """config_vars: {LIST: "a, b, c", PAIR: 'x,y', PLAIN: z}
default_process_types:
  web: "gunicorn app:app --workers 2, --bind :$PORT"
"""
    process_types, config_vars = parse_release(text)
    assert config_vars == {"LIST": "a, b, c", "PAIR": "x,y", "PLAIN": "z"}
    assert process_types == {"web": "gunicorn app:app --workers 2, --bind :$PORT"}


def test_parse_release_gives_unquoted_scalars_as_written() -> None:
    _, config_vars = parse_release("config_vars:\n  WORKERS: 4\n  DEBUG: true\n  EMPTY:\n")
    assert config_vars == {"WORKERS": "4", "DEBUG": "true", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("config_vars: {A: b\n", "it is not valid YAML"),
        ("config_vars:\n  A: [1, 2\n", "it is not valid YAML"),
        ("- web\n- worker\n", "it is not a YAML mapping"),
        ("default_process_types: web\n", "default_process_types is not a mapping"),
        ("config_vars:\n  A:\n    B: c\n", "config_vars.A is not a single value"),
    ],
)
def test_parse_release_says_what_is_wrong_with_bad_yaml(text: str, words: str) -> None:
    with pytest.raises(buildpacks.ReleaseYamlError, match=words):
        parse_release(text)


def test_build_environment_has_app_config_and_proxy_trust_but_nothing_of_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_SECRET", "x")
    env = build_environment({"APP": "1", "PATH": "/evil", "LD_PRELOAD": "/x.so", "bad name": "y"})
    assert env["APP"] == "1"
    assert env["PATH"].startswith("/opt/dockyard/bin:")
    assert "LD_PRELOAD" not in env and "bad name" not in env and "DOCKYARD_SECRET" not in env
    for name in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        assert env[name] == "/etc/ssl/certs/ca-certificates.crt"
    assert env["UV_NATIVE_TLS"] == "1"


def test_line_buffer_splits_decodes_and_keeps_the_last_redraw() -> None:
    lines: list[str] = []
    buffer = _LineBuffer(lines.append)
    buffer.feed(b"one\ntw")
    assert lines == ["one"]
    buffer.feed(b"o\r\n\x1b[32mgreen\x1b[0m\n 10%\r 50%\r100%\nbad \xff byte\nno newline")
    buffer.close()
    assert lines == ["one", "two", "green", "100%", "bad \ufffd byte", "no newline"]


def test_builtin_order_is_one_explicit_list() -> None:
    assert [b.name for b in BUILTIN_BUILDPACKS] == ["python", "nodejs", "go", "static", "procfile"]
    for builtin in BUILTIN_BUILDPACKS:
        for step in ("compile", "release"):  # detection is dockyard's own (builtins.py)
            script = buildpacks.BUILTIN_ROOT / builtin.name / "bin" / step
            assert script.is_file() and os.access(script, os.X_OK), script


# -- the runner, unsandboxed ----------------------------------------------------------------

UID = 230_000 + os.getpid() % 1000


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dockyard-bp-unit-"))
    path.chmod(0o711)
    (path / "app").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pack(
    target: Path, *, compile: str = "true", release: str = "echo ---", detect: str = "echo X"
) -> None:
    (target / "bin").mkdir(parents=True)
    for name, body in {"detect": detect, "compile": compile, "release": release}.items():
        (target / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (target / "bin" / name).chmod(0o755)


def release_script(config_var: str, *process_types: str) -> str:
    lines = ["---", "config_vars:", f"  {config_var}", "default_process_types:"]
    lines += [f"  {p}" for p in process_types]
    return "printf -- '" + "\\n".join(lines) + "\\n'"


def context(work: Path, env: dict[str, str], timeout: float = 30) -> BuildContext:
    return BuildContext(
        app_dir=work / "app",
        cache_dir=work / "cache",
        scratch_dir=work / "scratch",
        env=env,
        host_uid=UID,
        limits=sandbox.Limits(),
        timeout=timeout,
        sandbox_enabled=False,
    )


def test_buildpack_url_is_fetched_detected_and_compiled(work: Path) -> None:
    fetched: list[str] = []

    def fetch(url: str, target: Path) -> None:
        fetched.append(url)
        pack(target, compile='echo "compiled $1 with $(cat $3/GREETING)"')

    lines: list[str] = []
    (work / "app" / "requirements.txt").write_text("")  # would be python, if it were asked
    result = run_buildpacks(
        context(work, {"BUILDPACK_URL": "https://x.test/bp", "GREETING": "hi"}),
        log=lines.append,
        fetch_buildpack=fetch,
    )
    assert fetched == ["https://x.test/bp"]
    assert result.buildpacks == ["https://x.test/bp"]
    assert f"compiled {work / 'app'} with hi" in lines
    assert "-----> X app detected" in lines


def test_buildpack_url_that_refuses_the_app(work: Path) -> None:
    with pytest.raises(BuildError, match="does not accept this app"):
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}),
            log=lambda _: None,
            fetch_buildpack=lambda _, target: pack(target, detect="exit 1"),
        )


def _fetch_a_readme_only(_url: str, target: Path) -> None:
    (target / "README").write_text("x")


def test_fetched_directory_without_compile_is_not_a_buildpack(work: Path) -> None:
    with pytest.raises(BuildError, match="is not a buildpack: it has no bin/compile"):
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}),
            log=lambda _: None,
            fetch_buildpack=_fetch_a_readme_only,
        )


def test_fetch_failure_is_a_build_error(work: Path) -> None:
    def fetch(url: str, target: Path) -> None:
        raise OSError("connection refused")

    with pytest.raises(BuildError, match="could not be fetched: connection refused"):
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}), log=lambda _: None, fetch_buildpack=fetch
        )


def test_release_output_that_is_not_yaml_fails_the_build_in_words(work: Path) -> None:
    (work / "app" / ".buildpacks").write_text("bad\n")
    with pytest.raises(BuildError) as raised:
        run_buildpacks(
            context(work, {}),
            log=lambda _: None,
            fetch_buildpack=lambda url, target: pack(target, release="echo 'config_vars: {A'"),
        )
    assert "The bad buildpack's release step printed output dockyard cannot read" in str(
        raised.value
    )
    assert "not valid YAML" in str(raised.value)
    assert "bin/release must print YAML and exit 0" in str(raised.value)


def test_release_defaults_merge_and_procfile_wins(work: Path) -> None:
    releases = {
        "a": release_script("PATH: /a/bin:/usr/bin", "web: a", "clock: a-clock"),
        "b": release_script("PATH: /b/bin:/usr/bin", "clock: b-clock"),
    }
    (work / "app" / ".buildpacks").write_text("a\nb\n")
    (work / "app" / "Procfile").write_text("web: from-procfile\n")
    result = run_buildpacks(
        context(work, {}),
        log=lambda _: None,
        fetch_buildpack=lambda url, target: pack(target, release=releases[url]),
    )
    assert result.buildpacks == ["a", "b"]
    # The last buildpack's defaults only (Scalingo's multi-buildpack): a's `web: a` is
    # not a default any more, b's clock is.
    (work / "app" / "Procfile").unlink()
    shutil.rmtree(work / "scratch")
    result = run_buildpacks(
        context(work, {}),
        log=lambda _: None,
        fetch_buildpack=lambda url, target: pack(target, release=releases[url]),
    )
    assert result.process_types == {"clock": "b-clock"}
    assert result.config_vars == {"PATH": "/b/bin:/usr/bin:/a/bin"}


def test_listed_buildpacks_are_detected_before_each_compile_and_skipped_if_they_refuse(
    work: Path,
) -> None:
    (work / "app" / ".buildpacks").write_text("# comment\nmakes-marker\nwants-marker\nnever\n")
    scripts = {
        "makes-marker": {"compile": 'touch "$1/marker"; echo made'},
        "wants-marker": {"detect": 'test -f "$1/marker" && echo Marker', "compile": "echo used"},
        "never": {"detect": "exit 1", "compile": "echo never-compiled"},
    }
    lines: list[str] = []
    result = run_buildpacks(
        context(work, {}),
        log=lines.append,
        fetch_buildpack=lambda url, target: pack(target, **scripts[url]),
    )
    assert result.buildpacks == ["makes-marker", "wants-marker"]
    assert "-----> Marker app detected" in lines and "used" in lines
    assert " !     never does not accept this app (bin/detect): skipped" in lines
    assert "never-compiled" not in lines


def test_listed_buildpacks_may_name_built_ins_and_must_not_all_refuse(work: Path) -> None:
    (work / "app" / "index.html").write_text("<p>hi</p>")
    (work / "app" / ".buildpacks").write_text("static\n")
    result = run_buildpacks(
        context(work, {}), log=lambda _: None, fetch_buildpack=lambda _, t: None
    )
    assert result.buildpacks == ["static"] and "web" in result.process_types
    (work / "app" / ".buildpacks").write_text("python\n")
    shutil.rmtree(work / "scratch")
    with pytest.raises(BuildError, match=r"None of the buildpacks listed in \.buildpacks accepts"):
        run_buildpacks(context(work, {}), log=lambda _: None, fetch_buildpack=lambda _, t: None)


def test_invalid_procfile_is_a_build_error(work: Path) -> None:
    (work / "app" / "Procfile").write_text("web python app.py\n")
    with pytest.raises(BuildError, match="Procfile line 1"):
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}),
            log=lambda _: None,
            fetch_buildpack=lambda _, t: pack(t),
        )


def test_procfile_symlink_is_never_followed(work: Path) -> None:
    secret = work / "secret"
    secret.write_text("web: platform-secret\n")
    (work / "app" / "Procfile").symlink_to(secret)
    with pytest.raises(BuildError, match="must be a regular file") as caught:
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}),
            log=lambda _: None,
            fetch_buildpack=lambda _, t: pack(t),
        )
    assert "platform-secret" not in caught.value.message


def test_compile_failure_reports_step_status_and_output(work: Path) -> None:
    with pytest.raises(BuildError) as caught:
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}),
            log=lambda _: None,
            fetch_buildpack=lambda _, t: pack(t, compile="echo 'ERROR: nope'; exit 4"),
        )
    assert "The u buildpack failed to compile the app (exit status 4)" in caught.value.message
    assert "ERROR: nope" in caught.value.message


def test_timeout_and_cancel_stop_the_step(work: Path) -> None:
    started = time.monotonic()
    with pytest.raises(BuildError, match="exceeded 1 seconds"):
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}, timeout=1),
            log=lambda _: None,
            fetch_buildpack=lambda _, t: pack(t, compile="sleep 30"),
        )
    assert time.monotonic() - started < 5
    shutil.rmtree(work / "scratch")
    with pytest.raises(BuildError, match=r"^The build was cancelled\.$"):
        run_buildpacks(
            context(work, {"BUILDPACK_URL": "u"}),
            log=lambda _: None,
            fetch_buildpack=lambda _, t: pack(t, compile="sleep 30"),
            cancelled=lambda: time.monotonic() - started > 1.5,
        )
    assert time.monotonic() - started < 5


def test_nothing_matches(work: Path) -> None:
    with pytest.raises(BuildError) as caught:
        run_buildpacks(context(work, {}), log=lambda _: None, fetch_buildpack=lambda _, t: None)
    assert caught.value.message.startswith(
        "No buildpack matched this app: dockyard did not recognise its language. Its built-in "
        "buildpacks support Python (requirements.txt, pyproject.toml, Pipfile, setup.py); "
        "Node.js (package.json); Go (go.mod, Godeps/Godeps.json, vendor/vendor.json, "
        "glide.yaml, Gopkg.lock); static sites (index.html); any program the stack already "
        "has, started by a Procfile (Procfile). Add the file for the app's language"
    )


def test_compile_waits_for_the_cache_and_sees_what_it_holds(work: Path) -> None:
    lines: list[str] = []

    def cache_ready() -> None:
        # The cache is being checked out while detection runs; compile must not start first.
        assert "-----> X app detected" in lines and not any("seed" in line for line in lines)
        (work / "cache").mkdir(exist_ok=True)
        (work / "cache" / "seed").write_text("from the last build")

    run_buildpacks(
        context(work, {"BUILDPACK_URL": "u"}),
        log=lines.append,
        fetch_buildpack=lambda _, target: pack(target, compile='echo "seed: $(cat $2/seed)"'),
        cache_ready=cache_ready,
    )
    assert "seed: from the last build" in lines
