from __future__ import annotations

from pathlib import Path

from dockyard.runtime.logfile import LogFile, read_tail, rotated


def test_lines_are_timestamped_and_kept_raw(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "web-1.log")
    log.write(b"hello world\n")
    log.write("second line\r\n")
    log.close()

    lines = read_tail(tmp_path / "web-1.log", 10)

    assert [line.text for line in lines] == ["hello world", "second line"]
    assert all(line.timestamp.endswith("Z") and len(line.timestamp) == 27 for line in lines)


def test_the_file_is_bounded_with_one_rotation(tmp_path: Path) -> None:
    path = tmp_path / "web-1.log"
    log = LogFile(path, max_bytes=1000)
    for number in range(500):
        log.write(f"line {number}")
    log.close()

    assert path.stat().st_size <= 1000
    assert rotated(path).stat().st_size <= 1000
    assert not rotated(rotated(path)).exists()
    tail = [line.text for line in read_tail(path, 40)]
    assert tail == [f"line {number}" for number in range(460, 500)]


def test_an_endless_line_is_cut(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "web-1.log")
    log.write(b"x" * 100_000)
    log.close()

    [line] = read_tail(tmp_path / "web-1.log", 5)
    assert len(line.text) == 16 * 1024


def test_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "nothing.log", 5) == []
