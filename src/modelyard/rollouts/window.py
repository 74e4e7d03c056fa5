"""A rollout step's data: the prediction log since the step began, read a segment at a time.

The controller looks at a running rollout every second or so; reading the step's whole log
each time would cost more as the step goes on. A :class:`StepWindow` remembers the segments
it has read (they never change once written) and reads only new ones; a new step, phase or
baseline starts a new window.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelyard.errors import ModelyardError
from modelyard.monitoring.predlog import BASE_SCHEMA, OUTPUT_PREFIX, PredictionLog
from modelyard.rollouts import analysis
from modelyard.rollouts.entities import Analysis, Check, RolloutPlan

if TYPE_CHECKING:
    from modelyard.store.tables import RolloutRow
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.rollouts")

#: The columns of the log an analysis reads (and every ``out__`` column).
COLUMNS = ("request_id", "at", "version", "latency_ms", "shadow", "status")


class StepWindow:
    """The logged rows of one endpoint since ``since``, for one step of a rollout."""

    def __init__(
        self,
        key: Any,
        endpoint: str,
        since: datetime,
        baseline: int,
        canary: int,
        *,
        shadow: bool,
        reference_at: datetime | None = None,
    ) -> None:
        self.key = key
        self.endpoint = endpoint
        self.since = since
        #: With the canary at 100 %: the baseline's rows are those from here to ``since``.
        self.reference_at = reference_at
        self.baseline = baseline
        self.canary = canary
        self.shadow = shadow
        self._seen: set[str] = set()
        self._tables: list[pa.Table] = []
        self._table: pa.Table | None = None

    def read(self, ws: Workspace, now: datetime) -> None:
        """Read the segments written since the last call."""
        predlog = PredictionLog(ws)
        start = self.reference_at or self.since
        since = pa.scalar(start, pa.timestamp("us", tz="UTC"))
        for segment in predlog.segments(self.endpoint, start, now):
            if segment.id in self._seen:
                continue
            data = ws.artifacts.get_bytes(segment.digest)
            table = pq.read_table(pa.BufferReader(data))
            keep = [n for n in table.column_names if n in COLUMNS or n.startswith(OUTPUT_PREFIX)]
            table = table.select(keep)
            table = table.filter(pc.greater_equal(table["at"], since))
            self._seen.add(segment.id)
            if table.num_rows:
                self._tables.append(table)
                self._table = None

    @property
    def table(self) -> pa.Table:
        if self._table is None:
            if not self._tables:
                self._table = BASE_SCHEMA.empty_table().select(list(COLUMNS))
            elif len(self._tables) == 1:
                self._table = self._tables[0]
            else:
                self._table = pa.concat_tables(self._tables, promote_options="permissive")
                self._tables = [self._table]
        return self._table

    def sides(self) -> tuple[analysis.Side, analysis.Side]:
        table = self.table
        if self.reference_at is None:
            return analysis.side(table, self.baseline), analysis.side(table, self.canary)
        split = pa.scalar(self.since, pa.timestamp("us", tz="UTC"))
        before = table.filter(pc.less(table["at"], split))
        after = table.filter(pc.greater_equal(table["at"], split))
        return analysis.side(before, self.baseline), analysis.side(after, self.canary)

    def early(self, plan: RolloutPlan) -> Check | None:
        """The early error look (canary steps only)."""
        if self.shadow:
            return None
        baseline, canary = self.sides()
        return analysis.early_errors(
            baseline, canary, plan.thresholds, min_requests=plan.min_requests
        )

    def checks(self, ws: Workspace, plan: RolloutPlan) -> list[Check]:
        """Every check of a full analysis: the shadow's, or the canary's (and the feedback
        metrics' where labels have arrived)."""
        if self.shadow:
            return analysis.compare_shadow(
                self.table,
                self.baseline,
                self.canary,
                plan.thresholds,
                min_requests=plan.shadow_requests,
            )
        baseline, canary = self.sides()
        checks = analysis.compare(baseline, canary, plan.thresholds, min_requests=plan.min_requests)
        checks += self._metric_checks(ws, plan)
        return checks

    def _metric_checks(self, ws: Workspace, plan: RolloutPlan) -> list[Check]:
        """Feedback metrics of each side since the step began: accuracy (or MAE), and the
        metrics the KPIs of the model's project name."""
        from datetime import UTC
        from datetime import datetime as dt

        try:
            start = self.reference_at or self.since
            report = ws.monitoring.performance(self.endpoint, start=start, end=dt.now(UTC))
        except ModelyardError as exc:  # no monitoring configuration, say
            log.debug("rollout on %s: no feedback metrics: %s", self.endpoint, exc)
            return []
        if report.task is None:
            return []
        directions: dict[str, Any] = (
            {"accuracy": "maximize"} if report.task == "classification" else {"mae": "minimize"}
        )
        targets: dict[str, float] = {}
        for kpi in _kpis(ws, self.endpoint):
            metric = kpi.metric or kpi.name
            directions[metric] = kpi.direction
            targets[metric] = kpi.target
        found = {w.version: w for w in report.windows}
        base, cand = found.get(self.baseline), found.get(self.canary)
        if base is None or cand is None:
            return []
        return analysis.compare_metrics(
            analysis.MetricSide(self.baseline, base.samples, dict(base.metrics)),
            analysis.MetricSide(self.canary, cand.samples, dict(cand.metrics)),
            directions,
            plan.thresholds,
            min_samples=plan.min_labels,
            targets=targets,
        )

    def analysis(
        self, row: RolloutRow, now: datetime, checks: list[Check], *, early: bool
    ) -> Analysis:
        baseline, canary = self.sides()
        if self.shadow:
            mirrored = analysis.side(self.table, self.canary, shadow=True)
            canary_requests = mirrored.requests
        else:
            canary_requests = canary.requests
        return Analysis(
            at=now,
            phase=row.phase,
            step=row.step,
            weight=row.weight,
            verdict=analysis.verdict(checks),
            baseline_requests=baseline.requests,
            canary_requests=canary_requests,
            checks=checks,
            early=early,
        )


def _kpis(ws: Workspace, endpoint: str) -> list[Any]:
    """The KPIs of the project of the model the endpoint serves (none without a project)."""
    try:
        target = ws.endpoints.get(endpoint).target
        from modelyard.registry.uri import parse_model_uri

        project = ws.registry.get_model(parse_model_uri(target).name).project
        if project is None:
            return []
        return list(ws.projects.get(project).kpis)
    except ModelyardError:
        return []
