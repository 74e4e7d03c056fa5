"""The monitor loop: monitor passes on an interval, in a background thread.

``modelyard serve`` starts one in its loops process (in a single-process server, in the
worker) and ``modelyard monitor run`` runs one in the foreground; the monitor lease lets
only one of them act at a time.

A pass that closes windows reads the prediction log and profiles it, with pandas and scipy:
some 150 MiB that the process would keep afterwards (modules are never unloaded; freed
memory is only partly given back). So the loops process of ``modelyard serve`` runs each
pass in a short-lived child (:class:`ForkedMonitor`, via :class:`~modelyard.forkserver.
ForkServer`) and stays at its floor between passes; a monitor that runs its passes in
process gives back what it can after each one (:func:`~modelyard.monitoring.heap.give_back`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from modelyard.forkserver import ForkedCallFailed
from modelyard.loops import PassLoop
from modelyard.monitoring.entities import MonitorPass
from modelyard.monitoring.heap import give_back

if TYPE_CHECKING:
    from modelyard.config import Settings
    from modelyard.forkserver import ForkServer
    from modelyard.monitoring.service import MonitoringService
    from modelyard.workspace import Workspace

__all__ = ["ForkedMonitor", "MonitorLoop"]

log = logging.getLogger("modelyard.monitoring")

#: Seconds a forked pass may take before its process is killed (the next pass starts over:
#: windows are rebuilt whole). Longer than any catch-up step seen, far shorter than forever.
PASS_TIMEOUT = 3600.0
#: Seconds a forked pass waits, after it is done, for its alerts' webhooks to be delivered.
WEBHOOK_WAIT = 60.0


class MonitorLoop(PassLoop):
    """Run ``MonitoringService.run_once()`` every ``interval`` seconds until :meth:`stop`."""

    name = "monitor"
    service: MonitoringService | ForkedMonitor
    last: MonitorPass | None

    def __init__(self, service: MonitoringService | ForkedMonitor, interval: float = 30.0) -> None:
        super().__init__(service, interval)

    def after_pass(self) -> None:
        if not isinstance(self.service, ForkedMonitor):  # a child's memory went with it
            give_back()


class ForkedMonitor:
    """The monitor's passes, each in a fresh child of ``fork_server``, for the workspace
    ``ws``: the lease is held as ``ws``'s process (the children act for it), and when a pass
    changed alerts, ``on_alerts`` runs here afterwards (the children have no in-process
    subscribers: the alert triggers are polled instead, see :class:`_Loops` in server.py).
    """

    def __init__(
        self,
        ws: Workspace,
        fork_server: ForkServer,
        on_alerts: Callable[[], object] | None = None,
    ) -> None:
        self.ws = ws
        self.fork_server = fork_server
        self.on_alerts = on_alerts
        self._in_process = False

    def run_once(self, *, lease_seconds: float = 120.0) -> MonitorPass:
        """One pass in a child process (in this one if the fork server is gone); what it did."""
        service = self.ws.monitoring
        if not self.fork_server.alive:
            if not self._in_process:
                log.warning("the monitor's fork server is gone: passes run in this process")
                self._in_process = True
            in_process = service.run_once(lease_seconds=lease_seconds)
            give_back()
            return in_process
        started = datetime.now(UTC)
        try:
            result: MonitorPass = self.fork_server.call(
                forked_pass, self.ws.settings, service.owner, lease_seconds, timeout=PASS_TIMEOUT
            )
        except ForkedCallFailed:
            if self.fork_server.closed:  # stopping: the pass was dropped, not failed
                return MonitorPass(
                    started_at=started,
                    seconds=0.0,
                    windows_closed=0,
                    alerts_changed=0,
                    escalated=0,
                    skipped=True,
                )
            raise
        if (result.alerts_changed or result.escalated) and self.on_alerts is not None:
            try:
                self.on_alerts()
            except Exception:
                log.exception("handling the alerts of a monitor pass failed")
        return result

    def release_lease(self) -> None:
        """Give the lease up (the children held it as this process)."""
        self.ws.monitoring.release_lease()


def forked_pass(settings: Settings, owner: str, lease_seconds: float) -> MonitorPass:
    """In a child process: one monitor pass on a workspace of its own, holding the lease as
    ``owner``; waits for the webhooks of the alerts it changed before it returns."""
    from modelyard.monitoring.service import MonitoringService
    from modelyard.workspace import Workspace

    ws = Workspace.open(settings, migrate=False)
    try:
        service = MonitoringService(ws, owner=owner)
        result = service.run_once(lease_seconds=lease_seconds)
        if not service.alerts.flush_notifications(WEBHOOK_WAIT):
            log.warning("some alert webhooks were still being posted after %.0f s", WEBHOOK_WAIT)
        return result
    finally:
        ws.close()
