"""Evaluation of alert rules: one rule applied to one window, under the rule's lock.

How a window's observation opens, updates or resolves a rule's alert (fire once, the
newest breaching window, auto-resolve, late labels) is described in
:mod:`modelyard.monitoring.alerts`; this module holds the comparison, the sample count
behind a metric, and the evidence an alert keeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.monitoring.alert_rules import (
    ACTIVE,
    DEADLINE_METRICS,
    DEADLINE_VARIANT_METRICS,
    EXTRACTION_METRICS,
    PERFORMANCE_METRICS,
    VOLUME_METRICS,
    AlertRuleSpec,
)
from modelyard.store.tables import AlertRow, AlertRuleRow

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}
# Where a rule's sample count comes from when the lead metric has no count of its own.
_SAMPLES_BY_KIND = {
    "drift": "rows",
    "performance": "feedback_samples",
    "latency": "requests",
    "error_rate": "requests",
    "kpi": "samples",
    "volume": "requests",
    "extraction": "rows",
    "deadline": "deadline_requests",
}
# The observation keys kept as an alert's evidence, by kind: (exact names, prefixes).
_EVIDENCE: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "drift": (frozenset({"drift_share", "drifted_features", "rows", "samples"}), ("drift.",)),
    "performance": (
        PERFORMANCE_METRICS | {"feedback_samples", "samples"},
        tuple(f"{m}." for m in PERFORMANCE_METRICS),
    ),
    "latency": (frozenset({"requests", "throughput_rps"}), ("latency_",)),
    "error_rate": (frozenset({"errors", "requests", "error_rate", "rows"}), ()),
    "kpi": (frozenset({"samples"}), ("kpi.",)),
    "volume": (VOLUME_METRICS | {"errors"}, ()),
    "extraction": (EXTRACTION_METRICS, ()),
    "deadline": (DEADLINE_METRICS, tuple(f"{m}." for m in DEADLINE_VARIANT_METRICS)),
}


@dataclass
class _Check:
    """One rule applied to one window, under the rule's lock."""

    rule: AlertRuleRow
    spec: AlertRuleSpec
    window_start: datetime
    value: float
    samples: int
    now: datetime
    actor: str
    late: bool = False
    details: Mapping[str, Any] | None = None  # more evidence (an extraction rule's suspects)

    def apply(
        self, s: Session, observation: Mapping[str, float | None]
    ) -> tuple[AlertRow, Literal["opened", "resolved", "updated"], dict[str, Any] | None] | None:
        """``(alert, what happened, its state before)``, or None when nothing changed."""
        spec, start, value = self.spec, self.window_start, self.value
        breached = _COMPARE[spec.op](value, spec.threshold)
        active = s.scalar(
            select(AlertRow)
            .where(AlertRow.rule_id == self.rule.id, AlertRow.status.in_(ACTIVE))
            .order_by(AlertRow.opened_at.desc(), AlertRow.id.desc())
            .limit(1)
            .with_for_update()
        )
        latest = {"value": value, "window_start": start.isoformat(), "samples": self.samples}
        if active is not None:
            # The newest breaching window: older windows (a re-run) change nothing.
            seen = datetime.fromisoformat(active.evidence["latest"]["window_start"])
            if breached:
                if start < seen or (start == seen and active.evidence["latest"] == latest):
                    return None
                evidence = dict(active.evidence)
                if start > seen:
                    evidence["breaching_windows"] = evidence.get("breaching_windows", 1) + 1
                evidence["latest"] = latest
                active.evidence = evidence  # a new dict: JSON columns do not track mutation
                return active, "updated", None
            if spec.auto_resolve and start > seen:
                before = {"status": active.status}
                note = (
                    f"auto-resolved: {spec.metric} = {value:g} is no longer {spec.op} "
                    f"{spec.threshold:g} in the window from {start.isoformat()}"
                )
                _resolve_row(active, self.actor, note, self.now, auto=True, window=start)
                return active, "resolved", before
            return None
        if not breached:
            return None
        newest = s.scalar(
            select(func.max(AlertRow.window_start)).where(AlertRow.rule_id == self.rule.id)
        )
        if newest is not None and start <= newest:
            return None  # this window (or a later one) fired already: fire once
        end = start + timedelta(seconds=spec.window)
        if self.late and self._covered(s, start, end):
            return None
        row = AlertRow(
            id=str(ULID()),
            rule_id=self.rule.id,
            endpoint=self.rule.endpoint,
            status="open",
            window_start=start,
            value=value,
            evidence={
                "rule": self.rule.name,
                "kind": spec.kind,
                "metric": spec.metric,
                "op": spec.op,
                "threshold": spec.threshold,
                "window": spec.window,
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "samples": self.samples,
                "min_samples": spec.min_samples,
                "observation": _evidence(spec, observation),
                "latest": latest,
                "breaching_windows": 1,
                **({"late_labels": True} if self.late else {}),
                **(self.details or {}),
            },
            opened_at=self.now,
            escalated_at=None,
            resolved_at=None,
            resolved_by="",
            notifications=[],
        )
        s.add(row)
        return row, "opened", None

    def _covered(self, s: Session, start: datetime, end: datetime) -> bool:
        """Whether the rule's previous alert, resolved, spanned the window from ``start``."""
        previous = s.scalar(
            select(AlertRow)
            .where(AlertRow.rule_id == self.rule.id, AlertRow.window_start < start)
            .order_by(AlertRow.window_start.desc())
            .limit(1)
        )
        if previous is None or previous.resolved_at is None:
            return False
        resolution = previous.evidence.get("resolution") or {}
        if resolution.get("window_start"):
            return datetime.fromisoformat(resolution["window_start"]) > start
        return previous.resolved_at >= end


def _resolve_row(
    row: AlertRow,
    by: str,
    note: str,
    now: datetime,
    *,
    auto: bool,
    window: datetime | None = None,
) -> None:
    row.status, row.resolved_at, row.resolved_by = "resolved", now, by
    resolution: dict[str, Any] = {"note": note, "auto": auto}
    if window is not None:  # the window that was back within the threshold
        resolution["window_start"] = window.isoformat()
    row.evidence = {**row.evidence, "resolution": resolution}


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for missing, non-numeric, NaN or infinite values."""
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _samples(spec: AlertRuleSpec, samples: Mapping[str, int] | int) -> int:
    """The sample count behind a rule's metric: its own, its family's, the kind's, or overall."""
    if not isinstance(samples, Mapping):
        return int(samples)
    head = spec.metric.partition(".")[0]
    for key in (spec.metric, head, _SAMPLES_BY_KIND[spec.kind], "samples", "rows"):
        if key in samples and samples[key] is not None:
            return int(samples[key])
    return 0  # unknown counts as none: an unproven window must not fire


def _evidence(spec: AlertRuleSpec, observation: Mapping[str, Any]) -> dict[str, float | None]:
    names, prefixes = _EVIDENCE[spec.kind]
    return {
        key: _number(value)
        for key, value in observation.items()
        if key == spec.metric or key in names or key.startswith(prefixes)
    }
