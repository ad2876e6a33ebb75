"""Unpack an untrusted tar.gz into a fresh directory: a security boundary.

Every source a user uploads, or a source URL serves, passes through :func:`unpack` before
any build step sees it. Python's ``tarfile`` is deliberately not used: CPython 3.11.7's
extraction filters have known bypasses (CVE-2025-4517 and friends), and ``tarfile`` reads
a whole PAX header into memory before anyone can look at its size. Instead a small
ustar/PAX/GNU header reader runs over a ``gzip`` stream, and every member is checked
before a byte of it is written:

- names: valid UTF-8, no control characters, relative, no ``..``, components of at most
  255 bytes, paths of at most 4096 bytes, no duplicates, nothing below a file or a link;
- types: regular files, directories and symbolic links only (no hard links, devices,
  FIFOs or sparse files); setuid, setgid and sticky bits are dropped;
- symbolic links: created last, once the whole tree is known, and only when the target
  resolves inside the root without passing through another symbolic link;
- caps: bytes written, entries, PAX header size and wall-clock time.

Writes go through a descriptor of ``dest`` with ``O_NOFOLLOW | O_EXCL``, and ``dest``
stays mode 0700 (and root's, when we chown) until the very end, so nobody can swap a
directory for a link while we write. On failure everything written is removed.
"""

from __future__ import annotations

import enum
import gzip
import io
import os
import pathlib
import re
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from dockyard.errors import ArchiveError

GZIP_MAGIC = b"\x1f\x8b"
BLOCK_SIZE = 512
ZERO_BLOCK = bytes(BLOCK_SIZE)
# Large enough that file data moves at disk speed, small enough to be a rounding error
# in the server's memory.
COPY_CHUNK_SIZE = 1024 * 1024
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# A real member carries at most a GNU long name, a GNU long link name and one PAX header
# (plus a leading global header); more in a row is an attempt to loop us through headers.
MAX_HEADERS_PER_MEMBER = 4
MAX_TRAILING_BYTES = 16 * 1024 * 1024
# Top-level names quoted in the "exactly one top-level directory" message.
MAX_NAMES_QUOTED = 5
# Code hosts (git archive) put this global header first; old tar programs unpack it as a
# file of that name.
PAX_GLOBAL_HEADER_NAME = "pax_global_header"

# Any real size has fewer digits; more would only make int() slow or fail.
MAX_SIZE_DIGITS = 20

_OCTAL_FIELD = re.compile(rb"[0-7]*")
_DECIMAL = re.compile(rb"[0-9]+")
# C0 controls (NUL included), DEL and C1 controls: invisible, or terminal escapes in logs.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = 300 * 1024 * 1024  # uncompressed bytes actually written
    max_entries: int = 100_000
    max_seconds: float = 120.0  # wall clock for the whole unpack
    max_pax_bytes: int = 64 * 1024


def unpack(
    archive: pathlib.Path,
    dest: pathlib.Path,
    *,
    limits: ArchiveLimits = ArchiveLimits(),
    owner_uid: int | None = None,
) -> None:
    """Unpack the single top-level directory of ``archive`` (a tar.gz) into ``dest``.

    ``dest`` must not exist or be an empty directory; on success it holds the content of
    the archive's top-level directory. When ``owner_uid`` is given and we run as root,
    everything written (``dest`` included) belongs to that uid and the group of the same
    number. Raises ``ArchiveError`` with a sentence meant for the user when the archive is
    malformed, unsafe or over a limit; ``dest`` is then removed (or left empty if it
    already existed). Nothing is ever written outside ``dest``.
    """
    with archive.open("rb") as compressed:
        if compressed.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            raise ArchiveError("The archive is not gzip-compressed; upload a .tar.gz file.")
        compressed.seek(0)
        chown_to = owner_uid if owner_uid is not None and os.geteuid() == 0 else None
        created_dest = _claim_destination(dest)
        try:
            dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except BaseException:
            _release_destination(dest, created=created_dest)
            raise
        tree = _Tree(dest_fd)
        try:
            _unpack_into(compressed, tree, limits, chown_to)
        except BaseException:
            tree.discard()
            _release_destination(dest, created=created_dest)
            raise
        finally:
            os.close(dest_fd)


