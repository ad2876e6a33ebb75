"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from dockyard.db.engine import MIGRATIONS_DIR, make_engine, migrate
from dockyard.db.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)  # applying again is a no-op
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    """An upgrade restarts api, workers and routers at about the same time: each runs
    ``migrate`` on start, and they take turns (an advisory lock) instead of creating the
    same tables twice."""
    engines = [make_engine(postgres_url) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def start_process(engine: Engine) -> None:
        start.wait()
        try:
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_process, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        with engines[0].connect() as connection:
            head = ScriptDirectory.from_config(_config()).get_current_head()
            assert MigrationContext.configure(connection).get_current_revision() == head
    finally:
        for engine in engines:
            engine.dispose()


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# The first migration of the era of separate processes: from here on, the previous
# version's processes run beside the new schema during a rolling upgrade (README,
# "Upgrading and backups").
ROLLING_SINCE = "0011"
# What takes away or changes what the previous version reads and writes.
BREAKING_OPERATIONS = frozenset(
    {"drop_table", "drop_column", "alter_column", "rename_table", "drop_constraint", "drop_index"}
)


def _breaking_changes(path: Path) -> list[str]:
    """What ``upgrade()`` of the migration at ``path`` does that the previous version's
    code could trip on: a removal or change, or a new NOT NULL column with no default
    (the previous version's inserts do not name it)."""
    tree = ast.parse(path.read_text())
    (upgrade,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"]
    found = []
    for node in ast.walk(upgrade):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr in BREAKING_OPERATIONS:
            found.append(f"{path.name}:{node.lineno} {node.func.attr}")
        if node.func.attr == "add_column":
            for column in ast.walk(node):
                if not (isinstance(column, ast.Call) and ast.unparse(column.func) == "sa.Column"):
                    continue
                keywords = {k.arg: ast.unparse(k.value) for k in column.keywords}
                if keywords.get("nullable") == "False" and "server_default" not in keywords:
                    found.append(f"{path.name}:{node.lineno} NOT NULL column with no default")
    return found


def test_migrations_of_a_rolling_upgrade_only_add() -> None:
    versions = sorted(Path(MIGRATIONS_DIR, "versions").glob("[0-9]*.py"))
    rolling = [path for path in versions if path.name[:4] >= ROLLING_SINCE]
    assert rolling, "the migrations directory moved?"
    assert [change for path in rolling for change in _breaking_changes(path)] == []


def test_the_rule_finds_what_would_break_the_previous_version(tmp_path: Path) -> None:
    migration = tmp_path / "0099_example.py"
    migration.write_text(
        "def upgrade():\n"
        "    op.add_column('apps', sa.Column('a', sa.Integer(), nullable=True))\n"
        "    op.add_column('apps', sa.Column('b', sa.Integer(), nullable=False, server_default='0'))\n"
        "    op.add_column('apps', sa.Column('c', sa.Integer(), nullable=False))\n"
        "    with op.batch_alter_table('apps') as batch:\n"
        "        batch.drop_column('d')\n"
        "def downgrade():\n"
        "    op.drop_table('apps')\n"
    )
    assert _breaking_changes(migration) == [
        "0099_example.py:4 NOT NULL column with no default",
        "0099_example.py:6 drop_column",
    ]
