"""What the monitoring domain hands out (besides drift, performance, alert and KPI results)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelyard.monitoring.drift import DriftReport

__all__ = [
    "DeadlineSummary",
    "EndpointDrift",
    "EndpointStatus",
    "MonitorPass",
    "OpsWindow",
    "ReferenceProfile",
    "VariantDeadline",
    "WindowDrift",
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


class VariantDeadline(BaseModel):
    """What one variant (one model version) did with the window's requests that had a deadline.

    ``quality`` is the value of the endpoint's ``quality_metric`` its answers are weighed by in
    effective accuracy; ``quality_source`` says where it comes from: ``window`` (labels of its
    answers in time in this window), ``feedback`` (labels of the version on this endpoint over
    the last 7 days), ``run`` (the metric of the version's evaluation run), or None (unknown).
    """

    variant: str | None  # None: logged without a variant name
    model: str
    version: int
    requests: int
    share: float  # of the window's requests that had a deadline
    met: int
    failed: int  # failed or shed (status 500 or more)
    met_rate: float | None
    quality: float | None = None
    quality_source: Literal["window", "feedback", "run"] | None = None
    quality_samples: int | None = None  # labels behind ``quality`` (None for a run metric)


class DeadlineSummary(BaseModel):
    """Deadlines and effective accuracy of one window (see monitoring/deadlines.py).

    ``effective_accuracy``: the share of the requests with a deadline answered correctly in
    time. ``basis`` ``feedback``: each variant's answers in time weighed by their labels in
    this window (exact when all are labelled); ``quality``: some weighed by a version's
    quality from older feedback or its evaluation run; ``unweighted``: a variant's quality is
    unknown, so the figure is the share answered in time, unweighted (``note`` says which).
    """

    requests: int  # with a deadline: answered, late or failed (not shadow, not 4xx)
    met: int
    late: int
    failed: int
    deadline_met_rate: float | None
    effective_accuracy: float | None
    basis: Literal["feedback", "quality", "unweighted"]
    metric: str  # the quality metric answers are weighed by
    labelled: int = 0  # labelled rows of answers in time in this window
    note: str = ""
    variants: list[VariantDeadline] = Field(default_factory=list)


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
    deadline: DeadlineSummary | None = None  # only when requests in it carried a deadline


class WindowDrift(BaseModel):
    """The drift verdict of one closed window: drift over time, a window at a time.

    ``status``: ``ok``, ``drift`` or ``insufficient`` (too few rows for a verdict), as a
    drift report has it; ``no-reference`` (the version has no reference profile),
    ``no-traffic`` (nothing was requested) or ``failed`` (requests came, none was answered).
    """

    window_start: datetime
    window_end: datetime
    model: str | None = None
    version: int | None = None
    rows: int = 0
    status: str
    drift_share: float | None = None  # drifted / checked features
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
