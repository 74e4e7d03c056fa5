"""Triggers: cron ticks (once each, coalesced after downtime), real monitoring alerts, new
dataset versions; restarts, concurrent pollers, cool-down, failed launches, the loop's lease."""

from __future__ import annotations

import ast
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from croniter import croniter
from sklearn.linear_model import LogisticRegression
from ulid import ULID

from modelyard.errors import AlreadyExists, InvalidInput, NotFound
from modelyard.pipelines import StepContext, pipeline, step
from modelyard.pipelines.triggers import (
    MAX_MISSED,
    TriggerLoop,
    TriggerService,
    TriggerSpec,
)
from modelyard.store.tables import PipelineRow
from modelyard.workspace import Workspace

HOURLY = "0 * * * *"


class Launcher:
    """The boundary the lead wires to ``ws.pipelines.run``: records calls, returns run ids."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.called = threading.Event()

    def __call__(self, pipeline: str, params: dict[str, Any], trigger: dict[str, Any]) -> str:
        with self.lock:
            self.calls.append((pipeline, params, trigger))
        self.called.set()
        if self.fail is not None:
            raise self.fail
        return str(ULID())

    @property
    def events(self) -> list[str]:
        return [t["event"] for _, _, t in self.calls]


def add_pipeline(ws: Workspace, name: str = "retrain") -> None:
    now = datetime.now(UTC)
    with ws.store.write(ws.actor) as tx:
        tx.session.add(
            PipelineRow(name=name, source="examples.churn:pipeline", created_at=now, updated_at=now)
        )


@pytest.fixture
def ws(any_workspace: Workspace) -> Workspace:
    add_pipeline(any_workspace)
    return any_workspace


@pytest.fixture
def sqlite_ws(workspace: Workspace) -> Workspace:
    add_pipeline(workspace)
    return workspace


@pytest.fixture
def launcher() -> Launcher:
    return Launcher()


def schedule(name: str = "nightly", cron: str = HOURLY, **kw: Any) -> TriggerSpec:
    return TriggerSpec(name=name, pipeline="retrain", kind="schedule", cron=cron, **kw)


def ticks(service: TriggerService, name: str, n: int) -> list[datetime]:
    """The first ``n`` ticks after the trigger's cursor (its creation)."""
    trigger = service.get(name)
    it = croniter(trigger.cron, datetime.fromisoformat(trigger.cursor["at"]))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(n)]


def key(tick: datetime) -> str:
    return f"cron:{tick:%Y-%m-%dT%H:%M}Z"


# --- definitions ------------------------------------------------------------------------


