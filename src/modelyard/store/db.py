"""The metadata store: engine, sessions and migrations.

Reads use :meth:`Store.read`; changes use :meth:`Store.write`, a unit of work that also
collects audit records and hands them to the ``before_commit`` hook inside the same
transaction, so a change and its audit record are committed together or not at all.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.errors import InvalidInput, ModelyardError
from modelyard.store.schema import HEAD_REVISION


def _refused(exc: Exception) -> InvalidInput | None:
    """InvalidInput when the database refused a value of the request (None if it did not).

    The API bounds what it can (names, versions, numbers), so these are the rest: text holding
    U+0000, which PostgreSQL cannot store (SQLite can), and an integer a column cannot hold.
    """
    reason = str(getattr(exc, "orig", None) or exc)
    if "NUL (0x00)" in reason:
        return InvalidInput(
            "a text of the request holds a NUL character (\\u0000), which the database "
            "cannot store; remove it"
        )
    if "number of parameters must be between" in reason or "too many SQL variables" in reason:
        return InvalidInput(
            "the request names more values than one database query takes; split it into "
            "several requests"
        )
    out_of_range = getattr(getattr(exc, "orig", None), "sqlstate", None) == "22003"
    if out_of_range or "too large to convert to SQLite INTEGER" in reason:
        return InvalidInput(f"a number of the request is beyond the database's range ({reason})")
    return None


class StoreUnavailable(ModelyardError):
    """The metadata database cannot be reached."""

    status = 503
    exit_code = 8
    title = "Store unavailable"


@dataclass
class AuditEvent:
    """A change to record in the audit chain."""

    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


@dataclass
class Tx:
    """A write transaction: the session, who is acting, and the audit events it produced."""

    session: Session
    actor: str
    events: list[AuditEvent] = field(default_factory=list)

    def record(
        self,
        action: str,
        entity_type: str,
        entity_id: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Queue an audit record; it is chained and written when the transaction commits."""
        self.events.append(AuditEvent(action, entity_type, entity_id, before, after))

    def record_change(
        self,
        action: str,
        entity_type: str,
        entity_id: str,
        before: dict[str, Any],
        after: dict[str, Any],
    ) -> None:
        """Queue an audit record of an update: only the fields whose values changed."""
        self.record(
            action,
            entity_type,
            entity_id,
            {k: v for k, v in before.items() if after.get(k) != v},
            {k: v for k, v in after.items() if before.get(k) != v},
        )


BeforeCommit = Callable[[Tx], None]


class Store:
    """SQLAlchemy engine plus the session discipline every domain service uses."""

    def __init__(self, url: str, *, before_commit: BeforeCommit | None = None) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.before_commit = before_commit
        self.engine = self._create_engine()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = (
            self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            if self.is_sqlite
            else self.engine
        )
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_size=20, max_overflow=20, pool_pre_ping=True)
        if self.url.database and self.url.database != ":memory:":
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, pool_size=20, max_overflow=20)

        # pysqlite opens transactions lazily and never as IMMEDIATE; take control so that
        # write transactions hold the write lock from the start (no upgrade deadlocks).
        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

        return engine

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; nothing it does is committed."""
        try:
            # Closing (not rolling back) ends the transaction without expiring loaded rows.
            with self._sessions() as session:
                yield session
        except OperationalError as exc:
            # psycopg reports a query with too many parameters as operational too
            raise _refused(exc) or StoreUnavailable(f"metadata database error: {exc.orig}") from exc
        except (DataError, OverflowError) as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            raise refused from exc

    @contextmanager
    def write(self, actor: str) -> Iterator[Tx]:
        """A write transaction acting as ``actor``; committed on success, rolled back on error."""
        try:
            with self._write_sessions() as session, session.begin():
                tx = Tx(session, actor)
                yield tx
                if self.before_commit is not None and tx.events:
                    session.flush()
                    self.before_commit(tx)
        except OperationalError as exc:
            # psycopg reports a query with too many parameters as operational too
            raise _refused(exc) or StoreUnavailable(f"metadata database error: {exc.orig}") from exc
        except (DataError, OverflowError) as exc:
            refused = _refused(exc)
            if refused is None:
                raise
            raise refused from exc

    def migrate(self) -> None:
        """Bring the schema to the newest migration; safe to call from many processes at once.

        A database already at the newest migration is recognised with one query, without
        loading alembic (about 0.3 s of every server start and CLI call).
        """
        if self.at_head():
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._migration_lock(), self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def at_head(self) -> bool:
        """Whether the schema is at the newest migration (the history is one linear chain
        of revisions numbered by their file names, ``0001_...`` onwards)."""
        try:
            with self.engine.connect() as conn:
                current = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError:
            return False  # a new database: no alembic_version table yet
        return [row[0] for row in current] == [HEAD_REVISION]

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.is_sqlite:
            db = self.url.database
            if not db or db == ":memory:":
                yield
                return
            with open(f"{db}.migrate.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(717171)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(717171)"))
                conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()
