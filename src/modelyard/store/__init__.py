"""Metadata store: SQLAlchemy tables, Alembic migrations, sessions."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.store.db import AuditEvent, Store, StoreUnavailable, Tx

__all__ = ["AuditEvent", "Store", "StoreUnavailable", "Tx"]


def __getattr__(name: str) -> Any:
    # SQLAlchemy loads on first use, so that modelyard.store.schema can be read without it
    # (a server's check that nothing needs migrating, before its workers start).
    if name in __all__:
        from modelyard.store import db

        return getattr(db, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
