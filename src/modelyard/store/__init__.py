"""Metadata store: SQLAlchemy tables, Alembic migrations, sessions."""

from modelyard.store.db import AuditEvent, Store, StoreUnavailable, Tx

__all__ = ["AuditEvent", "Store", "StoreUnavailable", "Tx"]
