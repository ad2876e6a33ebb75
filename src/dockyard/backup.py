"""``dockyard admin backup`` / ``restore``: dockyard's own database, for disaster recovery.

    SQLite      SQLite's online backup API: a consistent copy while the server runs and
                writes (WAL), written beside the target and renamed into place
    PostgreSQL  ``pg_dump --format=custom`` (a consistent snapshot, the server running);
                restored with ``pg_restore`` into an empty database

A restore goes into an empty data dir or database only: restoring over a live one would
mix two histories. Blobs (sources, slugs), caches and app log files are not in the
database; releases are rebuilt by deploying again (docs: README, "Backups").
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import inspect

from dockyard.db.engine import make_engine, normalise_url
from dockyard.errors import DockyardError

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
PG_TIMEOUT_SECONDS = 3600


class BackupError(DockyardError):
    """A backup or restore could not be made; the message says why and what to do."""


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def _libpq_url(url: str) -> str:
    return normalise_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def backup_database(database_url: str, target: Path) -> str:
    """Write a backup of the database at ``database_url`` to ``target``; its kind."""
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    source = _sqlite_path(database_url)
    try:
        if source is not None:
            if not source.is_file():
                raise BackupError(f"There is no database at {source}: check DOCKYARD_DATA_DIR.")
            _sqlite_copy(source, partial)
            kind = "SQLite"
        else:
            _run(
                ["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                 f"--file={partial}", f"--dbname={_libpq_url(database_url)}"],
                "pg_dump",
            )
            kind = "PostgreSQL"
        os.chmod(partial, 0o600)  # it holds token digests and app variables
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return kind


def restore_database(database_url: str, backup: Path) -> str:
    """Load ``backup`` into the empty database at ``database_url``; its kind."""
    try:
        with backup.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise BackupError(f"Cannot read the backup {backup}: {exc.strerror}.") from None
    target = _sqlite_path(database_url)
    if target is not None:
        if not magic.startswith(SQLITE_MAGIC):
            raise BackupError(f"{backup} is not a backup of a SQLite database.")
        if target.exists() and target.stat().st_size > 0:
            raise BackupError(
                f"{target} already exists: restore into an empty data dir (DOCKYARD_DATA_DIR)."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            _sqlite_copy(backup, partial)
            os.chmod(partial, 0o600)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return "SQLite"
    if not magic.startswith(PG_DUMP_MAGIC):
        raise BackupError(f"{backup} is not a backup of a PostgreSQL database (pg_dump).")
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise BackupError(
            "The database in DOCKYARD_DATABASE_URL is not empty: restore into a new one "
            "(createdb), then point dockyard at it."
        )
    _run(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
         f"--dbname={_libpq_url(database_url)}", str(backup)],
        "pg_restore",
    )
    return "PostgreSQL"


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (other connections may be writing)."""
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    src.close()
    dst.close()


def _run(argv: list[str], tool: str) -> None:
    if shutil.which(argv[0]) is None:
        raise BackupError(
            f"{tool} is not installed: install the PostgreSQL client (apt-get install "
            "postgresql-client) in the version of the server or newer."
        )
    try:
        subprocess.run(
            argv, check=True, capture_output=True, text=True, timeout=PG_TIMEOUT_SECONDS
        )
    except subprocess.CalledProcessError as exc:
        output = (exc.stderr or exc.stdout or "").strip()
        raise BackupError(
            f"{tool} failed (exit status {exc.returncode}): {output or 'no output'}"
        ) from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"{tool} did not finish within {PG_TIMEOUT_SECONDS} seconds.") from None