def _unpack_into(
    compressed: BinaryIO, tree: _Tree, limits: ArchiveLimits, chown_to: int | None
) -> None:
    if chown_to is not None:
        # Root's until the end: the build user must not enter while we write.
        tree.lock_to_root()
    with gzip.GzipFile(fileobj=compressed, mode="rb") as stream:
        deadline = time.monotonic() + limits.max_seconds
        _Extraction(_TarReader(stream, limits, deadline), tree, limits).run()
    tree.finish(chown_to)


def _claim_destination(dest: pathlib.Path) -> bool:
    """Create ``dest`` (mode 0700) or accept it empty; tell whether we created it."""
    try:
        dest.mkdir(mode=0o700)
    except FileExistsError:
        if dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
            # A caller's mistake, not the user's: never unpack over a previous build.
            raise ValueError(f"{dest} exists and is not an empty directory") from None
        dest.chmod(0o700)
        return False
    return True


def _release_destination(dest: pathlib.Path, *, created: bool) -> None:
    if not created:
        return
    try:
        dest.rmdir()
    except OSError:
        # Only reachable if something outside this module wrote into dest meanwhile; the
        # archive's error is what the caller must see, so clean up as far as we can.
        shutil.rmtree(dest, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Reading tar headers from the decompressed stream


class _TarType(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symbolic link"


@dataclass(frozen=True)
class _RawMember:
    name: bytes
    linkname: bytes
    type: _TarType
    size: int
    mode: int


_MEMBER_TYPES = {
    b"0": _TarType.FILE,
    b"\x00": _TarType.FILE,
    b"7": _TarType.FILE,  # "contiguous file": an ordinary file everywhere that matters
    b"5": _TarType.DIRECTORY,
    b"2": _TarType.SYMLINK,
}
_REJECTED_TYPES = {
    b"1": "is a hard link; hard links are not allowed",
    b"3": "is a character device; device files are not allowed",
    b"4": "is a block device; device files are not allowed",
    b"6": "is a FIFO (named pipe); FIFOs are not allowed",
    b"S": "is a sparse file; sparse files are not supported",
}
_PAX_HEADER = b"x"
_PAX_GLOBAL_HEADER = b"g"
_GNU_LONG_NAME = b"L"
_GNU_LONG_LINK = b"K"
_META_TYPES = {_PAX_HEADER, _PAX_GLOBAL_HEADER, _GNU_LONG_NAME, _GNU_LONG_LINK}


class _TarReader:
    """A forward-only reader of tar members over a decompressed stream.

    Header payloads (PAX, GNU long names) are refused before they are read when over the
    PAX limit, so memory stays bounded whatever the archive claims.
    """

    def __init__(self, stream: io.BufferedIOBase, limits: ArchiveLimits, deadline: float) -> None:
        self._stream = stream
        self._limits = limits
        self._deadline = deadline
        self._data_left = 0  # of the current member, not consumed yet
        self._padding_left = 0
        self._position = 0  # offset in the uncompressed tar, for messages
        self.current_name = b""  # the member being read, quoted only if a message needs it
        self.data_bytes = 0  # of every member read so far, written or not

    def check_clock(self) -> None:
        if time.monotonic() > self._deadline:
            raise ArchiveError(
                f"Unpacking the archive took longer than the "
                f"{self._limits.max_seconds:g}-second limit."
            )

    def next_member(self) -> _RawMember | None:
        """The next file, directory or symbolic link; None at the end of the archive."""
        self.skip_rest_of_member()
        self.current_name = b""
        overrides: dict[str, bytes] = {}
        for _ in range(MAX_HEADERS_PER_MEMBER + 1):
            self.check_clock()
            block = self._read(BLOCK_SIZE, at_boundary=True)
            if not block or block == ZERO_BLOCK:
                return None
            header = _parse_header(block, self._position - BLOCK_SIZE)
            typeflag = block[156:157]
            if typeflag in _META_TYPES:
                self._read_meta_header(typeflag, header, overrides)
                continue
            return self._member(typeflag, header, overrides)
        raise ArchiveError(
            f"The archive has more than {MAX_HEADERS_PER_MEMBER} extended headers in a row "
            f"near byte {self._position}; it is not a tar file this server accepts."
        )

    def copy_member_data(self, fd: int, on_chunk: Callable[[int], None]) -> None:
        """Write the current member's data to ``fd`` in chunks, calling ``on_chunk(n)``."""
        while self._data_left:
            chunk = self._read(min(COPY_CHUNK_SIZE, self._data_left))
            self._data_left -= len(chunk)
            on_chunk(len(chunk))
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            self.check_clock()

    def skip_rest_of_member(self) -> None:
        while self._data_left:
            self._data_left -= len(self._read(min(COPY_CHUNK_SIZE, self._data_left)))
            self.check_clock()
        self._read(self._padding_left)
        self._padding_left = 0

    def drain(self) -> None:
        """Read what follows the end of the archive so gzip verifies its checksum.

        Tar programs pad archives to their record size, a few KiB to 1 MiB; far more
        after the end is a way to keep us decompressing, not padding.
        """
        trailing = 0
        while chunk := self._read_up_to(COPY_CHUNK_SIZE):
            trailing += len(chunk)
            if trailing > MAX_TRAILING_BYTES:
                raise ArchiveError(
                    f"The archive has more than {_human_bytes(MAX_TRAILING_BYTES)} of data "
                    f"after its end."
                )
            self.check_clock()

    def _member(self, typeflag: bytes, header: _Header, overrides: dict[str, bytes]) -> _RawMember:
        name = overrides.get("path") or header.name
        self.current_name = name
        size = int(overrides["size"]) if "size" in overrides else header.size
        if typeflag in _REJECTED_TYPES:
            raise ArchiveError(f"The archive entry {_quoted(name)} {_REJECTED_TYPES[typeflag]}.")
        member_type = _MEMBER_TYPES.get(typeflag)
        if typeflag == b"\x00" and name.endswith(b"/"):
            member_type = _TarType.DIRECTORY  # pre-POSIX tar marked directories this way
        if member_type is None:
            raise ArchiveError(
                f"The archive entry {_quoted(name)} has an unsupported tar type "
                f"{typeflag.decode('latin-1')!r}; only files, directories and symbolic "
                f"links are allowed."
            )
        if member_type is not _TarType.FILE and size:
            # Tar programs disagree on whether such data exists; refuse the ambiguity.
            raise ArchiveError(
                f"The archive entry {_quoted(name)} is a {member_type.value} "
                f"but carries {size} bytes of data."
            )
        self._data_left = size
        self._padding_left = _padding(size)
        self.data_bytes += size
        return _RawMember(
            name=name,
            linkname=overrides.get("linkpath") or header.linkname,
            type=member_type,
            size=size,
            mode=header.mode,
        )

    def _read_meta_header(
        self, typeflag: bytes, header: _Header, overrides: dict[str, bytes]
    ) -> None:
        if header.size > self._limits.max_pax_bytes:
            raise ArchiveError(
                f"The archive has an extended (PAX) header of {_human_bytes(header.size)} "
                f"at byte {self._position - BLOCK_SIZE}, over the "
                f"{_human_bytes(self._limits.max_pax_bytes)} limit."
            )
        payload = self._read(header.size + _padding(header.size))[: header.size]
        if typeflag == _PAX_HEADER:
            overrides.update(_parse_pax(payload))
        elif typeflag == _PAX_GLOBAL_HEADER:
            # Code hosts record the commit here; nothing in it changes what we write.
            _parse_pax(payload)
        elif typeflag == _GNU_LONG_NAME:
            overrides["path"] = payload.rstrip(b"\x00")
        else:
            overrides["linkpath"] = payload.rstrip(b"\x00")

    def _read(self, size: int, *, at_boundary: bool = False) -> bytes:
        """Read ``size`` bytes; nothing at all is allowed only where ``at_boundary`` says."""
        data = self._read_up_to(size)
        if len(data) != size and not (at_boundary and not data):
            raise ArchiveError(self._truncated_message())
        return data

    def _read_up_to(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except EOFError:
            raise ArchiveError(self._truncated_message()) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise ArchiveError(f"The archive's compressed data is corrupt ({exc}).") from None
        self._position += len(data)
        return data

    def _truncated_message(self) -> str:
        if self.current_name:
            return (
                f"The archive is truncated: it ends inside the entry {_quoted(self.current_name)}."
            )
        return "The archive is truncated: its data ends before the end of the archive."


@dataclass(frozen=True)
class _Header:
    name: bytes
    linkname: bytes
    size: int
    mode: int


def _parse_header(block: bytes, position: int) -> _Header:
    def invalid(reason: str) -> ArchiveError:
        return ArchiveError(
            f"The archive is not a valid tar file: {reason} in the header at byte {position}."
        )

    stored_checksum = _parse_number(block[148:156])
    unsigned_sum = sum(block) - sum(block[148:156]) + 8 * ord(" ")
    if stored_checksum != unsigned_sum and stored_checksum != _signed_checksum(block):
        raise invalid("bad checksum")
    size = _parse_number(block[124:136])
    mode = _parse_number(block[100:108])
    if size is None or mode is None:
        raise invalid("bad number")
    name = _nul_terminated(block[0:100])
    # Only POSIX ustar has a name prefix; GNU tar keeps timestamps in the same bytes.
    if block[257:263] == b"ustar\x00":
        prefix = _nul_terminated(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    return _Header(name=name, linkname=_nul_terminated(block[157:257]), size=size, mode=mode)


def _signed_checksum(block: bytes) -> int:
    # Some old tar programs summed signed chars; rare, so only computed on a mismatch.
    signed = [byte - 256 if byte > 127 else byte for byte in block]
    return sum(signed) - sum(signed[148:156]) + 8 * ord(" ")


def _parse_number(field: bytes) -> int | None:
    """An octal tar number, or GNU base-256 for large ones; None when malformed."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        return None  # negative base-256: nothing we accept is negative
    digits = field.split(b"\x00", 1)[0].strip(b" ")
    if not _OCTAL_FIELD.fullmatch(digits):
        return None
    return int(digits, 8) if digits else 0


def _nul_terminated(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def _padding(size: int) -> int:
    return -size % BLOCK_SIZE


def _parse_pax(payload: bytes) -> dict[str, bytes]:
    """The records of a PAX extended header that change what we write."""
    records: dict[str, bytes] = {}
    position = 0
    while position < len(payload):
        space = payload.find(b" ", position)
        length_digits = payload[position:space] if space != -1 else b""
        if not _DECIMAL.fullmatch(length_digits):
            raise _malformed_pax()
        end = position + int(length_digits)
        record = payload[space + 1 : end]
        if end > len(payload) or end <= space + 1 or not record.endswith(b"\n"):
            raise _malformed_pax()
        keyword, equals, value = record[:-1].partition(b"=")
        if not equals:
            raise _malformed_pax()
        if keyword.startswith(b"GNU.sparse."):
            raise ArchiveError(
                "The archive contains a sparse file; sparse files are not supported."
            )
        if keyword in (b"path", b"linkpath"):
            records[keyword.decode()] = value
        elif keyword == b"size":
            if not _DECIMAL.fullmatch(value) or len(value) > MAX_SIZE_DIGITS:
                raise _malformed_pax()
            records["size"] = value
        position = end
    return records


def _malformed_pax() -> ArchiveError:
    return ArchiveError("The archive has a malformed extended (PAX) header.")


# --------------------------------------------------------------------------------------
# Checking names and writing the tree


class _Kind(enum.Enum):
    IMPLIED_DIRECTORY = enum.auto()  # created because an entry below it came first
    DIRECTORY = enum.auto()
    FILE = enum.auto()
    SYMLINK = enum.auto()


class _Tree:
    """What has been written below ``dest``, by path relative to it.

    Every operation goes through the descriptor of ``dest`` and never follows a link in
    the last component; the parents it passes are directories this class created.
    """

    def __init__(self, dest_fd: int) -> None:
        self._dest_fd = dest_fd
        self.kinds: dict[str, _Kind] = {}
        self._directory_modes: dict[str, int] = {}
        self._root_mode = 0o755
        self._symlinks: list[tuple[str, str]] = []

    def kind(self, path: str) -> _Kind | None:
        return self.kinds.get(path)

    def set_root_mode(self, mode: int) -> None:
        self._root_mode = _directory_mode(mode)

    def make_directory(self, path: str, mode: int | None) -> None:
        existing = self.kinds.get(path)
        if existing is None:
            self.kinds[path] = _Kind.DIRECTORY if mode is not None else _Kind.IMPLIED_DIRECTORY
            os.mkdir(path, 0o700, dir_fd=self._dest_fd)
        elif existing is _Kind.IMPLIED_DIRECTORY and mode is not None:
            self.kinds[path] = _Kind.DIRECTORY
        # Modes are applied at the end so a read-only directory cannot block its entries.
        self._directory_modes[path] = 0o755 if mode is None else _directory_mode(mode)

    def open_file(self, path: str) -> int:
        self.kinds[path] = _Kind.FILE  # recorded first, so a failure mid-write cleans it
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(path, flags, 0o600, dir_fd=self._dest_fd)

    def add_symlink(self, path: str, target: str) -> None:
        """Record a link; it is created by ``create_symlinks`` once the tree is complete."""
        self.kinds[path] = _Kind.SYMLINK
        self._symlinks.append((path, target))

    @property
    def symlinks(self) -> list[tuple[str, str]]:
        return self._symlinks

    def create_symlinks(self) -> None:
        for path, target in self._symlinks:
            os.symlink(target, path, dir_fd=self._dest_fd)

    def finish(self, owner_uid: int | None) -> None:
        for path, mode in self._directory_modes.items():
            os.chmod(path, mode, dir_fd=self._dest_fd, follow_symlinks=False)
        if owner_uid is not None:
            for path in self.kinds:
                os.chown(path, owner_uid, owner_uid, dir_fd=self._dest_fd, follow_symlinks=False)
            # Last: until now only root could enter dest.
            os.fchown(self._dest_fd, owner_uid, owner_uid)
        os.fchmod(self._dest_fd, self._root_mode)

    def lock_to_root(self) -> None:
        os.fchown(self._dest_fd, 0, 0)

    def discard(self) -> None:
        """Remove everything recorded, deepest first (no recursion, whatever the depth)."""
        for path in sorted(self.kinds, key=lambda p: p.count("/"), reverse=True):
            try:
                if self.kinds[path] in (_Kind.DIRECTORY, _Kind.IMPLIED_DIRECTORY):
                    os.rmdir(path, dir_fd=self._dest_fd)
                else:
                    os.unlink(path, dir_fd=self._dest_fd)
            except FileNotFoundError:
                pass  # recorded before it was created (links are created last)


def _directory_mode(mode: int) -> int:
    # Permission bits only (no setuid/setgid/sticky); the build user owns the tree and
    # must be able to enter and write it, as it could chmod it anyway.
    return (mode & 0o777) | 0o700


def _file_mode(mode: int) -> int:
    return (mode & 0o777) | 0o600


class _Extraction:
    """Checks each member against everything seen so far, then writes it."""

    def __init__(self, reader: _TarReader, tree: _Tree, limits: ArchiveLimits) -> None:
        self._reader = reader
        self._tree = tree
        self._limits = limits
        self._root_name: str | None = None
        self._root_entry_seen = False
        self._last_checked_parent = ""  # "" is dest itself, which needs no check
        self._entries = 0
        self._bytes_written = 0

    def run(self) -> None:
        while (member := self._reader.next_member()) is not None:
            self._count_entry()
            self._extract(member)
        self._reader.drain()
        if self._root_name is None:
            raise ArchiveError(
                "The archive must contain exactly one top-level directory; it is empty."
            )
        for path, target in self._tree.symlinks:
            self._check_symlink_target(path, target)
        self._tree.create_symlinks()

    def _count_entry(self) -> None:
        self._entries += 1
        if self._entries > self._limits.max_entries:
            raise ArchiveError(
                f"The archive has more than the limit of {self._limits.max_entries} entries."
            )

    def _extract(self, member: _RawMember) -> None:
        parts = _checked_path(member.name)
        if not parts:  # "./" itself
            if member.type is not _TarType.DIRECTORY:
                raise ArchiveError(f"The archive entry {_quoted(member.name)} has an empty name.")
            return
        if len(parts) == 1 and member.type is _TarType.FILE and parts[0] == PAX_GLOBAL_HEADER_NAME:
            # Written by old tar programs from a code host's global header. Skipped, not
            # written, but its data still costs decompression, so it counts against the cap.
            if member.size > self._limits.max_pax_bytes:
                raise ArchiveError(
                    f"The archive entry {_quoted(member.name)} is {_human_bytes(member.size)}, "
                    f"too large for a global header."
                )
            return
        top, relative = parts[0], parts[1:]
        if not relative:
            self._extract_root(top, member)
            return
        if self._root_name is None:
            self._root_name = top
        elif top != self._root_name:
            self._refuse_top_level(top, member)
        path = "/".join(relative)
        self._check_new_path(path, relative, member)
        if member.type is _TarType.DIRECTORY:
            self._tree.make_directory(path, member.mode)
        elif member.type is _TarType.SYMLINK:
            self._tree.add_symlink(path, _checked_link_target(member))
        else:
            self._write_file(path, member)

    def _extract_root(self, top: str, member: _RawMember) -> None:
        if member.type is not _TarType.DIRECTORY:
            if top == self._root_name:
                raise _duplicate(member)
            self._refuse_top_level(top, member)
        if self._root_name is None:
            self._root_name = top
        elif top != self._root_name:
            self._refuse_top_level(top, member)
        if self._root_entry_seen:
            raise _duplicate(member)
        self._root_entry_seen = True
        self._tree.set_root_mode(member.mode)

    def _check_new_path(self, path: str, relative: list[str], member: _RawMember) -> None:
        existing = self._tree.kind(path)
        if existing is _Kind.IMPLIED_DIRECTORY and member.type is not _TarType.DIRECTORY:
            raise ArchiveError(
                f"The archive entry {_quoted(member.name)} is a {member.type.value}, but "
                f"earlier entries use it as a directory."
            )
        if existing is not None and existing is not _Kind.IMPLIED_DIRECTORY:
            raise _duplicate(member)
        parent_path = path.rpartition("/")[0]
        if parent_path == self._last_checked_parent:
            return  # archives list a directory's entries together: checked a moment ago
        for depth in range(1, len(relative)):
            parent = "/".join(relative[:depth])
            parent_kind = self._tree.kind(parent)
            if parent_kind is None:
                self._tree.make_directory(parent, None)
            elif parent_kind is _Kind.SYMLINK:
                raise ArchiveError(
                    f"The archive entry {_quoted(member.name)} lies inside {_quoted(parent)}, "
                    f"which is a symbolic link; entries may not be written through links."
                )
            elif parent_kind is _Kind.FILE:
                raise ArchiveError(
                    f"The archive entry {_quoted(member.name)} lies inside {_quoted(parent)}, "
                    f"which is a file."
                )
        self._last_checked_parent = parent_path

    def _write_file(self, path: str, member: _RawMember) -> None:
        if self._bytes_written + member.size > self._limits.max_bytes:
            raise self._too_big(member.name)
        fd = self._tree.open_file(path)
        try:
            self._reader.copy_member_data(fd, self._count_bytes)
            os.fchmod(fd, _file_mode(member.mode))
        finally:
            os.close(fd)

    def _count_bytes(self, written: int) -> None:
        self._bytes_written += written
        if self._bytes_written > self._limits.max_bytes:
            raise self._too_big(self._reader.current_name)

    def _too_big(self, name: bytes) -> ArchiveError:
        return ArchiveError(
            f"The archive unpacks to more than the {_human_bytes(self._limits.max_bytes)} "
            f"limit (reached at the entry {_quoted(name)})."
        )

    def _check_symlink_target(self, path: str, target: str) -> None:
        """Resolve ``target`` as the kernel would, refusing any step outside the root.

        Lexical resolution matches the kernel's only while no component passed through is
        itself a link, hence the second rule (the chains that fooled tarfile's filter).
        """
        display = _quoted(f"{self._root_name}/{path}")
        if target.startswith("/"):
            raise _link_outside(display, target)
        resolved = path.split("/")[:-1]
        steps = [step for step in target.split("/") if step not in ("", ".")]
        for index, step in enumerate(steps):
            if step == "..":
                if not resolved:
                    raise _link_outside(display, target)
                resolved.pop()
                continue
            resolved.append(step)
            passes_through = index < len(steps) - 1
            if passes_through and self._tree.kind("/".join(resolved)) is _Kind.SYMLINK:
                raise ArchiveError(
                    f"The archive entry {display} is a symbolic link to {_quoted(target)}, "
                    f"which passes through another symbolic link "
                    f"({_quoted(f'{self._root_name}/' + '/'.join(resolved))}); links may not "
                    f"go through linked directories."
                )

    def _refuse_top_level(self, top: str, member: _RawMember) -> None:
        """Raise the "exactly one top-level directory" error, listing every top-level name."""
        # A dict keeps the order names were seen in, with set-speed membership.
        names = dict.fromkeys([self._root_name] if self._root_name is not None else [])
        names[top] = None
        lone_non_directory = self._root_name is None
        try:
            # Only headers are read from here on, within the same caps as an unpack.
            while (more := self._reader.next_member()) is not None:
                self._count_entry()
                if self._reader.data_bytes > self._limits.max_bytes:
                    break
                parts = [p for p in more.name.split(b"/") if p not in (b"", b".")]
                name = parts[0].decode("utf-8", "backslashreplace") if parts else top
                if name not in names and name != PAX_GLOBAL_HEADER_NAME:
                    names[name] = None
                    lone_non_directory = False
        except ArchiveError:
            pass  # the listing is best effort; the top-level problem is the one to report
        if len(names) == 1 and lone_non_directory:
            raise ArchiveError(
                f"The archive must contain exactly one top-level directory; it contains only "
                f"the {member.type.value} {_quoted(top)}."
            )
        self._raise_top_level_names(list(names))

    @staticmethod
    def _raise_top_level_names(names: list[str]) -> None:
        quoted = ", ".join(_quoted(name) for name in names[:MAX_NAMES_QUOTED])
        if len(names) > MAX_NAMES_QUOTED:
            quoted += f" and {len(names) - MAX_NAMES_QUOTED} more"
        raise ArchiveError(
            f"The archive must contain exactly one top-level directory; it contains "
            f"{len(names)}: {quoted}."
        )


def _link_outside(display: str, target: str) -> ArchiveError:
    return ArchiveError(
        f"The archive entry {display} is a symbolic link to {_quoted(target)}, which points "
        f"outside the application directory."
    )


def _duplicate(member: _RawMember) -> ArchiveError:
    return ArchiveError(f"The archive contains the entry {_quoted(member.name)} more than once.")


def _checked_path(raw: bytes) -> list[str]:
    """The components of an entry's name, once the name is known to be safe."""
    name = _checked_text(raw, raw, "path")
    if name.startswith("/"):
        raise ArchiveError(
            f"The archive entry {_quoted(raw)} has an absolute path; entries must be relative."
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(
            f"The archive entry {_quoted(raw)} contains a '..' component, which could write "
            f"outside the application directory."
        )
    return parts


def _checked_link_target(member: _RawMember) -> str:
    if not member.linkname:
        raise ArchiveError(
            f"The archive entry {_quoted(member.name)} is a symbolic link with no target."
        )
    return _checked_text(member.linkname, member.name, "link target")


def _checked_text(raw: bytes, entry_name: bytes, what: str) -> str:
    """``raw`` (the entry's path or link target) decoded, once it is known to be sane."""
    if len(raw) > MAX_PATH_BYTES:
        raise ArchiveError(
            f"The archive entry {_quoted(entry_name)} has a {what} longer than "
            f"{MAX_PATH_BYTES} bytes."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(
            f"The archive entry {_quoted(entry_name)} has a {what} that is not valid UTF-8."
        ) from None
    if _CONTROL_CHARACTER.search(text):
        raise ArchiveError(
            f"The archive entry {_quoted(entry_name)} has a control character in its {what}."
        )
    if max(map(len, raw.split(b"/"))) > MAX_NAME_BYTES:
        raise ArchiveError(
            f"The archive entry {_quoted(entry_name)} has a {what} with a component longer "
            f"than {MAX_NAME_BYTES} bytes."
        )
    return text


def _quoted(name: bytes | str, limit: int = 100) -> str:
    """A name as a user can read it in a message: quoted, escaped, shortened."""
    text = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name
    text = _CONTROL_CHARACTER.sub(lambda match: f"\\x{ord(match[0]):02x}", text)
    if len(text) > limit:
        # Both ends: the root says where it is, the last component what it is.
        text = text[: limit * 2 // 3] + "…" + text[-(limit // 3) :]
    return f"'{text}'"


def _human_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"
