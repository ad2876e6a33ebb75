"""Reading an app's scalingo.json: never through a link, never a huge file."""

from __future__ import annotations

from pathlib import Path

from dockyard.worker import manifest


def test_no_manifest_is_an_empty_one(tmp_path: Path) -> None:
    declared, problems = manifest.read(tmp_path)
    assert declared == manifest.NOTHING and problems == []


def test_a_link_is_refused_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"addons": ["postgresql"]}')
    release = tmp_path / "release"
    release.mkdir()
    (release / "scalingo.json").symlink_to(secret)
    declared, problems = manifest.read(release)
    assert declared.addons == () and problems == ["scalingo.json is not a regular file"]


def test_invalid_json_and_oversize_are_problems(tmp_path: Path) -> None:
    (tmp_path / "scalingo.json").write_text("{nope")
    assert "not valid JSON" in manifest.read(tmp_path)[1][0]
    (tmp_path / "scalingo.json").write_text(" " * (manifest.MAX_MANIFEST_BYTES + 1))
    assert "over 1024 KiB" in manifest.read(tmp_path)[1][0]


def test_a_directory_is_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "scalingo.json").mkdir()
    assert manifest.read(tmp_path)[1] == ["scalingo.json is not a regular file"]


def test_the_hook_output_is_read_as_it_grows(tmp_path: Path) -> None:
    from dockyard.runtime.logfile import LogFile

    path = tmp_path / "postdeploy-1.log"
    output = manifest._Output(path)
    assert output.new_lines() == []
    log = LogFile(path)
    log.write("migrating")
    assert output.new_lines() == ["migrating"]
    log.write("done")
    log.close()
    assert output.new_lines(final=True) == ["done"]
    assert output.new_lines() == []


def test_the_hook_output_loses_no_line_when_its_file_rotates(tmp_path: Path) -> None:
    """A hook printing megabytes rotates its log file between two reads, once or twice:
    every line still arrives once, in order (lines were lost at each rotation)."""
    from dockyard.runtime.logfile import LogFile

    path = tmp_path / "postdeploy-1.log"
    log = LogFile(path, max_bytes=4096)
    output = manifest._Output(path)
    written = 0
    seen: list[str] = []
    for burst in (10, 80, 150, 3, 120):  # 80 lines rotate once, 150 twice
        for _ in range(burst):
            log.write(f"line {written} " + "x" * 20)
            written += 1
        seen += output.new_lines()
    log.close()
    seen += output.new_lines(final=True)
    assert seen == [f"line {n} " + "x" * 20 for n in range(written)]
