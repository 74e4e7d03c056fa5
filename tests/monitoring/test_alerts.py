"""Alert rules and alerts: validation, fire-once, insufficient windows, auto-resolve,
escalation, audit, in-process events, and webhooks posted to a real receiver on loopback."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelyard.errors import AlreadyExists, Conflict, Forbidden, InvalidInput, NotFound
from modelyard.monitoring.alerts import (
    Alert,
    AlertEvent,
    AlertRuleSpec,
    AlertService,
    WebhookPolicy,
)
from modelyard.store.tables import MonitorConfigRow
from modelyard.workspace import Workspace

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
W = 300
FAST = WebhookPolicy(attempts=4, backoff=0.01, max_backoff=0.05, timeout=2.0)


def window(i: int) -> datetime:
    return T0 + timedelta(seconds=W * i)


def spec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "errors-high",
        "endpoint": "churn",
        "kind": "error_rate",
        "metric": "error_rate",
        "op": ">",
        "threshold": 0.05,
        "window": W,
        "min_samples": 100,
    }
    base.update(kw)
    return base


def obs(error_rate: float | None, requests: int = 1000, **more: Any) -> dict[str, Any]:
    errors = None if error_rate is None else round(error_rate * requests)
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": error_rate,
        "latency_p99_ms": 7.5,
        "drift_share": 0.1,
        **more,
    }


@pytest.fixture
def alerts(any_workspace: Workspace) -> Iterator[AlertService]:
    service = AlertService(any_workspace, webhooks=FAST)
    yield service
    assert service.flush_notifications(timeout=30)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records bodies; the first ``fail`` calls get 503."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.calls += 1
                    failing = receiver.calls <= receiver.fail
                    if not failing:
                        receiver.bodies.append(json.loads(body))
                        receiver.headers.append(dict(self.headers.items()))
                self.send_response(503 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def dead_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"


# --- rules ------------------------------------------------------------------------------


def test_rule_crud_round_trip_and_audit(alerts: AlertService, any_workspace: Workspace) -> None:
    ws = any_workspace
    rule = alerts.create_rule(AlertRuleSpec(**spec(webhooks=["https://hooks.example.com/a"])))
    assert rule.kind == "error_rate" and rule.min_samples == 100 and rule.enabled
    assert rule.created_by == ws.actor and rule.created_at.tzinfo is not None
    assert alerts.get_rule("errors-high") == rule
    alerts.create_rule(spec(name="p99", kind="latency", metric="latency_p99_ms", threshold=50))
    alerts.create_rule(spec(name="other", endpoint="fraud"))
    assert [r.name for r in alerts.list_rules()] == ["errors-high", "other", "p99"]
    assert [r.name for r in alerts.list_rules("churn")] == ["errors-high", "p99"]

    updated = alerts.update_rule("errors-high", threshold=0.1, auto_resolve=True)
    assert (updated.threshold, updated.auto_resolve, updated.id) == (0.1, True, rule.id)
    assert alerts.update_rule("errors-high", threshold=0.1) == updated  # no change, no record
    alerts.delete_rule("other")
    with pytest.raises(NotFound, match="no alert rule 'other'"):
        alerts.get_rule("other")
    with pytest.raises(NotFound):
        alerts.delete_rule("other")

    records = ws.audit.list(entity_type="alert_rule").items
    assert [(r.action, r.entity_id) for r in reversed(records)] == [
        ("alert_rule.create", "errors-high"),
        ("alert_rule.create", "p99"),
        ("alert_rule.create", "other"),
        ("alert_rule.update", "errors-high"),
        ("alert_rule.delete", "other"),
    ]
    update = records[1]
    assert update.before == {"threshold": 0.05, "auto_resolve": False}
    assert update.after == {"threshold": 0.1, "auto_resolve": True}
    assert ws.audit.verify().ok


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kind": "latency", "metric": "error_rate"}, "does not fit kind 'latency'"),
        ({"kind": "drift", "metric": "accuracy"}, "does not fit kind 'drift'"),
        ({"kind": "drift", "metric": "drift."}, "does not fit"),
        ({"kind": "kpi", "metric": "conversion"}, r"kpi\.<name"),
        ({"kind": "performance", "metric": "latency_p99_ms"}, "does not fit"),
        ({"kind": "error_rate", "metric": "drift_share"}, "does not fit"),
        ({"kind": "volume", "metric": "error_rate"}, "idle_windows, requests, rows"),
        ({"kind": "anomaly"}, "kind"),
        ({"op": "=="}, "op"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": float("inf")}, "threshold"),
        ({"window": 0}, "window"),
        ({"window": 60}, "not one of endpoint 'churn'"),
        ({"min_samples": -1}, "min_samples"),
        ({"escalate_after": 0}, "escalate_after"),
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": "   "}, "endpoint"),
        ({"name": "has space"}, "name"),
        ({"webhooks": ["ftp://example.com/x"]}, "http"),
        ({"webhooks": ["not a url"]}, "webhook"),
        ({"webhooks": ["http://"]}, "webhook"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_rule_validation(workspace: Workspace, changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        AlertService(workspace).create_rule(spec(**changes))


def test_rule_metric_forms_accepted(workspace: Workspace) -> None:
    service = AlertService(workspace)
    for i, (kind, metric) in enumerate(
        [
            ("drift", "drift_share"),
            ("drift", "drifted_features"),
            ("drift", "drift.f3"),
            ("performance", "accuracy"),
            ("performance", "f1.segment=a"),
            ("kpi", "kpi.conversion"),
            ("latency", "latency_p50_ms"),
            ("error_rate", "errors"),
            ("volume", "requests"),
            ("volume", "throughput_rps"),
            ("volume", "idle_windows"),
        ]
    ):
        service.create_rule(spec(name=f"r{i}", kind=kind, metric=metric, endpoint="any-name"))
    assert len(service.list_rules("any-name")) == 11
    # The same URL twice is notified once.
    rule = service.create_rule(spec(name="dup", webhooks=["http://a.example/x"] * 2))
    assert rule.webhooks == ["http://a.example/x"]


def test_rule_conflicts_and_updates_are_checked(alerts: AlertService) -> None:
    alerts.create_rule(spec())
    with pytest.raises(AlreadyExists, match="exists already"):
        alerts.create_rule(spec(threshold=0.2))
    with pytest.raises(InvalidInput, match="no field"):
        alerts.update_rule("errors-high", colour="red")
    with pytest.raises(InvalidInput, match="cannot be renamed"):
        alerts.update_rule("errors-high", name="other")
    with pytest.raises(InvalidInput, match="does not fit"):
        alerts.update_rule("errors-high", metric="latency_p99_ms")
    with pytest.raises(NotFound):
        alerts.update_rule("missing", threshold=1)
    assert alerts.get_rule("errors-high").metric == "error_rate"


def test_window_must_be_a_configured_granularity(workspace: Workspace) -> None:
    service = AlertService(workspace)
    service.create_rule(spec(name="day", window=86400))
    with workspace.store.write("test") as tx:
        tx.session.add(
            MonitorConfigRow(
                endpoint="churn", config={"granularities": [900]}, updated_at=datetime.now(UTC)
            )
        )
    with pytest.raises(InvalidInput, match=r"\[900\]"):
        service.create_rule(spec(name="five", window=300))
    assert service.create_rule(spec(name="fifteen", window=900)).window == 900


# --- evaluation -------------------------------------------------------------------------


def test_fires_once_and_is_idempotent(alerts: AlertService, any_workspace: Workspace) -> None:
    ws = any_workspace
    alerts.create_rule(spec())
    assert alerts.evaluate("churn", W, window(0), obs(0.01), 1000) == []
    opened = alerts.evaluate("churn", W, window(1), obs(0.08), {"requests": 1000}, now=window(2))
    assert len(opened) == 1
    alert = opened[0]
    assert (alert.status, alert.value, alert.threshold, alert.op) == ("open", 0.08, 0.05, ">")
    assert alert.window_start == window(1) and alert.window_end == window(2)
    assert alert.opened_at == window(2) and alert.samples == 1000
    assert alert.evidence["observation"] == {"requests": 1000, "errors": 80, "error_rate": 0.08}

    # The same window again (a monitor restart): nothing new.
    assert alerts.evaluate("churn", W, window(1), obs(0.08), 1000) == []
    # Still breaching in later windows: the alert notes it, no second alert.
    later = alerts.evaluate("churn", W, window(2), obs(0.12), 1000)
    assert [a.id for a in later] == [alert.id]
    assert later[0].evidence["latest"]["value"] == 0.12
    assert later[0].evidence["breaching_windows"] == 2
    alerts.evaluate("churn", W, window(2), obs(0.12), 1000)  # re-run: counted once
    alerts.evaluate("churn", W, window(0), obs(0.5), 1000)  # an older window: ignored

    [only] = alerts.list_alerts("churn")
    assert only.id == alert.id and only.value == 0.08
    assert only.evidence["breaching_windows"] == 2
    assert alerts.get_alert(alert.id) == only
    assert [r.action for r in ws.audit.list(entity_type="alert").items] == ["alert.open"]
    record = ws.audit.list(entity_type="alert").items[0]
    assert record.entity_id == alert.id
    assert record.after is not None and record.after["value"] == 0.08
    assert Alert.model_validate_json(only.model_dump_json()) == only


def test_insufficient_or_missing_never_fires_nor_resolves(alerts: AlertService) -> None:
    alerts.create_rule(spec(auto_resolve=True))
    assert alerts.evaluate("churn", W, window(0), obs(0.5, requests=99), 99) == []
    assert alerts.evaluate("churn", W, window(0), obs(0.5), {"requests": 99}) == []
    assert alerts.evaluate("churn", W, window(0), obs(0.5), {}) == []  # no count: unproven
    assert alerts.evaluate("churn", W, window(0), obs(None), 1000) == []
    assert alerts.evaluate("churn", W, window(0), {"requests": 1000}, 1000) == []
    assert alerts.evaluate("churn", W, window(0), {"error_rate": float("nan")}, 1000) == []
    not_a_number: dict[str, Any] = {"error_rate": "high"}
    assert alerts.evaluate("churn", W, window(0), not_a_number, 1000) == []
    assert alerts.list_alerts() == []

    [alert] = alerts.evaluate("churn", W, window(1), obs(0.5), 1000)
    # Within threshold but too few samples, or not measured: the alert stays open.
    assert alerts.evaluate("churn", W, window(2), obs(0.0, requests=10), 10) == []
    assert alerts.evaluate("churn", W, window(3), obs(None), 1000) == []
    assert alerts.get_alert(alert.id).status == "open"


def test_other_endpoints_windows_and_disabled_rules_are_not_evaluated(
    alerts: AlertService,
) -> None:
    alerts.create_rule(spec())
    alerts.create_rule(spec(name="hourly", window=3600))
    assert alerts.evaluate("fraud", W, window(0), obs(0.5), 1000) == []
    [alert] = alerts.evaluate("churn", 3600, window(0), obs(0.5), 1000)
    assert alert.rule == "hourly" and alert.window == 3600
    alerts.update_rule("errors-high", enabled=False)
    assert alerts.evaluate("churn", W, window(0), obs(0.5), 1000) == []
    alerts.update_rule("errors-high", enabled=True)
    assert len(alerts.evaluate("churn", W, window(1), obs(0.5), 1000)) == 1


def test_sample_counts_per_metric(alerts: AlertService) -> None:
    alerts.create_rule(spec(name="drift", kind="drift", metric="drift.f3", threshold=0.2))
    observation = {"drift.f3": 0.31, "drift.f1": 0.01, "drift_share": 0.5, "error_rate": 0.9}
    # The feature's own count decides, not the window's.
    assert alerts.evaluate("churn", W, window(0), observation, {"drift.f3": 10, "rows": 500}) == []
    [alert] = alerts.evaluate("churn", W, window(1), observation, {"drift.f3": 500, "rows": 10})
    assert alert.samples == 500
    # Evidence: the drift metrics of the window, nothing unrelated.
    assert alert.evidence["observation"] == {"drift.f3": 0.31, "drift.f1": 0.01, "drift_share": 0.5}


def test_auto_resolve_and_reopen(alerts: AlertService, any_workspace: Workspace) -> None:
    alerts.create_rule(spec(auto_resolve=True))
    alerts.create_rule(spec(name="sticky", threshold=0.05))
    opened = alerts.evaluate("churn", W, window(0), obs(0.09), 1000)
    assert sorted(a.rule for a in opened) == ["errors-high", "sticky"]
    # The window that fired, re-run with the condition gone: not "a later window".
    assert alerts.evaluate("churn", W, window(0), obs(0.01), 1000) == []

    [resolved] = alerts.evaluate("churn", W, window(1), obs(0.01), 1000, now=window(2))
    assert resolved.rule == "errors-high" and resolved.status == "resolved"
    assert resolved.resolved_by == any_workspace.actor
    assert resolved.resolution_note.startswith("auto-resolved: error_rate = 0.01")
    assert resolved.evidence["resolution"]["auto"] is True
    sticky = alerts.list_alerts(rule="sticky")[0]
    assert sticky.status == "open"

    # Re-running the first window never reopens its incident; a new breach opens a new alert.
    assert alerts.evaluate("churn", W, window(0), obs(0.09), 1000) == []
    changed = alerts.evaluate("churn", W, window(2), obs(0.2), 1000)
    again, noted = sorted(changed, key=lambda a: a.rule)
    assert again.rule == "errors-high" and again.id != resolved.id and again.status == "open"
    assert noted.id == sticky.id and noted.evidence["latest"]["value"] == 0.2
    actions = [r.action for r in any_workspace.audit.list(entity_type="alert").items]
    assert sorted(actions) == ["alert.open", "alert.open", "alert.open", "alert.resolve"]


def test_manual_resolve(alerts: AlertService, any_workspace: Workspace) -> None:
    alerts.create_rule(spec())
    [alert] = alerts.evaluate("churn", W, window(0), obs(0.5), 1000)
    bob = AlertService(any_workspace.as_actor("bob"))
    done = bob.resolve(alert.id, note="rolled back to v3")
    assert (done.status, done.resolved_by, done.resolution_note) == (
        "resolved",
        "bob",
        "rolled back to v3",
    )
    assert done.resolved_at is not None
    with pytest.raises(Conflict, match="resolved already"):
        alerts.resolve(alert.id)
    with pytest.raises(NotFound, match="no alert"):
        alerts.resolve("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(NotFound):
        alerts.get_alert("nope")
    record = any_workspace.audit.list(action="alert.resolve").items[0]
    assert (record.actor, record.before) == ("bob", {"status": "open"})
    assert record.after is not None and record.after["note"] == "rolled back to v3"
    # Resolved by hand while still breaching: the next breaching window opens a new alert.
    assert len(alerts.evaluate("churn", W, window(1), obs(0.5), 1000)) == 1


def test_escalation(alerts: AlertService, any_workspace: Workspace) -> None:
    alerts.create_rule(spec(escalate_after=600, auto_resolve=True))
    alerts.create_rule(spec(name="never", threshold=0.01))  # no escalate_after
    events: list[AlertEvent] = []
    alerts.subscribe(events.append)
    opened_at = window(1)
    alerts.evaluate("churn", W, window(0), obs(0.5), 1000, now=opened_at)
    assert alerts.escalate_due(now=opened_at + timedelta(seconds=599)) == []
    [escalated] = alerts.escalate_due(now=opened_at + timedelta(seconds=600))
    assert escalated.status == "escalated" and escalated.rule == "errors-high"
    assert escalated.escalated_at == opened_at + timedelta(seconds=600)
    assert alerts.escalate_due(now=opened_at + timedelta(days=1)) == []  # once only

    # Still breaching: no new alert; an escalated alert auto-resolves like an open one.
    assert all(a.status == "escalated" or a.rule == "never" for a in alerts.list_alerts())
    alerts.evaluate("churn", W, window(1), obs(0.5), 1000)
    assert len(alerts.list_alerts()) == 2
    alerts.evaluate("churn", W, window(2), obs(0.0), 1000)
    assert [(e.kind, e.alert.rule) for e in events if e.alert.rule == "errors-high"] == [
        ("opened", "errors-high"),
        ("escalated", "errors-high"),
        ("resolved", "errors-high"),
    ]
    record = any_workspace.audit.list(action="alert.escalate").items[0]
    assert record.before == {"status": "open"}
    resolve = any_workspace.audit.list(action="alert.resolve").items[0]
    assert resolve.before == {"status": "escalated"}


def test_acknowledged_alerts_stay_open_and_do_not_escalate(
    alerts: AlertService, any_workspace: Workspace
) -> None:
    alerts.create_rule(spec(escalate_after=600))
    alerts.create_rule(spec(name="p99", kind="latency", metric="latency_p99_ms", threshold=5))
    events: list[AlertEvent] = []
    alerts.subscribe(events.append)
    opened_at = window(1)
    errors, p99 = sorted(
        alerts.evaluate("churn", W, window(0), obs(0.5), 1000, now=opened_at),
        key=lambda a: a.rule,
    )
    assert errors.acknowledged_at is None and errors.acknowledged_by == ""

    ann = AlertService(any_workspace.as_actor("ann"), webhooks=FAST)
    acked = ann.acknowledge(errors.id, note="looking at the gateway logs")
    assert acked.status == "open"  # someone is on it; nothing is fixed yet
    assert (acked.acknowledged_by, acked.acknowledgement_note) == (
        "ann",
        "looking at the gateway logs",
    )
    assert acked.acknowledged_at is not None
    assert acked.evidence["acknowledgement"] == {"note": "looking at the gateway logs"}
    # A note past the limit is refused, and nothing changes.
    with pytest.raises(InvalidInput, match="at most 2000 characters"):
        alerts.acknowledge(errors.id, note="x" * 2001)
    with pytest.raises(InvalidInput, match="at most 2000 characters"):
        alerts.resolve(errors.id, note="x" * 2001)
    # Twice: unchanged, the first acknowledgement stands, no second audit record.
    again = alerts.acknowledge(errors.id, note="me too")
    assert (again.acknowledged_by, again.acknowledged_at) == ("ann", acked.acknowledged_at)
    assert again.acknowledgement_note == "looking at the gateway logs"
    [record] = any_workspace.audit.list(action="alert.acknowledge").items
    assert (record.actor, record.entity_id, record.before) == ("ann", errors.id, {"status": "open"})
    assert record.after is not None and record.after["acknowledged_by"] == "ann"
    assert record.after["acknowledgement_note"] == "looking at the gateway logs"

    # Past escalate_after: the acknowledged alert does not escalate.
    assert alerts.escalate_due(now=opened_at + timedelta(days=1)) == []
    assert alerts.get_alert(errors.id).status == "open"
    # Breaching windows still note the newest value on it.
    alerts.evaluate("churn", W, window(1), obs(0.7), 1000)
    assert alerts.get_alert(errors.id).evidence["latest"]["value"] == 0.7

    assert [a.id for a in alerts.list_alerts(status="acknowledged")] == [errors.id]
    assert {a.id for a in alerts.list_alerts(status="open")} == {errors.id, p99.id}
    both = alerts.list_alerts(status=["acknowledged", "resolved"])
    assert [a.id for a in both] == [errors.id]

    # Resolving still works, and keeps who acknowledged it.
    done = alerts.resolve(errors.id, note="gateway restarted")
    assert (done.status, done.acknowledged_by) == ("resolved", "ann")
    assert alerts.list_alerts(status="acknowledged") == []
    with pytest.raises(Conflict, match="only an open or escalated alert can be acknowledged"):
        alerts.acknowledge(errors.id)
    with pytest.raises(NotFound, match="no alert"):
        alerts.acknowledge("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert [(e.kind, e.alert.rule) for e in events] == [
        ("opened", "errors-high"),
        ("opened", "p99"),
        ("acknowledged", "errors-high"),
        ("resolved", "errors-high"),
    ]


def test_an_escalated_alert_acknowledged_stays_escalated(alerts: AlertService) -> None:
    alerts.create_rule(spec(escalate_after=60))
    [alert] = alerts.evaluate("churn", W, window(0), obs(0.5), 1000, now=window(1))
    [escalated] = alerts.escalate_due(now=window(2))
    acked = alerts.acknowledge(escalated.id)
    assert acked.status == "escalated" and acked.escalated_at == escalated.escalated_at
    assert [a.id for a in alerts.list_alerts(status="acknowledged")] == [alert.id]


def test_acknowledging_and_resolving_need_write(
    alerts: AlertService, any_workspace: Workspace
) -> None:
    alerts.create_rule(spec())
    [alert] = alerts.evaluate("churn", W, window(0), obs(0.5), 1000)
    any_workspace.identities.create_user("carol", "viewer")
    carol = AlertService(any_workspace.as_actor("carol"))
    with pytest.raises(Forbidden, match="acknowledge alerts"):
        carol.acknowledge(alert.id)
    with pytest.raises(Forbidden, match="resolve alerts"):
        carol.resolve(alert.id)
    assert alerts.get_alert(alert.id).acknowledged_at is None


def test_recent_alerts_newest_first_a_page_at_a_time(alerts: AlertService) -> None:
    alerts.create_rule(spec(auto_resolve=True))
    opened = []
    for i in range(0, 10, 2):  # breach, recover: five alerts, each resolved by the next window
        opened += alerts.evaluate("churn", W, window(i), obs(0.5), 1000, now=window(i + 1))
        alerts.evaluate("churn", W, window(i + 1), obs(0.0), 1000, now=window(i + 2))
    alerts.evaluate("churn", W, window(10), obs(0.5), 1000, now=window(11))
    first = alerts.recent_alerts("churn", limit=4)
    assert [a.opened_at for a in first.items] == [window(11), window(9), window(7), window(5)]
    rest = alerts.recent_alerts("churn", limit=4, page_token=first.next_page_token)
    assert [a.opened_at for a in rest.items] == [window(3), window(1)]
    assert rest.next_page_token is None
    assert [a.opened_at for a in alerts.recent_alerts(status="active").items] == [window(11)]
    assert alerts.recent_alerts("fraud").items == []
    with pytest.raises(InvalidInput, match="acknowledged"):
        alerts.recent_alerts(status="snoozed")


def test_disabled_rules_do_not_escalate(alerts: AlertService) -> None:
    alerts.create_rule(spec(escalate_after=60))
    alerts.evaluate("churn", W, window(0), obs(0.5), 1000, now=window(1))
    alerts.update_rule("errors-high", enabled=False)
    assert alerts.escalate_due(now=window(10)) == []
    alerts.update_rule("errors-high", enabled=True)
    assert len(alerts.escalate_due(now=window(10), endpoint="fraud")) == 0
    assert len(alerts.escalate_due(now=window(10), endpoint="churn")) == 1


def test_list_alerts_filters_and_stable_order(alerts: AlertService) -> None:
    alerts.create_rule(spec())
    alerts.create_rule(spec(name="p99", kind="latency", metric="latency_p99_ms", threshold=5))
    alerts.create_rule(spec(name="fraud-errors", endpoint="fraud"))
    a = alerts.evaluate("churn", W, window(0), obs(0.5), 1000, now=window(1))
    b = alerts.evaluate("fraud", W, window(0), obs(0.5), 1000, now=window(2))
    alerts.resolve(a[0].id)  # errors-high or p99, whichever is first
    everything = alerts.list_alerts()
    assert len(everything) == 3
    assert [x.opened_at for x in everything] == sorted(x.opened_at for x in everything)
    assert everything == alerts.list_alerts()  # the same order every time
    assert [x.id for x in alerts.list_alerts(since=window(2))] == [b[0].id]
    assert len(alerts.list_alerts(since=window(1))) == 3  # inclusive
    assert len(alerts.list_alerts("churn", status="active")) == 1
    assert len(alerts.list_alerts(status=["open", "resolved"])) == 3
    assert alerts.list_alerts(status="escalated") == []
    assert [x.rule for x in alerts.list_alerts(rule="fraud-errors")] == ["fraud-errors"]
    assert len(alerts.list_alerts(limit=2)) == 2
    with pytest.raises(InvalidInput, match="not one of"):
        alerts.list_alerts(status="closed")
    with pytest.raises(NotFound):
        alerts.list_alerts(rule="missing")


def test_deleting_a_rule_deletes_its_alerts(alerts: AlertService) -> None:
    alerts.create_rule(spec())
    [alert] = alerts.evaluate("churn", W, window(0), obs(0.5), 1000)
    alerts.delete_rule("errors-high")
    assert alerts.list_alerts() == []
    with pytest.raises(NotFound):
        alerts.get_alert(alert.id)


def test_concurrent_evaluations_of_one_window_open_one_alert(
    alerts: AlertService, any_workspace: Workspace
) -> None:
    alerts.create_rule(spec())
    barrier = threading.Barrier(6)
    results: list[list[Alert]] = []

    def run() -> None:
        service = AlertService(any_workspace)
        barrier.wait()
        results.append(service.evaluate("churn", W, window(0), obs(0.5), 1000))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 0, 1]
    assert len(alerts.list_alerts()) == 1


def test_kpi_rule_fires_on_kpi_metric(alerts: AlertService) -> None:
    alerts.create_rule(
        spec(name="conversion", kind="kpi", metric="kpi.conversion", op="<", threshold=0.03)
    )
    [alert] = alerts.evaluate(
        "churn", W, window(0), {**obs(0.0), "kpi.conversion": 0.02}, {"kpi.conversion": 400}
    )
    assert alert.kind == "kpi" and alert.evidence["observation"] == {"kpi.conversion": 0.02}


# --- events and webhooks ----------------------------------------------------------------


def test_subscribers_are_shared_and_isolated(
    any_workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    ws = any_workspace
    first = AlertService(ws)
    first.create_rule(spec(auto_resolve=True))
    seen: list[str] = []

    def broken(event: AlertEvent) -> None:
        raise RuntimeError("subscriber bug")

    first.subscribe(broken)
    unsubscribe = first.subscribe(lambda e: seen.append(f"{e.kind}:{e.rule.name}"))
    # Another service (and another actor's view) of the same workspace publishes to them.
    other = AlertService(ws.as_actor("monitor"))
    with caplog.at_level(logging.ERROR, logger="modelyard.monitoring.alerts"):
        [opened] = other.evaluate("churn", W, window(0), obs(0.5), 1000)
    assert seen == ["opened:errors-high"]
    assert "subscriber bug" in caplog.text
    assert opened.status == "open"  # the change committed regardless

    unsubscribe()
    unsubscribe()  # twice is harmless
    other.evaluate("churn", W, window(1), obs(0.0), 1000)
    assert seen == ["opened:errors-high"]
    assert other.get_alert(opened.id).status == "resolved"


def test_webhook_retries_until_delivered(alerts: AlertService) -> None:
    flaky = Receiver(fail=2)
    try:
        alerts.create_rule(spec(webhooks=[flaky.url], auto_resolve=True))
        [alert] = alerts.evaluate("churn", W, window(0), obs(0.5), 1000)
        assert alerts.flush_notifications(timeout=30)
        assert flaky.calls == 3
        [body] = flaky.bodies
        assert body["event"] == "alert.opened" and body["kind"] == "opened"
        assert body["alert"]["id"] == alert.id and body["alert"]["value"] == 0.5
        assert body["rule"]["name"] == "errors-high"
        assert AlertEvent.model_validate({k: body[k] for k in ("kind", "alert", "rule")})
        assert flaky.headers[0]["x-modelyard-delivery"] == f"{alert.id}:opened"
        [note] = alerts.get_alert(alert.id).notifications
        assert note["ok"] is True and note["status"] == 200 and note["attempts"] == 3
        assert note["event"] == "opened" and note["url"] == flaky.url

        alerts.evaluate("churn", W, window(1), obs(0.0), 1000)
        assert alerts.flush_notifications(timeout=30)
        assert [b["event"] for b in flaky.bodies] == ["alert.opened", "alert.resolved"]
        assert flaky.bodies[1]["alert"]["status"] == "resolved"
        notes = alerts.get_alert(alert.id).notifications
        assert [(n["event"], n["ok"], n["attempts"]) for n in notes] == [
            ("opened", True, 3),
            ("resolved", True, 1),
        ]
    finally:
        flaky.close()


def test_dead_webhook_does_not_block_or_break_evaluation(
    any_workspace: Workspace, receiver: Receiver
) -> None:
    # Slow retries (3 s of backoff each): evaluation returns while they are still going on,
    # so no delivery to the dead webhook has been recorded yet when it does.
    service = AlertService(any_workspace, webhooks=WebhookPolicy(attempts=3, backoff=1.0))
    dead = dead_url()
    service.create_rule(spec(webhooks=[dead, receiver.url], escalate_after=60))
    [alert] = service.evaluate("churn", W, window(0), obs(0.5), 1000, now=window(1))
    [escalated] = service.escalate_due(now=window(10))
    assert alert.status == "open" and escalated.status == "escalated"
    assert not [n for n in service.get_alert(alert.id).notifications if n["url"] == dead]
    assert service.flush_notifications(timeout=30)

    notes = service.get_alert(alert.id).notifications
    by_url = {(n["url"], n["event"]): n for n in notes}
    assert len(notes) == 4
    for event in ("opened", "escalated"):
        failed = by_url[(dead, event)]
        assert failed["ok"] is False and failed["status"] is None and failed["attempts"] == 3
        assert "ConnectError" in failed["error"]
        assert by_url[(receiver.url, event)]["ok"] is True
    assert sorted(b["event"] for b in receiver.bodies) == ["alert.escalated", "alert.opened"]


def test_webhook_client_errors_are_not_retried(alerts: AlertService) -> None:
    alerts.create_rule(spec(webhooks=[]))

    class Gone(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(410)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        alerts.update_rule("errors-high", webhooks=[url])
        [alert] = alerts.evaluate("churn", W, window(0), obs(0.5), 1000)
        assert alerts.flush_notifications(timeout=30)
        [note] = alerts.get_alert(alert.id).notifications
        assert (note["ok"], note["status"], note["attempts"], note["error"]) == (
            False,
            410,
            1,
            "HTTP 410",
        )
    finally:
        server.shutdown()
        server.server_close()


def test_volume_rules_judge_windows_without_traffic(alerts: AlertService) -> None:
    alerts.create_rule(
        spec(kind="volume", metric="requests", op="<", threshold=10, min_samples=100)
    )
    # No request at all: an observation for a volume rule, whatever min_samples says.
    [opened] = alerts.evaluate("churn", W, window(0), obs(None, requests=0), {"requests": 0})
    assert opened.kind == "volume" and opened.value == 0
    assert opened.evidence["observation"]["requests"] == 0


def performance_spec(**kw: Any) -> dict[str, Any]:
    return spec(
        name="accuracy",
        kind="performance",
        metric="accuracy",
        op="<",
        threshold=0.9,
        min_samples=10,
        **kw,
    )


def labelled(accuracy: float) -> dict[str, Any]:
    return {"accuracy": accuracy, "feedback_samples": 50}


def test_late_windows_open_alerts_but_not_inside_a_covered_incident(
    alerts: AlertService,
) -> None:
    alerts.create_rule(performance_spec(auto_resolve=True))
    alerts.create_rule(spec(name="errors"))  # not a performance rule
    samples = {"feedback_samples": 50, "requests": 1000}
    [first] = alerts.evaluate("churn", W, window(0), labelled(0.5), samples, now=window(1))
    [resolved] = alerts.evaluate("churn", W, window(2), labelled(0.95), samples, now=window(3))
    assert resolved.status == "resolved"
    assert resolved.evidence["resolution"]["window_start"] == window(2).isoformat()

    # Labels for window 1 come late: it lies inside the incident window 2 resolved.
    late = {"kinds": ("performance",), "late": True, "now": window(9)}
    assert alerts.evaluate("churn", W, window(1), labelled(0.4), samples, **late) == []
    # Window 3 came after the recovery: its late labels open a new alert, marked late. The
    # error-rate rule is not evaluated again on a late window.
    observation = {**labelled(0.3), **obs(0.5)}
    [reopened] = alerts.evaluate("churn", W, window(3), observation, samples, **late)
    assert reopened.id != first.id and reopened.window_start == window(3)
    assert reopened.evidence["late_labels"] is True and reopened.rule == "accuracy"
    assert alerts.list_alerts(rule="errors") == []


def test_a_late_window_before_a_manual_resolution_opens_nothing(alerts: AlertService) -> None:
    alerts.create_rule(performance_spec())
    [opened] = alerts.evaluate("churn", W, window(0), labelled(0.5), 50, now=window(1))
    alerts.resolve(opened.id, note="fixed")  # by hand, now: after windows 0..n ended
    late = {"kinds": ("performance",), "late": True}
    assert alerts.evaluate("churn", W, window(1), labelled(0.4), 50, **late) == []
