"""A background loop that runs a leased service's passes on an interval.

The monitor and the trigger poller are such services: ``run_once(lease_seconds=...)`` takes
(or renews) a lease in the database and does one pass, ``release_lease()`` gives it up. Any
number of processes may run a loop; the lease lets one act at a time, and another takes over
within a lease period when it stops or dies.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

log = logging.getLogger("modelyard")

__all__ = ["LeasedService", "PassLoop"]


class LeasedService(Protocol):
    def run_once(self, *, lease_seconds: float) -> Any: ...

    def release_lease(self) -> None: ...


class PassLoop:
    """Run ``service.run_once()`` every ``interval`` seconds until :meth:`stop`."""

    #: What the loop is called in thread names and log lines.
    name = "pass"

    def __init__(self, service: LeasedService, interval: float = 30.0) -> None:
        if interval <= 0:
            raise ValueError(f"the {self.name} interval must be positive")
        self.service = service
        self.interval = interval
        self.passes = 0
        self.last: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.run, name=f"modelyard-{self.name}", daemon=True
            )
            self._thread.start()

    def run(self, max_passes: int | None = None) -> None:
        """Run passes in this thread until stopped (or ``max_passes`` are done)."""
        # The lease must outlive the gap between passes, or a second loop would act.
        lease = max(3 * self.interval, 30.0)
        while not self._stop.is_set():
            try:
                self.last = self.service.run_once(lease_seconds=lease)
                self.passes += 1
                errors = getattr(self.last, "errors", None)
                if errors:
                    log.warning("%s pass errors: %s", self.name, "; ".join(errors))
            except Exception:
                log.exception("%s pass failed; retrying in %.0f s", self.name, self.interval)
            self.after_pass()
            if max_passes is not None and self.passes >= max_passes:
                break
            self._stop.wait(self.interval)
        try:
            self.service.release_lease()
        except Exception:
            log.exception("could not release the %s lease", self.name)

    def after_pass(self) -> None:
        """Called after each pass, whether it succeeded or not (nothing here)."""

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
