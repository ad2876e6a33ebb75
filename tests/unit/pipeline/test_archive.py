"""The archive extractor is a security boundary: every rule of docs/security.md "Archives" is a test.

Ordinary archives are made with ``tarfile``; malicious ones are hand-crafted tar blocks,
because ``tarfile`` refuses to write most of them. Bombs are built without ever holding
their expanded content: after a zlib full flush, compressing the same block gives the same
bytes, so a 1 GiB stream is one compressed MiB repeated.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard.errors import ArchiveError
from dockyard.pipeline import archive as archive_module
from dockyard.pipeline.archive import ArchiveLimits, unpack

MiB = 1024 * 1024
GiB = 1024 * MiB

# --------------------------------------------------------------------------------------
# Building archives


def tar_header(
    name: bytes | str,
    *,
    typeflag: bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    linkname: bytes | str = b"",
    prefix: bytes = b"",
    size_field: bytes | None = None,
) -> bytes:
    """One ustar header block with a correct checksum, whatever the name holds."""
    name = name.encode() if isinstance(name, str) else name
    linkname = linkname.encode() if isinstance(linkname, str) else linkname
    assert len(name) <= 100 and len(linkname) <= 100 and len(prefix) <= 155
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"%07o\x00" % mode
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[136:148] = b"00000000000\x00"
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157 : 157 + len(linkname)] = linkname
    block[257:265] = b"ustar\x0000"
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax_records(records: dict[str, bytes]) -> bytes:
    payload = b""
    for key, value in records.items():
        body = b" " + key.encode() + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length += 1
        payload += str(length).encode() + body
    return payload


def pax(records: dict[str, bytes], typeflag: bytes = b"x") -> bytes:
    payload = pax_records(records)
    return tar_header("././@PaxHeader", typeflag=typeflag, size=len(payload)) + padded(payload)


def gnu_long(name: bytes, typeflag: bytes = b"L") -> bytes:
    payload = name + b"\x00"
    return tar_header("././@LongLink", typeflag=typeflag, size=len(payload)) + padded(payload)


def file_entry(name: bytes | str, data: bytes = b"", mode: int = 0o644) -> bytes:
    return tar_header(name, size=len(data), mode=mode) + padded(data)


def dir_entry(name: bytes | str, mode: int = 0o755) -> bytes:
    return tar_header(name, typeflag=b"5", mode=mode)


def symlink_entry(name: bytes | str, target: bytes | str) -> bytes:
    return tar_header(name, typeflag=b"2", linkname=target)


END_OF_ARCHIVE = bytes(1024)


def tar_of(*entries: bytes) -> bytes:
    return b"".join(entries) + END_OF_ARCHIVE


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def tarfile_archive(files: dict[str, bytes], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def gzip_repeating(prefix: bytes, unit: bytes, repeat: int, suffix: bytes) -> bytes:
    """A valid gzip of ``prefix + unit * repeat + suffix``, built without expanding it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH) == block
    tail = compressor.compress(suffix) + compressor.flush()
    # The trailer is ours: the compressor saw the unit twice, the stream holds it repeat times.
    crc = zlib.crc32(prefix)
    for _ in range(repeat):
        crc = zlib.crc32(unit, crc)
    crc = zlib.crc32(suffix, crc)
    length = len(prefix) + len(unit) * repeat + len(suffix)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, length & 0xFFFFFFFF)
    return gzip_header + head + block * repeat + tail + trailer


# --------------------------------------------------------------------------------------
# Running the extractor


