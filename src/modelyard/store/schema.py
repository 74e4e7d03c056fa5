"""What the schema's newest revision is, and whether a SQLite file is at it, without SQLAlchemy.

A server checks this before it forks its workers; SQLAlchemy and the table definitions are
a third of a gateway's start-up and are not needed when nothing has to be migrated.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

#: The largest value of an Integer column (PostgreSQL's INTEGER is 32 bits): versions, rows,
#: seconds. A number a request brings for one is bounded by it, or the database refuses it.
MAX_INTEGER = 2**31 - 1
#: The largest value of a BigInteger column (steps, sizes, counts).
MAX_BIGINT = 2**63 - 1

#: The newest migration: versions are named ``NNNN_description.py`` with revision id NNNN.
HEAD_REVISION = max(
    p.name.split("_", 1)[0]
    for p in (Path(__file__).parent / "migrations" / "versions").glob("[0-9]*_*.py")
)


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL (None for other databases, memory, options)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :]
    if not path or path == ":memory:" or "?" in path:
        return None
    return Path(path)


def read_sqlite(url: str, query: str) -> list[tuple[Any, ...]] | None:
    """Rows of ``query`` on the SQLite file of ``url``; None if that cannot be done.

    None for other databases, a file that does not exist (it is not created), or any error.
    """
    path = sqlite_file(url)
    if path is None or not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            return conn.execute(query).fetchall()
    except sqlite3.Error:
        return None


def sqlite_at_head(url: str) -> bool:
    """Whether ``url`` is a SQLite file whose schema is at :data:`HEAD_REVISION`."""
    return read_sqlite(url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
