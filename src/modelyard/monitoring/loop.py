"""The monitor loop: a background thread that runs monitor passes on an interval.

``modelyard serve`` starts one in each control-plane process and ``modelyard monitor run``
runs one in the foreground; the monitor lease lets only one of them act at a time, and the
others take over within a lease period when it stops or dies.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from modelyard.monitoring.entities import MonitorPass

if TYPE_CHECKING:
    from modelyard.monitoring.service import MonitoringService

log = logging.getLogger("modelyard.monitoring")

__all__ = ["MonitorLoop"]


class MonitorLoop:
    """Run ``service.run_once()`` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, service: MonitoringService, interval: float = 30.0) -> None:
        if interval <= 0:
            raise ValueError("the monitor interval must be positive")
        self.service = service
        self.interval = interval
        self.passes = 0
        self.last: MonitorPass | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="modelyard-monitor", daemon=True)
            self._thread.start()

    def run(self, max_passes: int | None = None) -> None:
        """Run passes in this thread until stopped (or ``max_passes`` are done)."""
        # The lease must outlive the gap between passes, or a second monitor would act.
        lease = max(3 * self.interval, 30.0)
        while not self._stop.is_set():
            try:
                self.last = self.service.run_once(lease_seconds=lease)
                self.passes += 1
                if self.last.errors:
                    log.warning("monitor pass errors: %s", "; ".join(self.last.errors))
            except Exception:
                log.exception("monitor pass failed; retrying in %.0f s", self.interval)
            if max_passes is not None and self.passes >= max_passes:
                break
            self._stop.wait(self.interval)
        try:
            self.service.release_lease()
        except Exception:
            log.exception("could not release the monitor lease")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
