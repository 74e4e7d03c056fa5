"""What the monitoring domain hands out (besides drift, performance, alert and KPI results)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from modelyard.monitoring.drift import DriftReport

__all__ = [
    "EndpointDrift",
    "EndpointStatus",
    "MonitorPass",
    "OpsWindow",
    "ReferenceProfile",
    "WindowSummary",
]


class ReferenceProfile(BaseModel):
    """The reference profile of a model version (``profile`` only when asked for)."""

    model: str
    version: int
    source: str
    rows: int
    features: list[str]
    created_at: datetime
    profile: dict[str, Any] | None = None


class OpsWindow(BaseModel):
    """Operational figures of one window: traffic, failures and latency percentiles."""

    window_start: datetime
    window_end: datetime
    version: int | None = None  # None: all versions together
    requests: int
    rows: int
    errors: int
    error_rate: float | None
    throughput_rps: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


class EndpointDrift(BaseModel):
    """A drift report with what it compares: one version's traffic in a time range."""

    endpoint: str
    model: str
    version: int
    granularity: int
    start: datetime
    end: datetime
    reference_source: str
    report: DriftReport


class WindowSummary(BaseModel):
    """The newest closed window of one granularity, as the status page shows it."""

    granularity: int
    window_start: datetime | None
    closed_until: datetime | None
    requests: int = 0
    error_rate: float | None = None
    latency_p99_ms: float | None = None
    drift_status: str | None = None  # ok | drift | insufficient | no-reference
    drifted_features: list[str] = Field(default_factory=list)


class EndpointStatus(BaseModel):
    """One endpoint's monitoring at a glance."""

    endpoint: str
    windows: list[WindowSummary]
    open_alerts: int
    feedback: int
    feedback_pending: int = 0  # labels held until their predictions are logged
    feedback_expired: int = 0  # held labels whose predictions never appeared (kept 30 days)
    feedback_rejected: int = 0  # held labels that did not fit their prediction (kept 30 days)


class MonitorPass(BaseModel):
    """What one pass of the monitor did."""

    started_at: datetime
    seconds: float
    windows_closed: int
    alerts_changed: int
    escalated: int
    feedback_joined: int = 0  # held labels whose predictions have landed, now stored
    feedback_expired: int = 0  # held labels that expired or were rejected in this pass
    windows_reevaluated: int = 0  # closed windows checked again because late labels arrived
    skipped: bool = False  # another monitor holds the lease
    errors: list[str] = Field(default_factory=list)
