"""The monitor loop: monitor passes on an interval, in a background thread.

``modelyard serve`` starts one in each control-plane process and ``modelyard monitor run``
runs one in the foreground; the monitor lease lets only one of them act at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelyard.loops import PassLoop

if TYPE_CHECKING:
    from modelyard.monitoring.entities import MonitorPass
    from modelyard.monitoring.service import MonitoringService

__all__ = ["MonitorLoop"]


class MonitorLoop(PassLoop):
    """Run ``MonitoringService.run_once()`` every ``interval`` seconds until :meth:`stop`."""

    name = "monitor"
    service: MonitoringService
    last: MonitorPass | None

    def __init__(self, service: MonitoringService, interval: float = 30.0) -> None:
        super().__init__(service, interval)