class Workspace:
    """A temporary directory with an upload, a destination and a place an escape would hit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.upload = root / "upload.tar.gz"
        self.dest = root / "builds" / "dest"
        self.outside = root / "outside"
        (root / "builds").mkdir()
        self.outside.mkdir()
        (self.outside / "secret").write_text("do not touch")

    def unpack(self, data: bytes, **kwargs: object) -> Path:
        self.upload.write_bytes(data)
        unpack(self.upload, self.dest, **kwargs)  # type: ignore[arg-type]
        return self.dest

    def refuse(self, data: bytes, *words: str, **kwargs: object) -> str:
        """Unpack must fail naming ``words``, and leave nothing behind anywhere."""
        before = self.snapshot()
        with pytest.raises(ArchiveError) as caught:
            self.unpack(data, **kwargs)
        message = caught.value.message
        for word in words:
            assert word in message, message
        assert message.endswith("."), message
        assert not self.dest.exists()
        assert self.snapshot() == before
        return message

    def snapshot(self) -> list[tuple[str, int, int]]:
        found = []
        for directory, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(directory, name)
                info = path.lstat()
                found.append((str(path.relative_to(self.root)), info.st_mode, info.st_size))
        return sorted(entry for entry in found if entry[0] != "upload.tar.gz")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def measure(action: Callable[[], object]) -> tuple[float, int]:
    """Seconds and peak Python heap bytes taken by ``action`` (which is expected to fail)."""
    tracemalloc.start()
    started = time.perf_counter()
    with contextlib.suppress(ArchiveError):
        action()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak


# --------------------------------------------------------------------------------------
# Ordinary archives


def test_unpacks_content_of_the_single_top_level_directory(ws: Workspace) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, data, mode in [
            ("app", tarfile.DIRTYPE, b"", 0o755),
            ("app/Procfile", tarfile.REGTYPE, b"web: python app.py\n", 0o644),
            ("app/bin", tarfile.DIRTYPE, b"", 0o755),
            ("app/bin/start", tarfile.REGTYPE, b"#!/bin/sh\n", 0o755),
            ("app/lib/deep/mod.py", tarfile.REGTYPE, b"x = 1\n", 0o600),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode = kind, len(data), mode
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("app/run")
        link.type, link.linkname = tarfile.SYMTYPE, "bin/start"
        tar.addfile(link)

    dest = ws.unpack(buffer.getvalue())

    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "Procfile", "bin", "bin/start", "lib", "lib/deep", "lib/deep/mod.py", "run",
    ]  # fmt: skip
    assert (dest / "Procfile").read_bytes() == b"web: python app.py\n"
    assert stat.S_IMODE((dest / "bin/start").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "lib/deep/mod.py").stat().st_mode) == 0o600
    assert os.readlink(dest / "run") == "bin/start"
    assert (dest / "run").read_bytes() == b"#!/bin/sh\n"


def test_dot_slash_prefixes_and_code_host_global_header_are_accepted(ws: Workspace) -> None:
    comment = pax_records({"comment": b"0123abcd"})
    git_archive_style = tar_of(
        tar_header("pax_global_header", typeflag=b"g", size=len(comment)) + padded(comment),
        dir_entry("./"),
        dir_entry("./repo-main/"),
        file_entry("./repo-main/README", b"hello"),
        file_entry("./repo-main/./src//main.py", b"print()"),
    )
    dest = ws.unpack(gz(git_archive_style))
    assert (dest / "README").read_bytes() == b"hello"
    assert (dest / "src/main.py").read_bytes() == b"print()"


def test_pax_global_header_unpacked_as_a_file_by_old_tar_is_not_a_directory(ws: Workspace) -> None:
    data = tar_of(file_entry("pax_global_header", b"52 comment=x\n"), file_entry("app/a", b"1"))
    assert (ws.unpack(gz(data)) / "a").read_bytes() == b"1"
    shutil.rmtree(ws.dest)
    huge = gzip_repeating(tar_header("pax_global_header", size=GiB), bytes(MiB), 1024, b"")
    ws.refuse(huge, "'pax_global_header' is 1 GiB, too large for a global header")


def test_long_names_of_gnu_and_pax_archives(ws: Workspace) -> None:
    long_name = "app/" + "/".join(["d" * 200] * 3) + "/" + "f" * 255
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        dest = ws.unpack(tarfile_archive({long_name: b"deep"}, fmt=fmt))
        assert (dest / long_name.removeprefix("app/")).read_bytes() == b"deep"
        ws.root.joinpath("builds", "dest").rename(ws.root / f"builds/{fmt}")


def test_ustar_prefix_and_base256_size_are_read(ws: Workspace) -> None:
    data = tar_of(
        tar_header("file.txt", prefix=b"app/sub", size=3) + padded(b"abc"),
        tar_header("app/big", size_field=b"\x80" + (5).to_bytes(11, "big")) + padded(b"12345"),
    )
    dest = ws.unpack(gz(data))
    assert (dest / "sub/file.txt").read_bytes() == b"abc"
    assert (dest / "big").read_bytes() == b"12345"


def test_pax_path_and_size_override_the_ustar_fields(ws: Workspace) -> None:
    data = tar_of(
        pax({"path": "app/é ünïcode.txt".encode(), "size": b"4"}),
        tar_header("ignored", size=0) + padded(b"data"),
    )
    assert (ws.unpack(gz(data)) / "é ünïcode.txt").read_bytes() == b"data"


def test_setuid_setgid_and_sticky_bits_are_stripped(ws: Workspace) -> None:
    data = tar_of(
        dir_entry("app/", mode=0o1777),
        dir_entry("app/tmp/", mode=0o3775),
        file_entry("app/su", b"x", mode=0o6755),
    )
    dest = ws.unpack(gz(data))
    assert stat.S_IMODE((dest / "su").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o775
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777


def test_read_only_directories_still_receive_their_entries(ws: Workspace) -> None:
    data = tar_of(dir_entry("app/ro/", mode=0o555), file_entry("app/ro/f", b"x", mode=0o444))
    dest = ws.unpack(gz(data))
    assert (dest / "ro/f").read_bytes() == b"x"


def test_files_before_their_directory_entry_are_fine(ws: Workspace) -> None:
    data = tar_of(file_entry("app/a/b/c", b"1"), dir_entry("app/a/b/"), dir_entry("app/a/"))
    assert (ws.unpack(gz(data)) / "a/b/c").read_bytes() == b"1"


def test_symlinks_inside_the_root_are_kept(ws: Workspace) -> None:
    data = tar_of(
        file_entry("app/vendor/lib/x.py", b"x"),
        symlink_entry("app/lib", "vendor/lib"),  # to a directory inside
        symlink_entry("app/vendor/lib/y.py", "./x.py"),
        symlink_entry("app/vendor/up", "../vendor/lib/x.py"),
        symlink_entry("app/self", "."),
        symlink_entry("app/dangling", "not-there"),
        symlink_entry("app/to-link", "self"),  # a link to a link, not through one
    )
    dest = ws.unpack(gz(data))
    assert (dest / "lib/x.py").read_bytes() == b"x"
    assert (dest / "vendor/up").read_bytes() == b"x"
    assert os.readlink(dest / "to-link") == "self"


def test_an_existing_empty_destination_is_used(ws: Workspace) -> None:
    ws.dest.mkdir()
    assert (ws.unpack(gz(tar_of(file_entry("app/a", b"1")))) / "a").read_bytes() == b"1"


def test_an_existing_empty_destination_is_left_empty_on_failure(ws: Workspace) -> None:
    ws.dest.mkdir()
    with pytest.raises(ArchiveError):
        ws.unpack(gz(tar_of(file_entry("app/a", b"1"), file_entry("app/../x"))))
    assert list(ws.dest.iterdir()) == []


def test_a_destination_with_content_is_never_touched(ws: Workspace) -> None:
    ws.dest.mkdir()
    (ws.dest / "previous-build").write_text("keep")
    with pytest.raises(ValueError, match="not an empty directory"):
        ws.unpack(gz(tar_of(file_entry("app/a"))))
    assert (ws.dest / "previous-build").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_everything_written_belongs_to_the_owner(ws: Workspace) -> None:
    data = tar_of(dir_entry("app/"), file_entry("app/d/f", b"x"), symlink_entry("app/l", "d/f"))
    dest = ws.unpack(gz(data), owner_uid=4321)
    for path in [dest, dest / "d", dest / "d/f", dest / "l"]:
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (4321, 4321), path


def test_large_file_is_streamed_in_small_memory(ws: Workspace) -> None:
    content = os.urandom(16 * MiB)
    data = gz(tar_of(file_entry("app/blob", content)))
    ws.upload.write_bytes(data)
    elapsed, peak = measure(lambda: unpack(ws.upload, ws.dest))
    assert (ws.dest / "blob").read_bytes() == content
    assert peak < 4 * MiB, peak
    assert elapsed < 2


def test_exactly_max_bytes_is_allowed_and_one_more_is_not(ws: Workspace) -> None:
    limits = ArchiveLimits(max_bytes=1000)
    fits = tar_of(file_entry("app/a", bytes(600)), file_entry("app/b", bytes(400)))
    assert (ws.unpack(gz(fits), limits=limits) / "b").stat().st_size == 400
    ws.root.joinpath("builds", "dest").rename(ws.root / "builds/ok")
    over = tar_of(file_entry("app/a", bytes(600)), file_entry("app/b", bytes(401)))
    ws.refuse(gz(over), "more than the 1000 bytes limit", "'app/b'", limits=limits)


# --------------------------------------------------------------------------------------
# Not an archive, or a broken one


def test_not_gzip(ws: Workspace) -> None:
    ws.refuse(b"PK\x03\x04 a zip file", "not gzip-compressed", ".tar.gz")


def test_gzip_of_something_that_is_not_tar(ws: Workspace) -> None:
    ws.refuse(gz(b"hello world\n" * 100), "not a valid tar file", "checksum")


def test_truncated_compressed_stream(ws: Workspace) -> None:
    data = gz(tar_of(file_entry("app/a", os.urandom(100_000))))
    ws.refuse(data[: len(data) // 2], "truncated", "'app/a'")


def test_truncated_tar_inside_a_complete_gzip(ws: Workspace) -> None:
    ws.refuse(gz(file_entry("app/a", b"x" * 1000)[:700]), "truncated", "'app/a'")
    ws.refuse(gz(file_entry("app/a", b"x")[:300]), "truncated")


def test_corrupt_compressed_data(ws: Workspace) -> None:
    data = bytearray(gz(tar_of(file_entry("app/a", os.urandom(50_000)))))
    data[-8] ^= 0xFF  # the CRC
    ws.refuse(bytes(data), "corrupt")


def test_data_after_the_end_is_only_padding(ws: Workspace) -> None:
    padding = tar_of(file_entry("app/a", b"1")) + bytes(10240)
    assert (ws.unpack(gz(padding)) / "a").read_bytes() == b"1"
    shutil.rmtree(ws.dest)
    hidden = tar_of(file_entry("app/a", b"1")) + bytes(17 * MiB)
    ws.refuse(gz(hidden), "more than 16 MiB of data after its end")


def test_missing_end_of_archive_blocks_is_tolerated(ws: Workspace) -> None:
    assert (ws.unpack(gz(file_entry("app/a", b"1"))) / "a").read_bytes() == b"1"


# --------------------------------------------------------------------------------------
# Exactly one top-level directory


def test_two_top_level_directories(ws: Workspace) -> None:
    data = tar_of(dir_entry("a/"), file_entry("a/x"), dir_entry("b/"), file_entry("b/y"))
    message = ws.refuse(gz(data))
    assert message == (
        "The archive must contain exactly one top-level directory; it contains 2: 'a', 'b'."
    )


def test_files_at_the_top_level(ws: Workspace) -> None:
    data = tar_of(file_entry("package.json"), file_entry("index.js"), dir_entry("src/"))
    ws.refuse(gz(data), "exactly one top-level directory", "it contains 3", "'package.json'")


def test_a_single_file_at_the_top_level(ws: Workspace) -> None:
    ws.refuse(gz(tar_of(file_entry("app.py", b"x"))), "it contains only the file 'app.py'")


def test_a_directory_and_a_file_beside_it(ws: Workspace) -> None:
    data = tar_of(dir_entry("app/"), file_entry("app/x"), file_entry("README"))
    ws.refuse(gz(data), "it contains 2: 'app', 'README'")


def test_many_top_level_names_are_summarised(ws: Workspace) -> None:
    data = tar_of(*[file_entry(f"f{i}") for i in range(9)])
    ws.refuse(gz(data), "it contains 9: 'f0', 'f1', 'f2', 'f3', 'f4' and 4 more")


def test_listing_top_level_names_stays_within_the_caps(ws: Workspace) -> None:
    many = gz(tar_of(file_entry("top"), *[file_entry(f"app/f{i}") for i in range(3000)]))
    started = time.perf_counter()
    ws.refuse(many, "it contains 2: 'top', 'app'", limits=ArchiveLimits(max_entries=100))
    assert time.perf_counter() - started < 1
    ws.refuse(gz(tar_of(*[file_entry(f"f{i}") for i in range(3000)])), "it contains 3000")


def test_old_style_directory_marked_by_a_trailing_slash(ws: Workspace) -> None:
    data = tar_of(tar_header("app/", typeflag=b"\x00"), tar_header("app/d/", typeflag=b"\x00"))
    assert (ws.unpack(gz(data)) / "d").is_dir()


def test_empty_archive(ws: Workspace) -> None:
    ws.refuse(gz(END_OF_ARCHIVE), "exactly one top-level directory; it is empty")
    ws.refuse(gz(tar_of(dir_entry("./"))), "it is empty")


# --------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("/etc/cron.d/evil", ["'/etc/cron.d/evil'", "absolute path"]),
        ("app/../../outside/evil", ["'app/../../outside/evil'", "'..' component"]),
        ("app/sub/../../x", ["'..' component"]),
        ("../outside/evil", ["'..' component"]),
        ("app/new\nline", ["'app/new\\x0aline'", "control character"]),
        ("app/esc\x1b[31m", ["control character"]),
        ("app/c1\u0085", ["control character"]),
    ],
)
def test_unsafe_names_are_refused(ws: Workspace, name: str, words: list[str]) -> None:
    data = tar_of(dir_entry("app/"), pax({"path": name.encode()}), file_entry("x", b"evil"))
    ws.refuse(gz(data), *words)


def test_nul_in_a_name(ws: Workspace) -> None:
    data = tar_of(pax({"path": b"app/a\x00b"}), file_entry("x"))
    ws.refuse(gz(data), "'app/a\\x00b'", "control character")
    ws.refuse(gz(tar_of(gnu_long(b"app/a\x00/../../x"), file_entry("x"))), "control character")


def test_non_utf8_name(ws: Workspace) -> None:
    ws.refuse(gz(tar_of(file_entry(b"app/caf\xe9"))), "'app/caf\\xe9'", "not valid UTF-8")


def test_component_over_255_bytes(ws: Workspace) -> None:
    name = "app/" + "é" * 128  # 256 bytes in 128 characters
    ws.refuse(gz(tar_of(gnu_long(name.encode()), file_entry("x"))), "longer than 255 bytes")


def test_path_of_4096_bytes_is_allowed_and_4097_is_not(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    components = ["d" * 254] * 16  # 16 * 255 bytes with slashes
    name = "app/" + "/".join(components)
    name += "/" + "f" * (4096 - len(name) - 1)
    assert len(name) == 4096
    dest = ws.unpack(gz(tar_of(pax({"path": name.encode()}), file_entry("x", b"ok"))))
    monkeypatch.chdir(dest)  # the absolute path would be over PATH_MAX
    assert Path(name.removeprefix("app/")).read_bytes() == b"ok"
    shutil.rmtree(dest)
    ws.refuse(
        gz(tar_of(pax({"path": name.encode() + b"f"}), file_entry("x"))),
        "path longer than 4096 bytes",
    )


def test_duplicate_names(ws: Workspace) -> None:
    ws.refuse(
        gz(tar_of(file_entry("app/a", b"1"), file_entry("./app/a", b"2"))),
        "'./app/a' more than once",
    )
    ws.refuse(gz(tar_of(dir_entry("app/d/"), dir_entry("app/d/"))), "more than once")
    ws.refuse(gz(tar_of(dir_entry("app/"), dir_entry("app/"))), "more than once")
    ws.refuse(gz(tar_of(file_entry("app/x"), dir_entry("app/x/"))), "more than once")
    ws.refuse(
        gz(tar_of(file_entry("app/x/y"), file_entry("app/x"))), "earlier entries use it as a dir"
    )
    ws.refuse(gz(tar_of(symlink_entry("app/l", "a"), file_entry("app/l"))), "more than once")
    ws.refuse(
        gz(tar_of(file_entry("app/d/f"), symlink_entry("app/d", "/"), file_entry("app/d/g"))),
        "'app/d' is a symbolic link, but earlier entries use it as a directory",
    )


def test_entry_below_a_file(ws: Workspace) -> None:
    data = tar_of(file_entry("app/f", b"1"), file_entry("app/f/x", b"2"))
    ws.refuse(gz(data), "'app/f/x' lies inside 'f', which is a file")


# --------------------------------------------------------------------------------------
# Entry types


@pytest.mark.parametrize(
    ("typeflag", "words"),
    [
        (b"1", ["hard link"]),
        (b"3", ["character device"]),
        (b"4", ["block device"]),
        (b"6", ["FIFO"]),
        (b"S", ["sparse"]),
        (b"V", ["unsupported tar type 'V'"]),
    ],
)
def test_forbidden_entry_types(ws: Workspace, typeflag: bytes, words: list[str]) -> None:
    data = tar_of(dir_entry("app/"), tar_header("app/x", typeflag=typeflag, linkname="app/y"))
    ws.refuse(gz(data), "'app/x'", *words)


def test_hard_link_to_a_file_outside(ws: Workspace) -> None:
    target = str(ws.outside / "secret")
    data = tar_of(dir_entry("app/"), tar_header("app/x", typeflag=b"1", linkname=target))
    ws.refuse(gz(data), "hard link")


def test_pax_sparse_file(ws: Workspace) -> None:
    data = tar_of(pax({"GNU.sparse.major": b"1", "path": b"app/s"}), file_entry("x"))
    ws.refuse(gz(data), "sparse")


def test_directory_carrying_data(ws: Workspace) -> None:
    data = tar_of(tar_header("app/d", typeflag=b"5", size=512) + bytes(512))
    ws.refuse(gz(data), "is a directory but carries 512 bytes")


# --------------------------------------------------------------------------------------
# Symbolic links


@pytest.mark.parametrize(
    "target",
    [
        "/etc/passwd",
        "../../../outside/secret",
        "../../outside",
        "../..",
        "sub/../../..",
        "a/../../../x",
    ],
)
def test_symlinks_that_leave_the_root(ws: Workspace, target: str) -> None:
    data = tar_of(dir_entry("app/"), dir_entry("app/sub/"), symlink_entry("app/sub/l", target))
    ws.refuse(gz(data), "'app/sub/l' is a symbolic link", "outside the application directory")


def test_symlink_at_root_level_to_parent(ws: Workspace) -> None:
    ws.refuse(gz(tar_of(symlink_entry("app/l", ".."))), "outside the application directory")


def test_writing_through_a_symlinked_directory(ws: Workspace) -> None:
    data = tar_of(
        symlink_entry("app/escape", str(ws.outside)),
        file_entry("app/escape/secret", b"overwritten"),
    )
    ws.refuse(gz(data), "'app/escape/secret' lies inside 'escape', which is a symbolic link")
    assert (ws.outside / "secret").read_text() == "do not touch"
    # Even when the link itself would be fine.
    data = tar_of(
        dir_entry("app/real/"), symlink_entry("app/l", "real"), file_entry("app/l/f", b"x")
    )
    ws.refuse(gz(data), "which is a symbolic link")


def test_symlink_chain_through_a_symlinked_directory(ws: Workspace) -> None:
    # "a" is the root itself, so a/a/../.. is two levels above it although it looks inside.
    chain = tar_of(symlink_entry("app/a", "."), symlink_entry("app/b", "a/a/../../outside"))
    ws.refuse(gz(chain), "'app/b'", "passes through another symbolic link ('app/a')")
    # The same chain with the link defined after the one that uses it.
    later = tar_of(symlink_entry("app/b", "a/x/../.."), symlink_entry("app/a", "."))
    ws.refuse(gz(later), "passes through another symbolic link")


def long_entry(name: str, typeflag: bytes, linkname: str = "") -> bytes:
    """An entry whose names may exceed 100 bytes, as GNU tar writes them."""
    prefix = gnu_long(name.encode()) if len(name) > 100 else b""
    if len(linkname) > 100:
        prefix += gnu_long(linkname.encode(), typeflag=b"K")
    return prefix + tar_header(name[:100], typeflag=typeflag, linkname=linkname[:100])


def test_cve_2025_4517_style_long_symlink_chain(ws: Workspace) -> None:
    # The published bypass of tarfile's "data" filter: links through directories whose
    # resolved path exceeds PATH_MAX, so realpath() gives up and the check sees a harmless
    # path. Every step here passes through a link, which is refused outright.
    steps = "abcdefghijklmnop"
    entries = []
    path = ""
    for step in steps:
        entries.append(long_entry(f"app/{path}{'d' * 247}/", b"5"))
        entries.append(long_entry(f"app/{path}{step}", b"2", "d" * 247))
        path += f"{step}/"
    entries.append(long_entry(f"app/{path}l", b"2", "../" * len(steps)))
    entries.append(long_entry("app/escape", b"2", f"{path}l/../../outside/secret"))
    entries.append(long_entry("app/escape", b"0"))
    ws.refuse(gz(tar_of(*entries)), "which is a symbolic link")
    # The same chain with its directories written directly: the last links go through links.
    real_dirs = "/".join(["d" * 247] * len(steps))
    entries = [long_entry(f"app/{real_dirs}/", b"5")]
    entries += [
        long_entry(f"app/{'/'.join(['d' * 247] * i)}/{step}", b"2", "d" * 247)
        for i, step in enumerate(steps)
    ]
    entries.append(long_entry(f"app/{path}l", b"2", "../" * len(steps)))
    ws.refuse(gz(tar_of(*entries)), "which is a symbolic link")


def test_symlink_without_target_or_with_control_characters(ws: Workspace) -> None:
    ws.refuse(gz(tar_of(symlink_entry("app/l", ""))), "no target")
    ws.refuse(gz(tar_of(symlink_entry("app/l", "a\tb"))), "control character in its link target")


# --------------------------------------------------------------------------------------
# Caps, and bombs that must not move memory or disk


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """~1 MB of gzip holding one 1 GiB file of zeros."""
    return gzip_repeating(tar_header("app/zeros", size=GiB), bytes(MiB), 1024, END_OF_ARCHIVE)


def test_gzip_bomb_is_refused_without_memory_or_disk(ws: Workspace, gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < 1.2 * MiB
    ws.upload.write_bytes(gzip_bomb)
    elapsed, peak = measure(lambda: unpack(ws.upload, ws.dest))
    ws.refuse(gzip_bomb, "more than the 300 MiB limit", "'app/zeros'")
    assert elapsed < 1 and peak < 1 * MiB, (elapsed, peak)


def test_many_small_files_bomb_stops_at_the_cap(ws: Workspace) -> None:
    header = tar_header("app/only-one-name", size=MiB)  # repeated: the cap comes first
    bomb = gzip_repeating(b"", header + bytes(MiB), 64, END_OF_ARCHIVE)
    ws.upload.write_bytes(bomb)
    limits = ArchiveLimits(max_bytes=8 * MiB)
    ws.refuse(bomb, "more than once", limits=limits)
    numbered = b"".join(file_entry(f"app/f{i}", bytes(MiB)) for i in range(12))
    ws.refuse(gz(tar_of(numbered)), "more than the 8 MiB limit", "'app/f8'", limits=limits)


@pytest.fixture(scope="module")
def pax_bomb() -> bytes:
    """~200 KB of gzip holding a 200 MiB PAX header (a path of 200 MiB)."""
    size = 200 * MiB
    record_head = f"{size} path=app/".encode()
    body_length = size - len(record_head) - 1
    unit = b"a" * MiB
    assert body_length % MiB != 0
    prefix = (
        tar_header("././@PaxHeader", typeflag=b"x", size=size)
        + record_head
        + b"a" * (body_length % MiB)
    )
    return gzip_repeating(prefix, unit, body_length // MiB, b"\n" + END_OF_ARCHIVE)


def test_pax_header_bomb_is_refused_before_it_is_read(ws: Workspace, pax_bomb: bytes) -> None:
    assert len(pax_bomb) < 250_000
    ws.upload.write_bytes(pax_bomb)
    elapsed, peak = measure(lambda: unpack(ws.upload, ws.dest))
    ws.refuse(pax_bomb, "extended (PAX) header of 200 MiB", "over the 64 KiB limit")
    assert elapsed < 0.5 and peak < 1 * MiB, (elapsed, peak)


def test_pax_header_just_over_the_limit(ws: Workspace) -> None:
    records = pax_records({"path": b"app/x", "comment": b"c" * (64 * 1024)})
    data = tar_of(tar_header("h", typeflag=b"x", size=len(records)) + padded(records))
    ws.refuse(gz(data), "extended (PAX) header", "64 KiB limit")
    long_name = gnu_long(b"app/" + b"n" * (70 * 1024))
    ws.refuse(gz(tar_of(long_name, file_entry("x"))), "64 KiB limit")


def test_endless_extended_headers(ws: Workspace) -> None:
    data = tar_of(*[pax({"comment": b"x"}) for _ in range(50)], file_entry("app/x"))
    ws.refuse(gz(data), "extended headers in a row")


def test_malformed_pax_header(ws: Workspace) -> None:
    for payload in [b"9999 path=x\n", b"x path=y\n", b"0 \n", b"8 path\n", b"13 size=1a2\n"]:
        data = tar_of(tar_header("h", typeflag=b"x", size=len(payload)) + padded(payload))
        ws.refuse(gz(data + file_entry("app/x")), "malformed extended (PAX) header")


def empty_files_archive(count: int) -> bytes:
    """gzip of ``count`` empty files app/f0000000… built from one template header."""
    template = bytearray(tar_header("app/f0000000"))
    template[148:156] = b" " * 8
    base_sum = sum(template) - sum(b"0000000")  # checksum field still holds its spaces
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunks = []
    batch = bytearray()
    for index in range(count):
        digits = b"%07d" % index
        template[5:12] = digits
        template[148:156] = b"%06o\x00 " % (base_sum + sum(digits))
        batch += template
        if len(batch) >= 4 * MiB:
            chunks.append(compressor.compress(bytes(batch)))
            batch.clear()
    chunks.append(compressor.compress(bytes(batch) + END_OF_ARCHIVE) + compressor.flush())
    return b"".join(chunks)


def test_entry_count_cap(ws: Workspace) -> None:
    ws.refuse(
        empty_files_archive(11),
        "more than the limit of 10 entries",
        limits=ArchiveLimits(max_entries=10),
    )
    assert (ws.unpack(empty_files_archive(10), limits=ArchiveLimits(max_entries=10))).is_dir()


@pytest.fixture
def ws_in_memory(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace on tmpfs when there is one: creating 100,000 files on a busy disk is slow."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield Workspace(tmp_path)
        return
    root = Path(tempfile.mkdtemp(prefix="dockyard-archive-test-", dir=shm))
    try:
        yield Workspace(root)
    finally:
        shutil.rmtree(root)


UNPACK_AND_REPORT_MEMORY = """
import json, resource, sys, time
from pathlib import Path
from dockyard.errors import ArchiveError
from dockyard.pipeline.archive import unpack
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    unpack(Path(sys.argv[1]), Path(sys.argv[2]))
    message = None
