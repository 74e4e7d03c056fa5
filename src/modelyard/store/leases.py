"""Leases: one process at a time acts for a background loop, another takes over if it dies.

A lease is a named row with an owner and an expiry (``monitor_leases``, which predates the
other loops). A holder renews it on each pass; a process that stops releases it, and one
that dies loses it when it expires. The row is locked while it is read and written, so two
processes never both believe they hold it.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelyard.store.db import Store
from modelyard.store.tables import MonitorLeaseRow

__all__ = ["Lease", "process_owner"]


def process_owner() -> str:
    """This process's name as a lease owner: the services of one process share a lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """The lease ``name`` in ``store``, held as ``owner``."""

    def __init__(self, store: Store, name: str, owner: str | None = None) -> None:
        self.store = store
        self.name = name
        self.owner = owner or process_owner()

    def take(self, now: datetime, seconds: float) -> bool:
        """Hold (or renew) the lease until ``now + seconds``; False while another live
        owner holds it."""
        try:
            with self.store.write(self.owner) as tx:
                query = select(MonitorLeaseRow).where(MonitorLeaseRow.name == self.name)
                row = tx.session.scalars(query.with_for_update()).one_or_none()
                until = now + timedelta(seconds=seconds)
                if row is None:
                    tx.session.add(
                        MonitorLeaseRow(name=self.name, owner=self.owner, expires_at=until)
                    )
                    tx.session.flush()
                    return True
                if row.owner != self.owner and row.expires_at > now:
                    return False
                row.owner, row.expires_at = self.owner, until
                return True
        except IntegrityError:  # another process created it first
            return False

    def release(self) -> None:
        """Give the lease up, so another process can take over at once."""
        with self.store.write(self.owner) as tx:
            row = tx.session.get(MonitorLeaseRow, self.name)
            if row is not None and row.owner == self.owner:
                tx.session.delete(row)
