"""Monitoring over HTTP: status, drift, performance, feedback, alert rules and alerts, KPIs.

The class mirrors :class:`~modelyard.monitoring.service.MonitoringService` method for
method (see ``http.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

from modelyard.client.http_transport import HttpTransport, _dump, _q
from modelyard.monitoring.alerts import Alert, AlertRule, AlertRuleSpec
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.entities import (
    EndpointDrift,
    EndpointStatus,
    MonitorPass,
    OpsWindow,
    ReferenceProfile,
)
from modelyard.monitoring.kpis import KpiEvaluation

if TYPE_CHECKING:  # their modules import numpy and pyarrow: loaded by the calls that use them
    from modelyard.monitoring.feedback import (
        Feedback,
        FeedbackItem,
        FeedbackResult,
        PendingFeedback,
    )
    from modelyard.monitoring.performance import PerformanceReport
    from modelyard.monitoring.redaction import ForgetResult


class HttpMonitoring:
    """:class:`~modelyard.monitoring.service.MonitoringService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def _list(self, path: str, model: Any, **params: Any) -> Any:
        params = {k: _param(v) for k, v in params.items() if v is not None}
        return TypeAdapter(model).validate_json(self.t.request("GET", path, params=params).content)

    def status(self, endpoint: str | None = None) -> list[EndpointStatus]:
        return self._list("/monitoring/status", list[EndpointStatus], endpoint=endpoint)

    def run_once(self) -> MonitorPass:
        return self.t.send("POST", "/monitoring/run", MonitorPass)

    def get_config(self, endpoint: str) -> MonitorConfig:
        return self.t.get(f"/monitoring/endpoints/{_q(endpoint)}/config", MonitorConfig)

    def configure(self, endpoint: str, config: MonitorConfig | Mapping[str, Any]) -> MonitorConfig:
        body = _dump(config) if isinstance(config, BaseModel) else dict(config)
        return self.t.send(
            "PUT", f"/monitoring/endpoints/{_q(endpoint)}/config", MonitorConfig, body
        )

    def set_reference(
        self,
        uri: str,
        *,
        data: Any = None,
        dataset: str | None = None,
        dataset_version: int | None = None,
    ) -> ReferenceProfile:
        if data is not None and not isinstance(data, Mapping):
            import pandas as pd

            frame = data if isinstance(data, pd.DataFrame) else pd.read_parquet(data)
            # NaN travels as null (missing), not as the string "NaN".
            data = frame.astype(object).where(frame.notna(), None).to_dict(orient="list")
        if data is not None:
            data = {str(k): [_param(x) for x in v] for k, v in dict(data).items()}
        body = {"uri": uri, "data": data, "dataset": dataset, "dataset_version": dataset_version}
        return self.t.send("POST", "/monitoring/references", ReferenceProfile, body)

    def get_reference(self, uri: str, *, include_profile: bool = False) -> ReferenceProfile:
        return self.t.get(
            "/monitoring/references", ReferenceProfile, uri=uri, include_profile=include_profile
        )

    def _range(self, **kw: Any) -> dict[str, Any]:
        return {k: _param(v) for k, v in kw.items() if v is not None}

    def drift(self, endpoint: str, **kw: Any) -> EndpointDrift:
        return self.t.get(
            f"/monitoring/endpoints/{_q(endpoint)}/drift", EndpointDrift, **self._range(**kw)
        )

    def drift_html(self, endpoint: str, **kw: Any) -> str:
        response = self.t.request(
            "GET", f"/monitoring/endpoints/{_q(endpoint)}/drift.html", params=self._range(**kw)
        )
        return response.text

    def operations(self, endpoint: str, **kw: Any) -> list[OpsWindow]:
        return self._list(f"/monitoring/endpoints/{_q(endpoint)}/operations", list[OpsWindow], **kw)

    def performance(self, endpoint: str, **kw: Any) -> PerformanceReport:
        from modelyard.monitoring.performance import PerformanceReport

        return self.t.get(
            f"/monitoring/endpoints/{_q(endpoint)}/performance",
            PerformanceReport,
            **self._range(**kw),
        )

    def submit_feedback(
        self, endpoint: str, items: Iterable[FeedbackItem | Mapping[str, Any]]
    ) -> FeedbackResult:
        from modelyard.monitoring.feedback import FeedbackResult

        body = {"items": [_dump(i) if isinstance(i, BaseModel) else dict(i) for i in items]}
        return self.t.send(
            "POST", f"/monitoring/endpoints/{_q(endpoint)}/feedback", FeedbackResult, body
        )

    def list_feedback(self, endpoint: str, **kw: Any) -> list[Feedback]:
        from modelyard.monitoring.feedback import Feedback

        return self._list(f"/monitoring/endpoints/{_q(endpoint)}/feedback", list[Feedback], **kw)

    def list_held_feedback(self, endpoint: str, status: str | None = None) -> list[PendingFeedback]:
        from modelyard.monitoring.feedback import PendingFeedback

        return self._list(
            f"/monitoring/endpoints/{_q(endpoint)}/feedback/pending",
            list[PendingFeedback],
            status=status,
        )

    def create_rule(self, spec: AlertRuleSpec | Mapping[str, Any]) -> AlertRule:
        body = _dump(spec) if isinstance(spec, BaseModel) else dict(spec)
        return self.t.send("POST", "/monitoring/rules", AlertRule, body)

    def get_rule(self, name: str) -> AlertRule:
        return self.t.get(f"/monitoring/rules/{_q(name)}", AlertRule)

    def list_rules(self, endpoint: str | None = None) -> list[AlertRule]:
        return self._list("/monitoring/rules", list[AlertRule], endpoint=endpoint)

    def update_rule(self, name: str, **changes: Any) -> AlertRule:
        return self.t.send("PATCH", f"/monitoring/rules/{_q(name)}", AlertRule, changes)

    def delete_rule(self, name: str) -> None:
        self.t.request("DELETE", f"/monitoring/rules/{_q(name)}")

    def list_alerts(
        self,
        endpoint: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        *,
        rule: str | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        return self._list(
            "/monitoring/alerts",
            list[Alert],
            endpoint=endpoint,
            status=status,
            since=since,
            rule=rule,
            limit=limit,
        )

    def get_alert(self, alert_id: str) -> Alert:
        return self.t.get(f"/monitoring/alerts/{_q(alert_id)}", Alert)

    def resolve_alert(self, alert_id: str, note: str = "") -> Alert:
        return self.t.send(
            "POST", f"/monitoring/alerts/{_q(alert_id)}/resolve", Alert, {"note": note}
        )

    def acknowledge_alert(self, alert_id: str, note: str = "") -> Alert:
        return self.t.send(
            "POST", f"/monitoring/alerts/{_q(alert_id)}/acknowledge", Alert, {"note": note}
        )

    def kpis(self, project: str, **kw: Any) -> list[KpiEvaluation]:
        return self._list("/monitoring/kpis", list[KpiEvaluation], project=project, **kw)

    def forget(self, endpoint: str, key: str, value: str) -> ForgetResult:
        from modelyard.monitoring.redaction import ForgetResult

        body = {"key": key, "value": str(value)}
        return self.t.send(
            "POST", f"/monitoring/endpoints/{_q(endpoint)}/forget", ForgetResult, body
        )


def _param(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
