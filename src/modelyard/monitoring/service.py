"""The monitoring service: reference profiles, closed windows, drift, feedback and alerts.

:meth:`MonitoringService.run_once` is one pass of the monitor. It closes the windows of
every endpoint (see :mod:`modelyard.monitoring.windows`), turns each newly closed window into
an *observation* (traffic, errors, latency, drift against the version's reference, the
performance its feedback shows, the project's KPIs) and hands it to the alert rules. Before
that it joins held feedback (labels that arrived before their predictions were logged) and
evaluates again the performance rules of closed windows that received labels since the last
pass. Passes are safe to repeat and to run from several processes: a lease lets one monitor
act at a time, windows are rebuilt whole, and an alert rule fires once per incident.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import func, select

from modelyard.errors import InvalidInput, ModelyardError, NotFound
from modelyard.monitoring.alerts import Alert, AlertRule, AlertRuleSpec, AlertService
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.entities import (
    DeadlineSummary,
    EndpointDrift,
    EndpointStatus,
    MonitorPass,
    OpsWindow,
    ReferenceProfile,
    WindowDrift,
    WindowSummary,
)
from modelyard.monitoring.kpis import (
    KpiEvaluation,
    evaluate_kpis,
    kpi_history,
    kpi_observation,
    kpi_samples,
)
from modelyard.page import Page, check_limit
from modelyard.store.leases import Lease, process_owner
from modelyard.store.tables import (
    AlertRow,
    FeedbackRow,
    MonitorConfigRow,
    ReferenceProfileRow,
)

# The modules that read the prediction log and compute on it (windows, profiles, drift,
# feedback, performance: numpy, pandas, pyarrow) are imported by the methods that use them,
# so that making the service (every in-process Client does) costs none of those imports.
if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from modelyard.monitoring.deadlines import Quality
    from modelyard.monitoring.feedback import (
        Feedback,
        FeedbackItem,
        FeedbackResult,
        FeedbackService,
        PendingFeedback,
    )
    from modelyard.monitoring.performance import PerformanceReport
    from modelyard.monitoring.profiles import Profile
    from modelyard.monitoring.redaction import ForgetResult
    from modelyard.monitoring.windows import WindowContent, WindowProfiler
    from modelyard.registry.entities import ModelVersion
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.monitoring")

__all__ = ["MonitoringService"]

LEASE = "monitor"
#: Rule kinds whose metrics change when labels arrive after their window closed.
LABELLED_KINDS = ("performance", "deadline")
#: How far before its mark the late-label pass reads feedback again (see ``_late_labels``).
LATE_LABEL_SLACK = timedelta(minutes=2)
REFERENCE_CHUNK_ROWS = 50_000
#: Granularities must divide a day, so windows of every size line up with each other.
DAY = 86_400
#: Drift over time: windows judged by default, and at most.
HISTORY_WINDOWS = 48
MAX_HISTORY_WINDOWS = 1000


class MonitoringService:
    """Monitoring of every endpoint; one per workspace (``ws.monitoring``)."""

    def __init__(self, ws: Workspace, *, owner: str | None = None) -> None:
        self.ws = ws
        # Monitors of one process share the lease: the lease keeps processes apart, and
        # passes are safe to overlap (windows are rebuilt whole, a rule fires once).
        self.owner = owner or process_owner()
        self._reference_failures: set[tuple[str, int]] = set()

    @cached_property
    def windows(self) -> WindowProfiler:
        from modelyard.monitoring.windows import WindowProfiler

        return WindowProfiler(self.ws)

    @cached_property
    def feedback(self) -> FeedbackService:
        from modelyard.monitoring.feedback import FeedbackService

        return FeedbackService(self.ws)

    @cached_property
    def alerts(self) -> AlertService:
        return AlertService(self.ws)

    # -- configuration --------------------------------------------------------------------------

    def get_config(self, endpoint: str) -> MonitorConfig:
        """The endpoint's monitoring settings (defaults until configured)."""
        self.ws.endpoints.get(endpoint)
        with self.ws.store.read() as session:
            row = session.get(MonitorConfigRow, endpoint)
            return MonitorConfig.model_validate(row.config) if row else MonitorConfig()

    def configure(self, endpoint: str, config: MonitorConfig | Mapping[str, Any]) -> MonitorConfig:
        """Replace the endpoint's monitoring settings."""
        self.ws.endpoints.get(endpoint)
        try:
            parsed = (
                config
                if isinstance(config, MonitorConfig)
                else MonitorConfig.model_validate(config)
            )
        except ValidationError as exc:
            raise InvalidInput(f"invalid monitoring settings: {_first_error(exc)}") from exc
        bad = [g for g in parsed.granularities if g < 60 or DAY % g]
        if bad or not parsed.granularities:
            raise InvalidInput(
                f"granularities {bad or '[]'} are not allowed: each must be at least 60 seconds "
                "and divide a day (e.g. 300, 900, 3600, 86400)"
            )
        parsed.granularities = sorted(set(parsed.granularities))
        with self.ws.store.write(self.ws.actor) as tx:
            row = tx.session.get(MonitorConfigRow, endpoint)
            before = row.config if row else None
            after = parsed.model_dump(mode="json")
            if row is None:
                tx.session.add(
                    MonitorConfigRow(endpoint=endpoint, config=after, updated_at=datetime.now(UTC))
                )
            else:
                row.config = after
                row.updated_at = datetime.now(UTC)
            tx.record("monitor.configure", "endpoint", endpoint, before, after)
        return parsed

    # -- reference profiles ---------------------------------------------------------------------

    def set_reference(
        self,
        uri: str,
        *,
        data: pd.DataFrame | Mapping[str, Any] | str | Path | None = None,
        dataset: str | None = None,
        dataset_version: int | None = None,
        trusted: bool = False,
    ) -> ReferenceProfile:
        """Profile reference data (and the version's predictions on it) for ``uri``.

        The data is ``data`` (a DataFrame, dict of columns, or a Parquet/CSV path), a
        registered ``dataset``, or else the version's training dataset from its lineage.
        """
        version = self.ws.registry.resolve(uri)
        frame, source = self._reference_data(version, data, dataset, dataset_version)
        profile = self._profile_reference(version, frame, trusted=trusted)
        return self._store_reference(version, profile, source)

    def get_reference(self, uri: str, *, include_profile: bool = False) -> ReferenceProfile:
        """The reference profile of ``uri``'s version."""
        version = self.ws.registry.resolve(uri)
        with self.ws.store.read() as session:
            row = session.get(ReferenceProfileRow, version.id)
            if row is None:
                raise NotFound(_no_reference(version))
            return _reference(version, row, include_profile)

    def _reference_data(
        self,
        version: ModelVersion,
        data: Any,
        dataset: str | None,
        dataset_version: int | None,
    ) -> tuple[pd.DataFrame | Mapping[str, Any], str]:
        import pandas as pd

        if data is not None and dataset is not None:
            raise InvalidInput("give reference data or a dataset, not both")
        if dataset is not None:
            ds = self.ws.tracking.get_dataset(dataset, dataset_version)
            return self.ws.tracking.load_dataset(
                ds.name, ds.version
            ), f"dataset:{ds.name}/{ds.version}"
        if data is None:
            lineage = self.ws.registry.lineage(version.model, version.version)
            training = [d for d in lineage.datasets if d.get("role") == "training"]
            if not training:
                raise InvalidInput(
                    f"models:/{version.model}/{version.version} has no training dataset in its "
                    "lineage; give reference data (--data FILE) or a registered --dataset"
                )
            name, number = training[0]["name"], training[0]["version"]
            return self.ws.tracking.load_dataset(name, number), f"dataset:{name}/{number}"
        if isinstance(data, str | Path):
            return _read_table(Path(data)), f"file:{Path(data).name}"
        if isinstance(data, pd.DataFrame | Mapping):
            return data, "data"
        raise InvalidInput(
            f"reference data must be a DataFrame, a dict of columns or a file path; got "
            f"{type(data).__name__}"
        )

    def _profile_reference(
        self, version: ModelVersion, data: pd.DataFrame | Mapping[str, Any], *, trusted: bool
    ) -> Profile:
        import numpy as np
        import pandas as pd

        from modelyard.formats import load_model
        from modelyard.monitoring.profiles import Profile
        from modelyard.monitoring.windows import OUTPUT_FEATURE_PREFIX

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
        if frame.empty:
            raise InvalidInput("the reference data has no rows")
        path = self.ws.registry.local_path(version)  # signature checked, as every load
        predictor = load_model(path, trusted=trusted or self.ws.settings.trust_pickled_models)
        names = [spec.name for spec in predictor.signature.inputs]
        if predictor.signature.kind == "columns":
            missing = [n for n in names if n not in frame.columns]
            if missing:
                raise InvalidInput(
                    f"the reference data lacks input column(s) {missing}; the model takes {names}"
                )
        profile: Profile | None = None
        for start in range(0, len(frame), REFERENCE_CHUNK_ROWS):
            chunk = frame.iloc[start : start + REFERENCE_CHUNK_ROWS]
            batch = chunk[names] if predictor.signature.kind == "columns" else chunk.to_numpy()
            try:
                outputs = predictor.predict(batch)
            except ModelyardError:
                raise
            except Exception as exc:
                raise InvalidInput(
                    f"models:/{version.model}/{version.version} could not predict on the "
                    f"reference data: {type(exc).__name__}: {exc}"
                ) from exc
            columns = dict(_named_columns(_inputs_of(predictor.signature.kind, names, chunk)))
            for name, values in outputs.items():
                columns.update(_named_columns({OUTPUT_FEATURE_PREFIX + name: np.asarray(values)}))
            if profile is None:
                profile = Profile.build(columns)
            else:
                profile.update(columns)
        assert profile is not None
        return profile

    def _store_reference(
        self, version: ModelVersion, profile: Profile, source: str
    ) -> ReferenceProfile:
        payload = profile.to_dict()
        with self.ws.store.write(self.ws.actor) as tx:
            row = tx.session.get(ReferenceProfileRow, version.id)
            now = datetime.now(UTC)
            if row is None:
                row = ReferenceProfileRow(
                    version_id=version.id,
                    source=source,
                    rows=profile.rows,
                    profile=payload,
                    created_at=now,
                )
                tx.session.add(row)
            else:
                row.source, row.rows, row.profile, row.created_at = (
                    source,
                    profile.rows,
                    payload,
                    now,
                )
            tx.record(
                "monitor.reference",
                "model_version",
                f"{version.model}/{version.version}",
                None,
                {"source": source, "rows": profile.rows},
            )
            tx.session.flush()
            result = _reference(version, row, False)
        self._reference_failures.discard((version.model, version.version))
        return result

    def _reference_profile(self, model: str, number: int) -> tuple[Profile, str] | None:
        """The stored reference of a version, built from its training dataset if it has one."""
        from modelyard.monitoring.profiles import Profile

        version = self.ws.registry.get_version(model, number)
        with self.ws.store.read() as session:
            row = session.get(ReferenceProfileRow, version.id)
            if row is not None:
                return Profile.from_dict(row.profile), row.source
        if (model, number) in self._reference_failures:
            return None
        try:
            frame, source = self._reference_data(version, None, None, None)
            profile = self._profile_reference(version, frame, trusted=False)
        except ModelyardError as exc:
            log.info("no reference profile for %s/%s: %s", model, number, exc)
            self._reference_failures.add((model, number))
            return None
        self._store_reference(version, profile, source)
        return profile, source

    # -- the monitor pass -----------------------------------------------------------------------

    def run_once(self, now: datetime | None = None, *, lease_seconds: float = 120.0) -> MonitorPass:
        """Join held feedback, close every endpoint's due windows and evaluate them,
        re-evaluate closed windows that got late labels, escalate overdue alerts."""
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        result = MonitorPass(
            started_at=now, seconds=0.0, windows_closed=0, alerts_changed=0, escalated=0
        )
        if not self._take_lease(now, lease_seconds):
            result.skipped = True
            return result
        endpoints = self.ws.endpoints.list()
        for endpoint in endpoints:
            try:
                self._monitor_endpoint(endpoint.name, now, endpoint.created_at, result)
            except Exception as exc:  # one broken endpoint must not stop the others
                log.exception("monitoring endpoint %s failed", endpoint.name)
                result.errors.append(f"{endpoint.name}: {type(exc).__name__}: {exc}")
        try:
            orphans = self.feedback.expire_orphans({e.name for e in endpoints}, now=now)
            result.feedback_expired += orphans
        except Exception as exc:
            log.exception("expiring held feedback of deleted endpoints failed")
            result.errors.append(f"held feedback: {type(exc).__name__}: {exc}")
        result.escalated = len(self.alerts.escalate_due(now=now))
        result.seconds = time.perf_counter() - started
        return result

    def _monitor_endpoint(
        self, endpoint: str, now: datetime, created_at: datetime, result: MonitorPass
    ) -> None:
        config = self.get_config(endpoint)
        # Held labels first: those whose predictions landed reach the windows closed now.
        held = self.feedback.join_held(endpoint, config=config, now=now)
        result.feedback_joined += held.joined
        result.feedback_expired += held.expired + held.rejected
        # Windows closed before, in time order, before the new ones: an incident that late
        # labels reveal is named by its first window.
        qualities: dict[tuple[str, int], Quality | None] = {}  # for this pass
        reevaluated, changed = self._late_labels(endpoint, config, now, qualities)
        result.windows_reevaluated += reevaluated
        result.alerts_changed += changed
        base = config.granularities[0]
        for granularity in config.granularities:
            finer = base if granularity != base and granularity % base == 0 else None
            while True:  # catch up in bounded steps
                windows = self.windows.close_windows(
                    endpoint,
                    granularity,
                    now=now,
                    lateness=config.lateness_seconds,
                    finer=finer,
                    origin=created_at,
                )
                for window_start in windows:
                    result.alerts_changed += self._evaluate_window(
                        endpoint, granularity, window_start, config, now, qualities=qualities
                    )
                result.windows_closed += len(windows)
                if len(windows) < 288:
                    break

    def _late_labels(
        self,
        endpoint: str,
        config: MonitorConfig,
        now: datetime,
        qualities: dict[tuple[str, int], Quality | None] | None = None,
    ) -> tuple[int, int]:
        """Re-evaluate the performance and deadline rules of closed windows that received
        labels since the last pass (windows up to ``late_labels_seconds`` old); return
        (windows, alerts)."""
        from modelyard.monitoring.windows import floor_time

        if config.late_labels_seconds <= 0 or not self.alerts.has_rules(
            endpoint, kinds=LABELLED_KINDS
        ):
            return 0, 0
        marks = self.windows.labels_until(endpoint)
        if not marks:
            return 0, 0  # no window closed yet
        known = [m for m in marks.values() if m is not None]
        mark = min(known) if len(known) == len(marks) else None
        oldest = now - timedelta(seconds=config.late_labels_seconds)
        query = select(FeedbackRow.predicted_at, FeedbackRow.received_at).where(
            FeedbackRow.endpoint == endpoint, FeedbackRow.predicted_at >= oldest
        )
        if mark is not None:
            # Stamps are taken just before commit; a slower transaction may commit an older
            # stamp after the mark moved past it, so read back a little.
            query = query.where(FeedbackRow.received_at > mark - LATE_LABEL_SLACK)
        with self.ws.store.read() as session:
            labels = session.execute(query).all()
        if not labels:
            return 0, 0
        windows = changed = 0
        for granularity in config.granularities:
            closed = self.windows.watermark(endpoint, granularity)
            if closed is None:
                continue
            step = timedelta(seconds=granularity)
            starts = {floor_time(predicted, granularity) for predicted, _ in labels}
            for window_start in sorted(starts):
                if window_start + step > closed:
                    continue  # not closed yet: it will be evaluated with every label
                windows += 1
                changed += self._evaluate_window(
                    endpoint, granularity, window_start, config, now, late=True, qualities=qualities
                )
        self.windows.set_labels_until(endpoint, max(received for _, received in labels))
        return windows, changed

    def _evaluate_window(
        self,
        endpoint: str,
        granularity: int,
        window_start: datetime,
        config: MonitorConfig,
        now: datetime,
        *,
        late: bool = False,
        qualities: dict[tuple[str, int], Quality | None] | None = None,
    ) -> int:
        window_end = window_start + timedelta(seconds=granularity)
        if late:  # only the labels changed: the rules that read labels are all to re-check
            observation, samples = self._performance(endpoint, window_start, window_end, config)
            if self.alerts.has_rules(endpoint, granularity, ("deadline",)):
                contents = self._stored(endpoint, granularity, window_start, window_end)
                deadline = self._deadlines(
                    endpoint, window_start, window_end, contents, config, qualities
                )
                observation.update(deadline[0])
                samples.update(deadline[1])
            return len(
                self.alerts.evaluate(
                    endpoint,
                    granularity,
                    window_start,
                    observation,
                    samples,
                    now=now,
                    kinds=LABELLED_KINDS,
                    late=True,
                )
            )
        contents = [
            c for _, c in self.windows.contents(endpoint, granularity, window_start, window_end)
        ]
        observation, samples = self.observe(
            endpoint, granularity, window_start, contents, config, qualities=qualities
        )
        main = _main(contents)
        model = main.model if main is not None else next((c.model for c in contents), "")
        if model:  # (a window of failed requests only still has its KPIs judged)
            project = self.ws.registry.get_model(model).project
            if project:
                evaluations = evaluate_kpis(
                    self.ws, project, endpoint, granularity, window_start, observation
                )
                observation.update(kpi_observation(evaluations))
                samples.update(kpi_samples(evaluations, samples))
        return len(
            self.alerts.evaluate(endpoint, granularity, window_start, observation, samples, now=now)
        )

    def observe(
        self,
        endpoint: str,
        granularity: int,
        window_start: datetime,
        contents: Sequence[WindowContent],
        config: MonitorConfig,
        *,
        qualities: dict[tuple[str, int], Quality | None] | None = None,
    ) -> tuple[dict[str, float | None], dict[str, int]]:
        """The metrics alert rules and KPIs see for one window, and each metric's sample count.

        ``qualities``: versions' qualities already looked up (for effective accuracy), shared
        by the windows of one pass.
        """
        from modelyard.monitoring.drift import compare

        window_end = window_start + timedelta(seconds=granularity)
        ops = _ops(window_start, window_end, None, contents)
        observation: dict[str, float | None] = {
            "requests": ops.requests,
            "rows": ops.rows,
            "errors": ops.errors,
            "error_rate": ops.error_rate,
            "throughput_rps": ops.throughput_rps,
            "latency_p50_ms": ops.latency_p50_ms,
            "latency_p95_ms": ops.latency_p95_ms,
            "latency_p99_ms": ops.latency_p99_ms,
            "idle_windows": self._idle_windows(endpoint, granularity, window_start, ops.requests),
        }
        samples = {name: ops.requests for name in observation}
        if not contents:
            return observation, samples
        deadline = self._deadlines(endpoint, window_start, window_end, contents, config, qualities)
        observation.update(deadline[0])
        samples.update(deadline[1])
        main = _main(contents)
        reference = None if main is None else self._reference_profile(main.model, main.version)
        if main is not None and reference is not None:
            report = compare(reference[0], main.features, config.drift)
            observation["drift_share"] = (
                report.drift_share if report.status != "insufficient" else None
            )
            observation["drifted_features"] = report.drifted_features
            samples["drift_share"] = samples["drifted_features"] = main.rows
            for feature in report.features:
                observation[f"drift.{feature.feature}"] = feature.statistic
                samples[f"drift.{feature.feature}"] = feature.current_rows
        performance, counts = self._performance(endpoint, window_start, window_end, config)
        observation.update(performance)
        samples.update(counts)
        return observation, samples

    def _performance(
        self, endpoint: str, start: datetime, end: datetime, config: MonitorConfig
    ) -> tuple[dict[str, float | None], dict[str, int]]:
        """Performance metrics of the labelled predictions in ``[start, end)``, with counts."""
        from modelyard.monitoring.performance import performance

        observation: dict[str, float | None] = {}
        samples: dict[str, int] = {}
        perf = performance(
            self.ws,
            endpoint,
            start=start,
            end=end,
            granularity=None,
            config=config,
            by_version=False,
        )
        for window in perf.windows:
            for name, value in window.metrics.items():
                observation[name] = value
                samples[name] = window.samples
            observation["feedback_samples"] = window.samples
            samples["feedback_samples"] = window.samples
        return observation, samples

    def _deadlines(
        self,
        endpoint: str,
        start: datetime,
        end: datetime,
        contents: Sequence[WindowContent],
        config: MonitorConfig,
        qualities: dict[tuple[str, int], Quality | None] | None,
    ) -> tuple[dict[str, float | None], dict[str, int]]:
        """The deadline metrics of one window (none when no request in it had a deadline)."""
        if not any(c.deadlines for c in contents):
            return {}, {}
        from modelyard.monitoring.deadlines import deadline_observation

        summary = self._deadline_summary(endpoint, start, end, contents, config, qualities)
        return deadline_observation(summary)

    def _deadline_summary(
        self,
        endpoint: str,
        start: datetime,
        end: datetime,
        contents: Sequence[WindowContent],
        config: MonitorConfig,
        qualities: dict[tuple[str, int], Quality | None] | None = None,
    ) -> DeadlineSummary | None:
        from modelyard.monitoring.deadlines import summarize, variant_quality

        memo = {} if qualities is None else qualities

        def quality(model: str, version: int) -> Quality | None:
            if (model, version) not in memo:
                memo[(model, version)] = variant_quality(
                    self.ws, endpoint, model, version, config.quality_metric
                )
            return memo[(model, version)]

        return summarize(
            self.ws, endpoint, start, end, contents, config, quality, log=self.windows.log
        )

    def version_quality(
        self,
        endpoint: str,
        model: str,
        version: int,
        metric: str = "accuracy",
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        min_samples: int = 200,
        max_samples: int = 10_000,
    ) -> tuple[float, int] | None:
        """``metric`` of ``models:/model/version``'s labelled predictions on ``endpoint``, and
        the number of labels it was computed from; None with fewer than ``min_samples``.

        Predictions made in ``[since, until)`` (default: the last 7 days), the newest
        ``max_samples`` of them: one indexed query on the feedback table reading labels and
        outputs only, cheap enough to call every few seconds. ``metric``: any metric a
        performance report gives (accuracy, precision, recall, f1, roc_auc, log_loss, mae,
        rmse, r2); InvalidInput when it is not one the endpoint's labels give.
        """
        from modelyard.monitoring.deadlines import version_quality

        self.ws.endpoints.get(endpoint)
        return version_quality(
            self.ws,
            endpoint,
            model,
            version,
            metric,
            since=since,
            until=until,
            min_samples=min_samples,
            max_samples=max_samples,
        )

    def _idle_windows(
        self, endpoint: str, granularity: int, window_start: datetime, requests: int
    ) -> int:
        """Consecutive windows, up to and including this one, in which nothing was requested."""
        from modelyard.monitoring.windows import floor_time

        if requests:
            return 0
        step = timedelta(seconds=granularity)
        busy = self.windows.last_busy(endpoint, granularity, window_start)
        if busy is None:  # never busy: idle since the endpoint's first window
            busy = floor_time(self.ws.endpoints.get(endpoint).created_at, granularity) - step
        return max(1, (window_start - busy) // step)

    @cached_property
    def _lease(self) -> Lease:
        return Lease(self.ws.store, LEASE, self.owner)

    def _take_lease(self, now: datetime, seconds: float) -> bool:
        """Hold (or renew) the monitor lease; False while another live monitor holds it."""
        return self._lease.take(now, seconds)

    def release_lease(self) -> None:
        """Give the lease up (at shutdown), so another monitor can take over at once."""
        self._lease.release()

    # -- the prediction log ----------------------------------------------------------------------

    def forget(self, endpoint: str, key: str, value: str) -> ForgetResult:
        """Remove one subject's rows from ``endpoint``'s prediction log: those whose input
        ``key`` is ``value`` (or its HMAC, if the column is hashed). Audited without the value;
        profiles of windows closed already are not recomputed."""
        from modelyard.monitoring.redaction import forget

        if not key:
            raise InvalidInput("name the key column, e.g. --key customer_id=C123")
        return forget(self.ws, self.windows.log, endpoint, key, str(value))

    # -- feedback, alerts and KPIs (the domain services, behind one facade) ---------------------

    def submit_feedback(
        self, endpoint: str, items: Sequence[FeedbackItem | Mapping[str, Any]]
    ) -> FeedbackResult:
        """Store ground-truth labels for logged predictions (all or nothing)."""
        from modelyard.monitoring.feedback import load_monitor_config

        return self.feedback.submit(endpoint, items, config=load_monitor_config(self.ws, endpoint))

    def list_feedback(
        self,
        endpoint: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        version: int | None = None,
    ) -> list[Feedback]:
        return self.feedback.list(endpoint, start=start, end=end, version=version)

    def list_held_feedback(self, endpoint: str, status: str | None = None) -> list[PendingFeedback]:
        """Labels held for predictions not logged yet, and those that expired or were rejected."""
        self.ws.endpoints.get(endpoint)
        return self.feedback.held(endpoint, status=status)

    def create_rule(self, spec: AlertRuleSpec | Mapping[str, Any]) -> AlertRule:
        return self.alerts.create_rule(spec)

    def get_rule(self, name: str) -> AlertRule:
        return self.alerts.get_rule(name)

    def list_rules(self, endpoint: str | None = None) -> list[AlertRule]:
        return self.alerts.list_rules(endpoint)

    def update_rule(self, name: str, **changes: Any) -> AlertRule:
        return self.alerts.update_rule(name, **changes)

    def delete_rule(self, name: str) -> None:
        self.alerts.delete_rule(name)

    def list_alerts(
        self,
        endpoint: str | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        *,
        rule: str | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        return self.alerts.list_alerts(endpoint, status, since, rule=rule, limit=limit)

    def get_alert(self, alert_id: str) -> Alert:
        return self.alerts.get_alert(alert_id)

    def recent_alerts(
        self,
        endpoint: str | None = None,
        status: str | Sequence[str] | None = None,
        *,
        limit: int = 20,
        page_token: str | None = None,
    ) -> Page[Alert]:
        """Alerts newest first, a page at a time (``status`` as in :meth:`list_alerts`)."""
        return self.alerts.recent_alerts(endpoint, status, limit=limit, page_token=page_token)

    def resolve_alert(self, alert_id: str, note: str = "") -> Alert:
        return self.alerts.resolve(alert_id, by=self.ws.actor, note=note)

    def acknowledge_alert(self, alert_id: str, note: str = "") -> Alert:
        """Say you are on an open or escalated alert: it stays open but stops escalating;
        :class:`~modelyard.errors.Conflict` if it is resolved, unchanged if acknowledged."""
        return self.alerts.acknowledge(alert_id, by=self.ws.actor, note=note)

    def kpis(
        self,
        project: str,
        *,
        endpoint: str | None = None,
        kpi: str | None = None,
        since: datetime | None = None,
        window: int | None = None,
    ) -> list[KpiEvaluation]:
        """The project's KPI evaluations per endpoint window, oldest first."""
        return kpi_history(self.ws, project, endpoint, kpi, since, window=window)

    # -- reading --------------------------------------------------------------------------------

    def drift(
        self,
        endpoint: str,
        *,
        window: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        version: int | None = None,
    ) -> EndpointDrift:
        """Drift of one version's traffic in ``[start, end)`` against its reference profile.

        By default the newest closed window of the endpoint's ``window`` granularity (its
        coarsest); with no closed window yet, the last ``window`` seconds, profiled from the
        log directly.
        """
        found, _, _ = self.drift_profiles(
            endpoint, window=window, start=start, end=end, version=version
        )
        return found

    def drift_profiles(
        self,
        endpoint: str,
        *,
        window: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        version: int | None = None,
    ) -> tuple[EndpointDrift, Profile, Profile]:
        """:meth:`drift` with the two profiles it compared, reference and current (their
        histograms are what a drift plot draws: :func:`~modelyard.monitoring.report.histogram`)."""
        from modelyard.monitoring.drift import compare

        config = self.get_config(endpoint)
        granularity = window or config.granularities[-1]
        start, end = self._range(endpoint, granularity, start, end)
        contents = self._contents(endpoint, granularity, start, end)
        if version is not None:
            contents = [c for c in contents if c.version == version]
        if not contents:
            raise NotFound(
                f"endpoint {endpoint!r} logged no predictions"
                + (f" of version {version}" if version is not None else "")
                + f" between {start.isoformat()} and {end.isoformat()}"
            )
        first = _main(contents)
        if first is None:
            raise NotFound(
                f"endpoint {endpoint!r} answered no predictions between {start.isoformat()} "
                f"and {end.isoformat()}: every request there failed or was refused"
            )
        main = _merged(first, contents)
        reference = self._reference_profile(main.model, main.version)
        if reference is None:
            raise NotFound(_no_reference(self.ws.registry.get_version(main.model, main.version)))
        report = compare(reference[0], main.features, config.drift)
        drift = EndpointDrift(
            endpoint=endpoint,
            model=main.model,
            version=main.version,
            granularity=granularity,
            start=start,
            end=end,
            reference_source=reference[1],
            report=report,
        )
        return drift, reference[0], main.features

    def recent_predictions(
        self, endpoint: str, limit: int = 50
    ) -> tuple[pa.Table, datetime | None]:
        """The newest ``limit`` logged predictions of ``endpoint``, newest first, and the
        time the log reaches (it is written every few seconds; None: nothing logged yet)."""
        check_limit(limit)
        self.ws.endpoints.get(endpoint)  # NotFound for a name that is no endpoint
        table, until = self.windows.log.newest(endpoint, limit)
        return table.slice(0, limit), until

    def drift_html(self, endpoint: str, **kwargs: Any) -> str:
        """The drift report as a self-contained HTML page with plots."""
        from modelyard.monitoring.report import render_drift_html

        drift, reference, current = self.drift_profiles(endpoint, **kwargs)
        title = (
            f"Drift of {endpoint} (models:/{drift.model}/{drift.version}), "
            f"{drift.start:%Y-%m-%d %H:%M} to {drift.end:%Y-%m-%d %H:%M} UTC"
        )
        return render_drift_html(drift.report, reference, current, title=title)

    def drift_history(
        self,
        endpoint: str,
        *,
        window: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[WindowDrift]:
        """The drift verdict of every closed window in ``[start, end)``, oldest first: each
        window's most answering version against its reference, as the monitor judged it.

        By default hourly windows (else the finest granularity of at least half an hour, else
        the coarsest) of the day before the newest closed window, at most 48 of them. Windows
        without traffic are there too (status ``no-traffic``), so a line has its gaps.
        """
        from modelyard.monitoring.drift import compare
        from modelyard.monitoring.windows import floor_time

        config = self.get_config(endpoint)
        granularity = window or history_granularity(config.granularities)
        step = timedelta(seconds=granularity)
        closed = self.windows.watermark(endpoint, granularity)
        end = floor_time(end, granularity) if end is not None else closed
        if end is None:
            return []  # no window of this size has closed yet
        if closed is not None:
            end = min(end, closed)
        if start is None:
            start = end - min(timedelta(days=1), HISTORY_WINDOWS * step)
        start = floor_time(start, granularity)
        if (end - start) / step > MAX_HISTORY_WINDOWS:
            raise InvalidInput(
                f"{(end - start) // step} windows of {granularity} s are too many to judge at "
                f"once; ask for at most {MAX_HISTORY_WINDOWS} (a shorter range, or a coarser "
                "window)"
            )
        by_window: dict[datetime, list[WindowContent]] = {}
        for window_start, content in self.windows.contents(endpoint, granularity, start, end):
            by_window.setdefault(window_start, []).append(content)
        references: dict[tuple[str, int], Profile | None] = {}
        history = []
        at = start
        while at < end:
            contents = by_window.get(at, [])
            item = WindowDrift(window_start=at, window_end=at + step, status="no-traffic")
            main = _main(contents)
            if main is not None:
                item.model, item.version, item.rows = main.model, main.version, main.rows
                key = (main.model, main.version)
                if key not in references:
                    found = self._reference_profile(*key)
                    references[key] = None if found is None else found[0]
                reference = references[key]
                if reference is None:
                    item.status = "no-reference"
                else:
                    report = compare(reference, main.features, config.drift)
                    item.status = report.status
                    if report.status != "insufficient":
                        item.drift_share = report.drift_share
                    item.drifted_features = [f.feature for f in report.features if f.drifted]
            elif contents:
                item.status = "failed"  # requests came, none was answered
            history.append(item)
            at += step
        return history

    def operations(
        self,
        endpoint: str,
        *,
        window: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        version: int | None = None,
    ) -> list[OpsWindow]:
        """Traffic, error rate and latency percentiles per closed window, oldest first."""
        config = self.get_config(endpoint)
        granularity = window or config.granularities[0]
        end = end or self.windows.watermark(endpoint, granularity) or datetime.now(UTC)
        start = start or end - 24 * timedelta(seconds=granularity)
        by_window: dict[datetime, list[WindowContent]] = {}
        for window_start, content in self.windows.contents(
            endpoint, granularity, start, end, version=version
        ):
            by_window.setdefault(window_start, []).append(content)
        step = timedelta(seconds=granularity)
        return [
            _ops(at, at + step, version, contents) for at, contents in sorted(by_window.items())
        ]

    def performance(
        self,
        endpoint: str,
        *,
        window: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        version: int | None = None,
        slice_by: str | None = None,
    ) -> PerformanceReport:
        """Model performance from ground-truth feedback, per window and version."""
        from modelyard.monitoring.performance import performance

        config = self.get_config(endpoint)
        end = end or datetime.now(UTC)
        start = start or end - timedelta(days=7)
        return performance(
            self.ws,
            endpoint,
            start=start,
            end=end,
            granularity=window,
            version=version,
            slice_by=slice_by,
            config=config,
        )

    def status(self, endpoint: str | None = None) -> list[EndpointStatus]:
        """Each endpoint's newest closed windows, open alerts and feedback count; windows in
        which requests carried a deadline also have their deadline figures (``deadline``)."""
        names = [endpoint] if endpoint else [e.name for e in self.ws.endpoints.list()]
        result = []
        for name in names:
            config = self.get_config(name)
            qualities: dict[tuple[str, int], Quality | None] = {}
            summaries = [self._summary(name, g, config, qualities) for g in config.granularities]
            with self.ws.store.read() as session:
                open_alerts = session.scalar(
                    select(func.count())
                    .select_from(AlertRow)
                    .where(AlertRow.endpoint == name, AlertRow.status != "resolved")
                )
                feedback = session.scalar(
                    select(func.count())
                    .select_from(FeedbackRow)
                    .where(FeedbackRow.endpoint == name)
                )
            held = self.feedback.held_counts(name)
            result.append(
                EndpointStatus(
                    endpoint=name,
                    windows=summaries,
                    open_alerts=int(open_alerts or 0),
                    feedback=int(feedback or 0),
                    feedback_pending=held["pending"],
                    feedback_expired=held["expired"],
                    feedback_rejected=held["rejected"],
                )
            )
        return result

    def _summary(
        self,
        endpoint: str,
        granularity: int,
        config: MonitorConfig,
        qualities: dict[tuple[str, int], Quality | None],
    ) -> WindowSummary:
        from modelyard.monitoring.drift import compare

        closed = self.windows.watermark(endpoint, granularity)
        summary = WindowSummary(granularity=granularity, window_start=None, closed_until=closed)
        if closed is None:
            return summary
        window_start = closed - timedelta(seconds=granularity)
        summary.window_start = window_start
        contents = [
            c for _, c in self.windows.contents(endpoint, granularity, window_start, closed)
        ]
        ops = _ops(window_start, closed, None, contents)
        summary.requests, summary.error_rate = ops.requests, ops.error_rate
        summary.latency_p99_ms = ops.latency_p99_ms
        if not contents:
            return summary
        if any(c.deadlines for c in contents):
            summary.deadline = self._deadline_summary(
                endpoint, window_start, closed, contents, config, qualities
            )
        main = _main(contents)
        reference = None if main is None else self._reference_profile(main.model, main.version)
        if main is None or reference is None:
            summary.drift_status = "no-reference"
            return summary
        report = compare(reference[0], main.features, config.drift)
        summary.drift_status = report.status
        summary.drifted_features = [f.feature for f in report.features if f.drifted]
        return summary

    def _range(
        self, endpoint: str, granularity: int, start: datetime | None, end: datetime | None
    ) -> tuple[datetime, datetime]:
        if end is None:
            end = self.windows.watermark(endpoint, granularity)
            if end is None:
                # Nothing closed yet: the last ``granularity`` seconds, not the aligned window
                # so far, which just after a boundary would miss the traffic of a moment ago.
                end = datetime.now(UTC)
        if start is None:
            start = end - timedelta(seconds=granularity)
        if start >= end:
            raise InvalidInput(
                f"start ({start.isoformat()}) must be before end ({end.isoformat()})"
            )
        return start, end

    def _stored(
        self, endpoint: str, granularity: int, start: datetime, end: datetime
    ) -> list[WindowContent]:
        return [c for _, c in self.windows.contents(endpoint, granularity, start, end)]

    def _contents(
        self, endpoint: str, granularity: int, start: datetime, end: datetime
    ) -> list[WindowContent]:
        """Window contents covering [start, end): stored windows, or the log read directly."""
        from modelyard.monitoring.windows import floor_time, profile_table

        aligned = floor_time(start, granularity) == start and floor_time(end, granularity) == end
        closed = self.windows.watermark(endpoint, granularity)
        if aligned and closed is not None and end <= closed:
            return self._stored(endpoint, granularity, start, end)
        table = self.windows.log.read(endpoint, start=start, end=end)
        return list(profile_table(table).values())


# -- helpers -----------------------------------------------------------------------------------


def _merged(first: WindowContent, contents: Sequence[WindowContent]) -> WindowContent:
    """All contents of ``first``'s version merged into one."""
    from modelyard.monitoring.windows import WindowContent

    merged = WindowContent(model=first.model, version=first.version)
    for content in contents:
        if content.model == first.model and content.version == first.version:
            merged.add(content)
    return merged


def _ops(
    start: datetime, end: datetime, version: int | None, contents: Sequence[WindowContent]
) -> OpsWindow:
    from modelyard.monitoring.profiles import NumericProfile

    requests = sum(c.requests for c in contents)
    errors = sum(c.errors for c in contents)
    latency: Profile | None = None
    for content in contents:
        latency = content.latency if latency is None else latency.merge(content.latency)
    p50 = p95 = p99 = None
    feature = latency.features.get("latency_ms") if latency is not None else None
    if isinstance(feature, NumericProfile) and feature.count:
        p50, p95, p99 = (float(q) for q in feature.quantiles([0.5, 0.95, 0.99]))
    return OpsWindow(
        window_start=start,
        window_end=end,
        version=version,
        requests=requests,
        rows=sum(c.rows for c in contents),
        errors=errors,
        error_rate=errors / requests if requests else None,
        throughput_rps=requests / max((end - start).total_seconds(), 1e-9),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
    )


def _named_columns(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """1-D columns by name; a 2-D array becomes ``name[i]`` per column, as in windows."""
    import numpy as np

    from modelyard.monitoring.windows import MAX_PROFILED_WIDTH

    out: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        values = np.asarray(values)
        if values.ndim <= 1:
            out[name] = values.reshape(-1)
        elif values.ndim == 2 and values.shape[1] <= MAX_PROFILED_WIDTH:
            for i in range(values.shape[1]):
                out[f"{name}[{i}]"] = values[:, i]
    return out


def _inputs_of(kind: str, names: list[str], chunk: pd.DataFrame) -> dict[str, np.ndarray]:
    if kind == "columns":
        return {name: chunk[name].to_numpy() for name in names}
    name = names[0] if names else "input"
    return {name: chunk.to_numpy()}


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.exists():
        raise InvalidInput(f"reference data file {path} does not exist")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
    except Exception as exc:
        raise InvalidInput(f"cannot read reference data {path}: {exc}") from exc
    raise InvalidInput(f"reference data must be .parquet or .csv; got {path.name}")


def _reference(version: ModelVersion, row: ReferenceProfileRow, include: bool) -> ReferenceProfile:
    return ReferenceProfile(
        model=version.model,
        version=version.version,
        source=row.source,
        rows=row.rows,
        features=sorted(row.profile.get("features", {})),
        created_at=row.created_at,
        profile=row.profile if include else None,
    )


def _no_reference(version: ModelVersion) -> str:
    uri = f"models:/{version.model}/{version.version}"
    return (
        f"{uri} has no reference profile; set one with "
        f"`modelyard monitor reference {uri} --data train.parquet` (or --dataset NAME), "
        "or register the version with a training dataset in its lineage"
    )


def history_granularity(granularities: Sequence[int]) -> int:
    """Hourly if kept, else the finest of at least half an hour, else the coarsest: a day's
    drift over time in a few dozen windows."""
    if 3600 in granularities:
        return 3600
    coarse = [g for g in granularities if g >= 1800]
    return min(coarse) if coarse else max(granularities)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "settings"
    return f"{where}: {err['msg']}"


def _main(contents: Sequence[WindowContent]) -> WindowContent | None:
    """The window content of the version that answered most (None: only failed requests,
    e.g. every one shed, logged as version 0)."""
    answered = [c for c in contents if c.version >= 1 and c.rows > 0]
    return max(answered, key=lambda c: c.rows) if answered else None
