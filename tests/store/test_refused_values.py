"""A value the database cannot hold is the request's fault (InvalidInput), not a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from modelyard.config import Settings
from modelyard.errors import InvalidInput
from modelyard.workspace import Workspace


def test_an_integer_beyond_the_database_is_invalid_input(any_workspace: Workspace) -> None:
    store = any_workspace.store
    # SQLite's driver refuses to bind beyond 64 bits; PostgreSQL's INTEGER ends at 2**31 - 1.
    query, value = (
        ("SELECT :v", 10**20) if store.is_sqlite else ("SELECT CAST(:v AS INTEGER)", 2**40)
    )
    with pytest.raises(InvalidInput, match="beyond the database's range"), store.read() as s:
        s.execute(text(query), {"v": value})
    with pytest.raises(InvalidInput, match="beyond the database's range"), store.write("t") as tx:
        tx.session.execute(text(query), {"v": value})


def test_nul_in_text_is_invalid_input_where_it_cannot_be_stored(any_workspace: Workspace) -> None:
    store = any_workspace.store
    with store.read() as s:
        if store.is_sqlite:  # SQLite stores it
            assert s.execute(text("SELECT :v"), {"v": "a\x00b"}).scalar() == "a\x00b"
            return
    with pytest.raises(InvalidInput, match="NUL"), store.read() as s:
        s.execute(text("SELECT CAST(:v AS TEXT)"), {"v": "a\x00b"})


@pytest.mark.postgres
def test_other_data_errors_stay_errors(pg_url: str, tmp_path: Path) -> None:
    """Dividing by zero in SQL is a bug of ours, not the caller's input."""
    from sqlalchemy.exc import DataError

    ws = Workspace.open(Settings(home=tmp_path, database_url=pg_url))
    try:
        with pytest.raises(DataError), ws.store.read() as s:
            s.execute(text("SELECT 1 / 0"))
    finally:
        ws.close()