except ArchiveError as error:
    message = error.message
elapsed = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"message": message, "seconds": elapsed, "rss_growth_kib": after - before}))
"""


def test_two_hundred_thousand_empty_files(ws_in_memory: Workspace) -> None:
    ws = ws_in_memory
    bomb = empty_files_archive(200_000)
    assert len(bomb) < 3 * MiB
    ws.upload.write_bytes(bomb)
    before = ws.snapshot()
    # A fresh interpreter, so its peak resident memory is this unpack's alone.
    completed = subprocess.run(
        [sys.executable, "-c", UNPACK_AND_REPORT_MEMORY, str(ws.upload), str(ws.dest)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(completed.stdout)
    assert report["message"] == "The archive has more than the limit of 100000 entries."
    assert not ws.dest.exists() and ws.snapshot() == before
    # The names seen so far are kept to refuse duplicates: about 100 bytes an entry.
    assert report["rss_growth_kib"] < 32 * 1024, report
    assert report["seconds"] < 10, report


def test_wall_clock_cap(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    class SlowClock:
        """Every look at the clock finds ten more seconds gone."""

        now = 0.0

        def monotonic(self) -> float:
            self.now += 10
            return self.now

    monkeypatch.setattr(archive_module, "time", SlowClock())
    data = tar_of(*[file_entry(f"app/f{i}", b"x") for i in range(20)])
    ws.refuse(gz(data), "took longer than the 120-second limit")


def test_nothing_is_left_after_a_failure_deep_in_a_deep_tree(ws_in_memory: Workspace) -> None:
    ws = ws_in_memory
    depth = 1100  # deeper than Python's recursion limit: cleanup must not recurse
    name = "app/" + "a/" * depth
    data = tar_of(pax({"path": (name + "f").encode()}), file_entry("x", b"1"), file_entry("app/.."))
    ws.refuse(gz(data), "'..' component")
