"""Alembic migrations produce exactly the schema the tables declare, safely and idempotently."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from modelyard.store import Store
from modelyard.store import db as store_module
from modelyard.store.tables import Base


def _differences(store: Store) -> list:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def _tables(store: Store) -> set[str]:
    return set(inspect(store.engine).get_table_names()) - {"alembic_version"}


def _revision(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The URL of a brand-new, empty database (not migrated)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    dbs = request.getfixturevalue("pg_databases")
    name = f"modelyard_e_{uuid.uuid4().hex[:12]}"
    dbs._execute(f'CREATE DATABASE "{name}"')
    try:
        yield dbs.url(name)
    finally:
        dbs.drop(name)


def _head() -> str:
    """The newest migration in the package."""
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import modelyard.store

    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(modelyard.store.__file__).parent / "migrations")
    )
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_fresh_database_matches_the_table_definitions(empty_url: str) -> None:
    store = Store(empty_url)
    try:
        assert _tables(store) == set()
        store.migrate()
        assert _tables(store) == set(Base.metadata.tables)
        assert _differences(store) == []
        assert _revision(store) == [_head()]
    finally:
        store.dispose()


def test_migrate_twice_is_a_no_op(empty_url: str) -> None:
    store = Store(empty_url)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, name, role, created_at, disabled) "
                    "VALUES ('01ARZ3NDEKTSV4RRFFQ69G5FAV', 'kept', 'viewer', "
                    "CURRENT_TIMESTAMP, false)"
                )
            )
        schema_before = {
            t: sorted(c["name"] for c in inspect(store.engine).get_columns(t))
            for t in _tables(store)
        }
        store.migrate()
        again = Store(empty_url)  # a second process-like opener
        again.migrate()
        again.dispose()
        schema_after = {
            t: sorted(c["name"] for c in inspect(store.engine).get_columns(t))
            for t in _tables(store)
        }
        assert schema_after == schema_before
        assert _revision(store) == [_head()]
        assert _differences(store) == []
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["kept"]
    finally:
        store.dispose()


MIGRATOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelyard.store import Store

    url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    store = Store(url)
    ready.write_text("")
    while not go.exists():
        time.sleep(0.005)
    store.migrate()
    store.dispose()
    print("migrated")
    """
)


@pytest.mark.slow
def test_four_processes_migrate_one_new_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    go = tmp_path / "go"
    procs = []
    for i in range(4):
        ready = tmp_path / f"ready-{i}"
        procs.append(
            (
                ready,
                subprocess.Popen(
                    [sys.executable, "-c", MIGRATOR, url, str(ready), str(go)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                ),
            )
        )
    deadline = time.monotonic() + 60
    while not all(r.exists() for r, _ in procs):
        assert all(p.poll() is None for _, p in procs), "a migrator died before the start"
        assert time.monotonic() < deadline, "migrators never got ready"
        time.sleep(0.01)
    go.write_text("")
    for _, p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-3000:]
        assert out.decode().strip() == "migrated"
    store = Store(url)
    try:
        assert _tables(store) == set(Base.metadata.tables)
        assert _revision(store) == [_head()]
        assert _differences(store) == []
    finally:
        store.dispose()


def test_a_database_at_head_is_recognised_without_alembic(empty_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    store = Store(empty_url)
    assert not store.at_head()  # no alembic_version table yet
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store_module.__file__).parent / "migrations"))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    assert not store.at_head()  # one migration behind: migrate() must still upgrade
    store.migrate()
    assert store.at_head() and _revision(store) == [store_module.HEAD_REVISION]
    assert _differences(store) == []
    store.dispose()