def test_crud_validation_and_audit(sqlite_ws: Workspace, launcher: Launcher) -> None:
    ws = sqlite_ws
    service = TriggerService(ws, launcher)
    t = service.create(schedule(params={"epochs": 3}))
    assert (t.kind, t.cron, t.cooldown_seconds, t.enabled) == ("schedule", HOURLY, 0, True)
    assert t.created_by == ws.actor and "at" in t.cursor and t.last_fired_at is None
    alert = service.create(
        {"name": "on-drift", "pipeline": "retrain", "kind": "alert", "endpoint": "churn"}
    )
    assert alert.alert_kinds == ["drift", "performance", "kpi"] and alert.cooldown_seconds == 3600
    named = TriggerService(ws, launcher).create(
        {"name": "on-slow", "pipeline": "retrain", "kind": "alert", "rules": ["slow"]}
    )
    assert named.alert_kinds is not None  # named rules: any kind (volume, extraction too)
    assert {"volume", "extraction", "drift"} <= set(named.alert_kinds)
    service.delete("on-slow")
    ds = service.create(
        TriggerSpec(name="new-data", pipeline="retrain", kind="dataset", dataset="churn-train")
    )
    assert ds.cursor == {"version": 0} and ds.cooldown_seconds == 0
    assert service.get("nightly") == t
    assert [x.name for x in service.list()] == ["new-data", "nightly", "on-drift"]
    assert service.list(pipeline="other") == []

    updated = service.update("nightly", cron="30 2 * * *", cooldown_seconds=60)
    assert (updated.cron, updated.cooldown_seconds, updated.id) == ("30 2 * * *", 60, t.id)
    assert service.update("nightly", cron="30 2 * * *") == updated  # no change, no record
    service.delete("on-drift")
    with pytest.raises(NotFound, match="no trigger 'on-drift'"):
        service.get("on-drift")

    records = [(r.action, r.entity_id) for r in reversed(ws.audit.list().items)]
    assert [r for r in records if r[0].startswith("trigger.")] == [
        ("trigger.create", "nightly"),
        ("trigger.create", "on-drift"),
        ("trigger.create", "on-slow"),
        ("trigger.delete", "on-slow"),
        ("trigger.create", "new-data"),
        ("trigger.update", "nightly"),
        ("trigger.delete", "on-drift"),
    ]
    update = ws.audit.list(action="trigger.update").items[0]
    assert update.before == {"cron": HOURLY, "cooldown_seconds": 0}
    assert ws.audit.verify().ok

    with pytest.raises(AlreadyExists):
        service.create(schedule())
    with pytest.raises(NotFound, match="no pipeline 'nope'"):
        service.create(schedule(name="x").model_copy(update={"pipeline": "nope"}))
    with pytest.raises(InvalidInput, match="cannot change"):
        service.update("nightly", kind="alert")
    with pytest.raises(InvalidInput, match="no field"):
        service.update("nightly", colour="red")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "schedule"}, "needs cron"),
        ({"kind": "schedule", "cron": "every hour"}, "not a cron expression"),
        ({"kind": "schedule", "cron": "61 * * * *"}, "not a cron expression"),
        ({"kind": "schedule", "cron": HOURLY, "endpoint": "churn"}, "takes no endpoint"),
        ({"kind": "schedule", "cron": HOURLY, "dataset": "d"}, "takes no dataset"),
        ({"kind": "alert", "cron": HOURLY}, "takes no cron"),
        ({"kind": "alert", "alert_kinds": []}, "at least one"),
        ({"kind": "alert", "alert_kinds": ["anomaly"]}, "alert_kinds"),
        ({"kind": "dataset"}, "needs the name of the dataset"),
        ({"kind": "dataset", "dataset": "d", "params": {"trigger": 1}}, "set by the trigger"),
        ({"kind": "dataset", "dataset": "d", "cooldown_seconds": -1}, "cooldown"),
        ({"kind": "webhook"}, "kind"),
        ({"kind": "schedule", "cron": HOURLY, "name": "has space"}, "name"),
        ({"kind": "schedule", "cron": HOURLY, "colour": "red"}, "colour"),
    ],
)
def test_bad_specs_are_refused(
    sqlite_ws: Workspace, launcher: Launcher, fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        TriggerService(sqlite_ws, launcher).create({"name": "t", "pipeline": "retrain", **fields})


# --- schedules --------------------------------------------------------------------------


def test_cron_fires_once_per_tick_and_coalesces_after_downtime(
    ws: Workspace, launcher: Launcher
) -> None:
    service = TriggerService(ws, launcher)
    service.create(schedule(params={"epochs": 3}))
    t = ticks(service, "nightly", 8)
    assert service.poll(t[0] - timedelta(minutes=1)) == []
    [event] = service.poll(t[0])
    assert (event.outcome, event.event_key, event.event_at) == ("started", key(t[0]), t[0])
    assert event.run_id is not None and event.pipeline == "retrain"
    pipeline, params, info = launcher.calls[0]
    assert pipeline == "retrain" and params["epochs"] == 3
    assert params["trigger"] == {"name": "nightly", "event": key(t[0]), "tick": t[0].isoformat()}
    assert (info["kind"], info["trigger"], info["event"]) == ("schedule", "nightly", key(t[0]))
    assert service.poll(t[0]) == [] and service.poll(t[0] + timedelta(minutes=59)) == []

    # Downtime over five ticks: one run, for the latest; the others are recorded as missed.
    events = service.poll(t[5] + timedelta(minutes=10))
    assert [(e.event_key, e.outcome) for e in events] == [
        *((key(tick), "missed") for tick in t[1:5]),
        (key(t[5]), "started"),
    ]
    assert "4 earlier tick(s)" in events[-1].detail
    assert launcher.events == [key(t[0]), key(t[5])]
    assert service.get("nightly").last_fired_at == t[5] + timedelta(minutes=10)
    history = service.events("nightly")
    assert [e.event_key for e in history[:1]] == [key(t[5])] and len(history) == 6
    assert [e.outcome for e in service.events(outcome="started")] == ["started", "started"]
    fired = ws.audit.list(action="trigger.fire").items
    assert [r.after["event"] for r in fired] == [key(t[5]), key(t[0])]


def test_a_long_downtime_records_a_bounded_number_of_missed_ticks(
    sqlite_ws: Workspace, launcher: Launcher
) -> None:
    service = TriggerService(sqlite_ws, launcher)
    service.create(schedule(cron="* * * * *"))
    first = ticks(service, "nightly", 1)[0]
    events = service.poll(first + timedelta(days=2))
    assert len(events) == MAX_MISSED + 1 and len(launcher.calls) == 1
    assert events[-1].outcome == "started" and "more than 100" in events[-1].detail


def test_restart_and_crash_never_start_a_tick_twice(ws: Workspace) -> None:
    first = Launcher()
    service = TriggerService(ws, first)
    service.create(schedule())
    t = ticks(service, "nightly", 3)
    service.poll(t[0])

    # A new process on the same database: the state is all in the database.
    again = Workspace.open(ws.settings)
    try:
        second = Launcher()
        restarted = TriggerService(again, second)
        assert restarted.poll(t[0] + timedelta(minutes=5)) == []
        [event] = restarted.poll(t[1])
        assert event.outcome == "started" and second.events == [key(t[1])]
        assert service.poll(t[1]) == []

        # A crash mid-launch: the event was recorded before launching, so no retry starts it.
        class Crash(BaseException):
            pass

        with pytest.raises(Crash):
            TriggerService(again, Launcher(fail=Crash())).poll(t[2])
        third = Launcher()
        assert TriggerService(ws, third).poll(t[2] + timedelta(minutes=1)) == []
        assert third.calls == []
        assert TriggerService(ws, third).events("nightly")[0].outcome == "launching"
    finally:
        again.close()
    assert first.events == [key(t[0])]


def test_concurrent_pollers_start_one_run_per_event(ws: Workspace) -> None:
    launcher = Launcher()
    TriggerService(ws, launcher).create(schedule(name="a"))
    TriggerService(ws, launcher).create(schedule(name="b", cron="*/30 * * * *"))
    ws.tracking.log_dataset("churn-train", pd.DataFrame({"x": [1]}), store_data=False)
    TriggerService(ws, launcher).create(
        TriggerSpec(name="data", pipeline="retrain", kind="dataset", dataset="churn-train")
    )
    ws.tracking.log_dataset("churn-train", pd.DataFrame({"x": [2]}), store_data=False)
    t = ticks(TriggerService(ws, launcher), "a", 2)
    workspaces = [ws, Workspace.open(ws.settings)]  # two processes' worth of connections
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def poll(w: Workspace) -> None:
        try:
            service = TriggerService(w, launcher)
            barrier.wait()
            for now in (t[0], t[0], t[1], t[1]):
                service.poll(now)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poll, args=(workspaces[i % 2],)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        workspaces[1].close()
    assert errors == []
    started = [(info["trigger"], info["event"]) for _, _, info in launcher.calls]
    assert len(started) == len(set(started))
    assert {("a", key(t[0])), ("a", key(t[1])), ("data", "dataset:churn-train/2")} <= set(started)
    events = TriggerService(ws, launcher).events(limit=100)
    assert len({(e.trigger, e.event_key) for e in events}) == len(events)
    assert all(e.outcome in ("started", "missed") for e in events)


def test_cooldown_and_failed_launches(sqlite_ws: Workspace) -> None:
    launcher = Launcher()
    service = TriggerService(sqlite_ws, launcher)
    service.create(schedule(cooldown_seconds=2 * 3600))
    t = ticks(service, "nightly", 5)
    assert [e.outcome for e in service.poll(t[0])] == ["started"]
    [cool] = service.poll(t[1])
    assert cool.outcome == "cooldown" and "7200 s cool-down" in cool.detail
    assert [e.outcome for e in service.poll(t[2])] == ["started"]
    assert len(launcher.calls) == 2

    # A launch that raises is recorded with the error and does not start the cool-down.
    service.launch = Launcher(fail=RuntimeError("executor is down"))
    missed, failed = service.poll(t[4])
    assert missed.outcome == "missed" and failed.outcome == "failed" and failed.run_id is None
    assert failed.detail == "RuntimeError: executor is down"
    assert service.get("nightly").last_fired_at == t[2]
    record = sqlite_ws.audit.list(action="trigger.fire").items[0]
    assert record.after["outcome"] == "failed" and record.after["event"] == key(t[4])
    service.launch = launcher
    assert service.poll(t[4] + timedelta(minutes=1)) == []  # the event was consumed


def test_a_disabled_trigger_ignores_what_happens_meanwhile(
    sqlite_ws: Workspace, launcher: Launcher
) -> None:
    def log(value: int) -> None:
        sqlite_ws.tracking.log_dataset("d", pd.DataFrame({"x": [value]}), store_data=False)

    service = TriggerService(sqlite_ws, launcher)
    service.create(TriggerSpec(name="data", pipeline="retrain", kind="dataset", dataset="d"))
    service.update("data", enabled=False)
    log(1)
    assert service.poll() == []
    service.update("data", enabled=True)  # starts from now: version 1 came while disabled
    assert service.poll() == []
    log(2)
    assert [e.event_key for e in service.poll()] == ["dataset:d/2"]


# --- alerts -----------------------------------------------------------------------------


def open_alerts(ws: Workspace, start: datetime, **observation: float) -> list[str]:
    """Evaluate one 5-minute window of endpoint churn; returns the kinds of alerts opened."""
    obs = {"rows": 500, "requests": 500, **observation}
    changed = ws.monitoring.alerts.evaluate("churn", 300, start, obs, 500)
    return sorted(a.kind for a in changed if a.status == "open")


def alert_rules(ws: Workspace) -> None:
    alerts = ws.monitoring.alerts
    base = {"endpoint": "churn", "op": ">", "window": 300, "min_samples": 100}
    for name, kind, metric, threshold in [
        ("drift", "drift", "drift_share", 0.3),
        ("f1", "drift", "drift.f1", 0.2),
        ("slow", "latency", "latency_p99_ms", 100),
    ]:
        alerts.create_rule(
            {**base, "name": name, "kind": kind, "metric": metric, "threshold": threshold}
        )


def test_an_alert_trigger_fires_on_real_alerts_of_its_kinds(
    ws: Workspace, launcher: Launcher
) -> None:
    alert_rules(ws)
    service = TriggerService(ws, launcher)
    service.create(
        {"name": "on-drift", "pipeline": "retrain", "kind": "alert", "endpoint": "churn"}
    )
    service.create({"name": "on-f1", "pipeline": "retrain", "kind": "alert", "rules": ["f1"]})
    service.create({"name": "elsewhere", "pipeline": "retrain", "kind": "alert", "endpoint": "x"})
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert open_alerts(ws, start, drift_share=0.6, latency_p99_ms=900) == ["drift", "latency"]
    drift = ws.monitoring.list_alerts("churn", rule="drift")[0]

    [event] = service.poll()
    assert (event.trigger, event.event_key, event.outcome) == (
        "on-drift",
        f"alert:{drift.id}",
        "started",
    )
    _, params, info = launcher.calls[0]
    assert params["trigger"] == {
        "name": "on-drift",
        "event": f"alert:{drift.id}",
        "alert_id": drift.id,
        "endpoint": "churn",
        "rule": "drift",
        "kind": "drift",
        "metric": "drift_share",
        "value": 0.6,
        "threshold": 0.3,
        "window_start": start.isoformat(),
    }
    assert info["kind"] == "alert" and event.event_at == drift.opened_at
    assert service.poll() == []  # seen already; the latency alert starts nothing

    # Another drift alert within the default hour of cool-down: recorded, nothing started.
    assert open_alerts(ws, start + timedelta(minutes=5), **{"drift.f1": 0.5}) == ["drift"]
    events = sorted(service.poll(), key=lambda e: e.trigger)
    assert [(e.trigger, e.outcome) for e in events] == [
        ("on-drift", "cooldown"),
        ("on-f1", "started"),
    ]
    assert len(launcher.calls) == 2


def test_alert_subscription_starts_the_run_when_the_alert_opens(
    sqlite_ws: Workspace, launcher: Launcher
) -> None:
    alert_rules(sqlite_ws)
    service = TriggerService(sqlite_ws, launcher)
    service.create({"name": "on-drift", "pipeline": "retrain", "kind": "alert"})
    stop = service.subscribe_alerts()
    try:
        open_alerts(sqlite_ws, datetime(2026, 3, 1, 12, tzinfo=UTC), drift_share=0.9)
        assert launcher.called.wait(20)
    finally:
        stop()
    assert launcher.events[0].startswith("alert:")
    assert [e.outcome for e in service.events()] == ["started"]


@step(stage="train")
def fit(rows: int) -> LogisticRegression:
    x = np.random.default_rng(3).normal(size=(rows, 2))
    return LogisticRegression().fit(x, (x.sum(axis=1) > 0).astype(int))


@step(stage="deploy", cache=False)
def register(model: LogisticRegression, ctx: StepContext) -> int:
    example = pd.DataFrame(np.zeros((2, 2)), columns=["x0", "x1"])
    return ctx.register_model(model, "churn", example).version


@pipeline(name="retrain")
def retrain(rows: int = 40):  # takes no `trigger` parameter
    register(fit(rows))


def test_a_run_started_by_an_alert_records_it_in_its_params_and_lineage(
    sqlite_ws: Workspace,
) -> None:
    ws = sqlite_ws
    sent: list[dict[str, Any]] = []

    def launch(name: str, params: dict[str, Any], trigger: dict[str, Any]) -> str:
        # What PipelineService.start runs in a new process, run here.
        sent.append(params)
        return ws.pipelines.run(retrain, params, executor="inprocess", trigger=trigger).id

    alert_rules(ws)
    service = TriggerService(ws, launch)
    service.create({"name": "on-drift", "pipeline": "retrain", "kind": "alert"})
    open_alerts(ws, datetime(2026, 3, 1, 12, tzinfo=UTC), drift_share=0.6)
    alert = ws.monitoring.list_alerts("churn", rule="drift")[0]
    [event] = service.poll()
    assert event.outcome == "started" and event.run_id is not None

    described = sent[0]["trigger"]
    assert (described["alert_id"], described["rule"], described["endpoint"]) == (
        alert.id,
        "drift",
        "churn",
    )
    run = ws.pipelines.get_run(event.run_id)
    assert run.status == "succeeded", run.error
    assert run.params == {"rows": 40, "trigger": described}
    assert run.trigger["event"] == f"alert:{alert.id}"
    lineage = ws.registry.lineage("churn", 1)
    assert lineage.run_id == run.tracking_run_id
    assert lineage.params["rows"] == "40"
    assert ast.literal_eval(lineage.params["trigger"]) == described


# --- datasets ---------------------------------------------------------------------------


def test_a_dataset_trigger_fires_on_new_versions(ws: Workspace, launcher: Launcher) -> None:
    def log(value: int) -> int:
        frame = pd.DataFrame({"x": [value]})
        return ws.tracking.log_dataset("churn-train", frame, store_data=False).version

    log(1)
    service = TriggerService(ws, launcher)
    service.create(
        TriggerSpec(name="new-data", pipeline="retrain", kind="dataset", dataset="churn-train")
    )
    assert service.poll() == []  # version 1 was there before the trigger
    log(1)  # the same content is the same version: no event
    assert log(2) == 2
    [event] = service.poll()
    assert (event.event_key, event.outcome) == ("dataset:churn-train/2", "started")
    assert launcher.calls[0][1]["trigger"]["version"] == 2
    assert service.poll() == []
    log(3), log(4)
    assert [(e.event_key, e.outcome) for e in service.poll()] == [
        ("dataset:churn-train/3", "coalesced"),
        ("dataset:churn-train/4", "started"),
    ]
    assert launcher.events == ["dataset:churn-train/2", "dataset:churn-train/4"]


# --- the loop ---------------------------------------------------------------------------


def test_loop_polls_under_a_lease(sqlite_ws: Workspace, launcher: Launcher) -> None:
    service = TriggerService(sqlite_ws, launcher, owner="one")
    service.create(TriggerSpec(name="d", pipeline="retrain", kind="dataset", dataset="fresh"))
    sqlite_ws.tracking.log_dataset("fresh", pd.DataFrame({"x": [1]}), store_data=False)
    loop = TriggerLoop(service, interval=0.01)
    assert service.run_once().events[0].outcome == "started"
    other = TriggerService(sqlite_ws, launcher, owner="two")
    assert other.run_once().skipped  # "one" holds the lease
    loop.run(max_passes=2)  # releases the lease when it ends
    assert loop.passes == 2 and not other.run_once().skipped
    loop.start()
    loop.stop()
    assert launcher.events == ["dataset:fresh/1"]


def test_a_triggers_runs_act_as_whoever_set_it_up(sqlite_ws: Workspace, launcher: Launcher) -> None:
    """Not as the local operator: an editor's trigger must not get an admin's run."""
    from modelyard.governance import Identity, Role

    ws = sqlite_ws
    editor = ws.as_identity(Identity(name="ed", role=Role.editor, groups=["ml"]))
    TriggerService(editor, launcher).create(schedule())
    local = TriggerService(ws, launcher)
    local.create(schedule(name="ops"))
    first = ticks(local, "nightly", 1)[0]
    local.poll(first + timedelta(minutes=1))
    acting = {t["trigger"]: (t["by"], t.get("role"), t.get("groups")) for _, _, t in launcher.calls}
    assert acting == {
        "nightly": ("ed", "editor", ["ml"]),
        "ops": ("trigger:ops", None, None),  # the local operator's trigger: as before
    }
    # whoever changes it answers for it from then on
    admin = ws.as_identity(Identity(name="ada", role=Role.admin))
    TriggerService(admin, launcher).update("nightly", params={"epochs": 2})
    launcher.calls.clear()
    local.poll(ticks(local, "nightly", 2)[1] + timedelta(minutes=1))
    assert {t["by"] for _, _, t in launcher.calls if t["trigger"] == "nightly"} == {"ada"}
