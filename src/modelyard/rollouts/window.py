"""A rollout step's data: the prediction log since the step began, read a segment at a time.

The controller looks at a running rollout every second or so. A :class:`StepWindow`
remembers the segments it has read (they never change once written), asks the store only
for segments written since its last look, and keeps running error counts for the early look;
the sides a full analysis compares are built only when one falls due. A step may last long
(a held release waits for an approval): past :data:`MAX_ROWS` the rows kept are thinned at
random, both sides alike, while the request and error counts stay exact. A new step or
phase starts a new window.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
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
COLUMNS = ("request_id", "at", "model", "version", "latency_ms", "shadow", "status")
#: Rows a window keeps at most; the tests subsample far below it anyway.
MAX_ROWS = 200_000
#: How far back the listing of new segments reaches past the last look: a segment's row is
#: written by the gateway's clock and committed a moment after.
LISTING_SLACK = timedelta(seconds=30)

Version = tuple[str, int]  # (model, version)
TIMESTAMP = pa.timestamp("us", tz="UTC")


class StepWindow:
    """The logged rows of one endpoint since ``since``, for one step of a rollout."""

    def __init__(
        self,
        key: Any,
        endpoint: str,
        since: datetime,
        baseline: Version,
        canary: Version,
        *,
        shadow: bool,
        reference_at: datetime | None = None,
    ) -> None:
        self.key = key
        self.endpoint = endpoint
        self.since = since
        self.baseline = baseline
        self.canary = canary
        self.shadow = shadow
        #: With the canary at 100 %: the baseline's rows are those from here to ``since``.
        self.reference_at = reference_at
        self._seen: set[str] = set()
        self._listed: datetime | None = None  # when the store was last asked for segments
        self._tables: list[pa.Table] = []
        self._table: pa.Table | None = None
        self._rows = 0
        self._thinned = False
        #: Exact (requests, errors) of each side, for the early look and a thinned window.
        self._counts = {"baseline": [0, 0], "canary": [0, 0]}
        self._rng = np.random.default_rng(0)

    def read(self, ws: Workspace, now: datetime) -> None:
        """Read the segments written since the last call."""
        start = self.reference_at or self.since
        listed = datetime.now(UTC)
        since = None if self._listed is None else self._listed - LISTING_SLACK
        segments = PredictionLog(ws).segments(self.endpoint, start, now, created_since=since)
        self._listed = listed
        for segment in segments:
            if segment.id in self._seen:
                continue
            table = pq.read_table(pa.BufferReader(ws.artifacts.get_bytes(segment.digest)))
            keep = [n for n in table.column_names if n in COLUMNS or n.startswith(OUTPUT_PREFIX)]
            table = table.select(keep)
            table = table.filter(pc.greater_equal(table["at"], pa.scalar(start, TIMESTAMP)))
            self._seen.add(segment.id)
            if table.num_rows:
                self._count(table)
                self._tables.append(table)
                self._rows += table.num_rows
                self._table = None
        if self._rows > MAX_ROWS:
            table = self.table
            kept = np.sort(self._rng.choice(table.num_rows, MAX_ROWS // 2, replace=False))
            self._table = table.take(pa.array(kept))
            self._tables, self._rows, self._thinned = [self._table], MAX_ROWS // 2, True

    def _count(self, table: pa.Table) -> None:
        before, after = self._split(table)
        for name, rows, (model, version) in (
            ("baseline", before, self.baseline),
            ("canary", after, self.canary),
        ):
            side = analysis.side(
                rows, version, model=model, shadow=self.shadow and name == "canary"
            )
            self._counts[name][0] += side.requests
            self._counts[name][1] += side.errors

    def _split(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The rows the baseline's side and the canary's side are made of."""
        if self.reference_at is None:
            return table, table
        split = pa.scalar(self.since, TIMESTAMP)
        return table.filter(pc.less(table["at"], split)), table.filter(
            pc.greater_equal(table["at"], split)
        )

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
        """Both sides, built from the rows kept; their counts exact even when thinned."""
        before, after = self._split(self.table)
        (bm, bv), (cm, cv) = self.baseline, self.canary
        baseline = analysis.side(before, bv, model=bm)
        canary = analysis.side(after, cv, model=cm, shadow=self.shadow)
        if self._thinned:
            b, c = self._counts["baseline"], self._counts["canary"]
            baseline = replace(baseline, requests=b[0], errors=b[1])
            canary = replace(canary, requests=c[0], errors=c[1])
        return baseline, canary

    def early(self, plan: RolloutPlan) -> Check | None:
        """The early error look (canary steps only), from the running counts alone."""
        if self.shadow:
            return None
        (_, bv), (_, cv) = self.baseline, self.canary
        b, c = self._counts["baseline"], self._counts["canary"]
        return analysis.early_errors(
            analysis.Side(bv, b[0], b[1]),
            analysis.Side(cv, c[0], c[1]),
            plan.thresholds,
            min_requests=plan.min_requests,
        )

    def checks(self, ws: Workspace, plan: RolloutPlan, weight: float) -> list[Check]:
        """Every check of a full analysis: the shadow's, or the canary's (and the feedback
        metrics' where labels have arrived); ``weight``: the canary's share now."""
        if self.shadow:
            (bm, bv), (cm, cv) = self.baseline, self.canary
            table = self.table
            if "model" in table.column_names:  # versions of two models share numbers
                live = pc.and_(pc.equal(table["model"], bm), pc.equal(table["version"], bv))
                mirrored = pc.and_(pc.equal(table["model"], cm), pc.equal(table["version"], cv))
                table = table.filter(pc.or_(live, mirrored))
            return analysis.compare_shadow(
                table, bv, cv, plan.thresholds, min_requests=plan.shadow_requests
            )
        baseline, canary = self.sides()
        silent = _silent(baseline, canary, weight, plan.min_requests)
        if silent is not None:
            return [silent]
        checks = analysis.compare(baseline, canary, plan.thresholds, min_requests=plan.min_requests)
        checks += self._metric_checks(ws, plan)
        return checks

    def _metric_checks(self, ws: Workspace, plan: RolloutPlan) -> list[Check]:
        """Feedback metrics of each side since the step began: accuracy (or MAE), and the
        metrics the KPIs of the model's project name."""
        bv, cv = self.baseline[1], self.canary[1]
        if bv == cv:  # monitoring's performance tells versions apart by number only
            return []
        try:
            start = self.reference_at or self.since
            report = ws.monitoring.performance(self.endpoint, start=start, end=datetime.now(UTC))
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
        base, cand = found.get(bv), found.get(cv)
        if base is None or cand is None:
            return []
        return analysis.compare_metrics(
            analysis.MetricSide(bv, base.samples, dict(base.metrics)),
            analysis.MetricSide(cv, cand.samples, dict(cand.metrics)),
            directions,
            plan.thresholds,
            min_samples=plan.min_labels,
            targets=targets,
        )

    def analysis(
        self, row: RolloutRow, now: datetime, checks: list[Check], *, early: bool
    ) -> Analysis:
        if early:
            baseline_requests, canary_requests = (
                self._counts["baseline"][0],
                self._counts["canary"][0],
            )
        else:
            baseline, canary = self.sides()
            baseline_requests, canary_requests = baseline.requests, canary.requests
        return Analysis(
            at=now,
            phase=row.phase,
            step=row.step,
            weight=row.weight,
            verdict=analysis.verdict(checks),
            baseline_requests=baseline_requests,
            canary_requests=canary_requests,
            checks=checks,
            early=early,
        )


def _silent(
    baseline: analysis.Side, canary: analysis.Side, weight: float, minimum: int
) -> Check | None:
    """A failed ``serving`` check when the canary answered nothing though its share of the
    baseline's traffic would be ``minimum`` requests or more: a gateway that could not load
    it keeps its old routes, and waiting would only look like thin traffic."""
    if canary.requests or not baseline.requests:
        return None
    expected = baseline.requests * weight / (100 - weight) if weight < 100 else baseline.requests
    if expected < minimum:
        return None
    return Check(
        name="serving",
        verdict="fail",
        summary=(
            f"serving: the canary answered none of the ~{expected:,.0f} requests its "
            f"{weight:g} % share should have had (baseline {baseline.requests:,}): the gateway "
            "could not load it? `curl .../v2/health/ready` (with an admin token) and the serve "
            "log say why (a pickled model needs `serve --trust-pickled`): fail"
        ),
        figures={"expected": expected, "baseline_requests": baseline.requests, "weight": weight},
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
