"""Delivery KPIs from promotions, runs, trigger events and a real alias rollback; the maturity
grade rising as the platform sees more automation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from ulid import ULID

from modelyard import Client
from modelyard.artifacts import digest_of_file
from modelyard.errors import NotFound
from modelyard.formats import MANIFEST_NAME, save_model
from modelyard.monitoring import PredictionLog
from modelyard.pipelines.delivery import LEVELS, delivery_report, maturity_report
from modelyard.pipelines.triggers import TriggerService, TriggerSpec
from modelyard.store.tables import PipelineRow, PipelineRunRow, PromotionRow, TriggerEventRow
from modelyard.workspace import Workspace

HOUR = 3600.0
FEATURES = ["f0", "f1", "f2"]


def training_frame() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, len(FEATURES))), columns=FEATURES)
    return X, (X.f0 > 0).astype(int)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    X, y = training_frame()
    path = tmp_path_factory.mktemp("delivery") / "model"
    save_model(LogisticRegression().fit(X, y), path, input_example=X.head(3))
    return path


def register(ws: Workspace, model_dir: Path, name: str, versions: int) -> None:
    for p in model_dir.rglob("*"):
        if p.is_file():
            ws.artifacts.put_file(p)
    digest = digest_of_file(model_dir / MANIFEST_NAME)
    for _ in range(versions):
        ws.registry.create_version(name, digest)


def add_run(
    ws: Workspace,
    summary: dict[str, float],
    *,
    kind: str = "manual",
    started_at: datetime | None = None,
    pipeline: str = "retrain",
) -> str:
    run_id = str(ULID())
    started = started_at or datetime.now(UTC)
    with ws.store.write(ws.actor) as tx:
        tx.session.add(
            PipelineRunRow(
                id=run_id,
                pipeline=pipeline,
                status="succeeded",
                trigger={"kind": kind, "by": ws.actor},
                params={},
                started_at=started,
                finished_at=started + timedelta(seconds=summary.get("total_s", 0)),
                summary=summary,
                heartbeat_at=None,
                tracking_run_id=None,
            )
        )
    return run_id


def add_promotion(
    ws: Workspace, model: str, version: int, decided_at: datetime, **fields: Any
) -> None:
    with ws.store.write(ws.actor) as tx:
        tx.session.add(
            PromotionRow(
                id=str(ULID()),
                model=model,
                version=version,
                alias="champion",
                previous_version=fields.pop("previous_version", None),
                promoted=fields.pop("promoted", True),
                report=fields.pop("report", {}),
                pipeline_run_id=fields.pop("run_id", None),
                triggered_at=fields.pop("triggered_at", None),
                decided_at=decided_at,
                rolled_back_at=fields.pop("rolled_back_at", None),
            )
        )
    assert not fields


def add_pipeline(ws: Workspace, name: str = "retrain") -> None:
    now = datetime.now(UTC)
    with ws.store.write(ws.actor) as tx:
        tx.session.add(PipelineRow(name=name, source="x:y", created_at=now, updated_at=now))


def test_delivery_kpis(any_workspace: Workspace, model_dir: Path) -> None:
    ws = any_workspace
    add_pipeline(ws)
    register(ws, model_dir, "churn", 3)

    ws.registry.set_alias("churn", "champion", 1)
    d1 = datetime.now(UTC)
    r1 = add_run(ws, {"evaluate_s": 100, "gate_s": 20, "deploy_s": 60, "total_s": 300})
    add_promotion(ws, "churn", 1, d1, run_id=r1, triggered_at=d1 - timedelta(hours=2))

    r2 = add_run(ws, {"train_s": 50, "evaluate_s": 80, "total_s": 130})
    add_promotion(
        ws, "churn", 2, datetime.now(UTC), run_id=r2, promoted=False, report={"seconds": 10}
    )

    ws.registry.set_alias("churn", "champion", 3)
    d3 = datetime.now(UTC)
    r3 = add_run(
        ws, {"evaluate_s": 60, "deploy_s": 40}, kind="schedule", started_at=d3 - timedelta(hours=4)
    )
    # The run was started by a trigger event five hours before the promotion.
    trigger = TriggerService(ws, lambda *a: "unused").create(
        TriggerSpec(name="nightly", pipeline="retrain", kind="schedule", cron="0 3 * * *")
    )
    with ws.store.write(ws.actor) as tx:
        tx.session.add(
            TriggerEventRow(
                id=str(ULID()),
                trigger_id=trigger.id,
                event_key="cron:x",
                event_at=d3 - timedelta(hours=5),
                outcome="started",
                run_id=r3,
                detail="",
                created_at=d3,
            )
        )
    add_promotion(ws, "churn", 3, d3, run_id=r3, previous_version=1)
    ws.registry.set_alias("churn", "champion", 1)  # v3 went wrong: back to v1

    now = datetime.now(UTC)
    add_promotion(ws, "fraud", 1, now - timedelta(days=21), rolled_back_at=now - timedelta(days=20))
    add_promotion(ws, "fraud", 2, now - timedelta(days=7))

    report = delivery_report(ws)
    churn, fraud = report.models
    assert (churn.model, churn.candidates, churn.promotions, churn.gate_failures) == (
        "churn",
        3,
        2,
        1,
    )
    assert churn.gate_failure_rate == pytest.approx(1 / 3)
    assert churn.mean_deploy_s == pytest.approx(50)
    assert churn.mean_validation_s == pytest.approx((120 + 90 + 60) / 3)
    assert churn.deployment_velocity_per_day == pytest.approx(2 / (50 + 90) * 86_400)
    assert churn.lead_time is not None and churn.lead_time.samples == 2
    assert churn.lead_time.mean_s == pytest.approx(3.5 * HOUR)
    assert churn.lead_time.p50_s == pytest.approx(3.5 * HOUR)
    assert churn.lead_time.p90_s == pytest.approx(2 * HOUR + 0.9 * 3 * HOUR)
    assert (churn.rollbacks, churn.rolled_back_versions) == (1, [3])
    assert churn.change_failure_rate == pytest.approx(0.5)  # v1 was superseded, not rolled back
    assert churn.by_trigger == {"manual": 1, "schedule": 1}
    assert [w.promotions for w in churn.promotions_per_week] == [2]

    assert fraud.change_failure_rate == pytest.approx(0.5)  # from rolled_back_at
    assert [w.promotions for w in fraud.promotions_per_week] == [1, 0, 1]
    assert fraud.mean_promotions_per_week == pytest.approx(2 / 3)
    assert fraud.deployment_velocity_per_day is None and fraud.lead_time is None
    assert fraud.by_trigger == {"none": 2}

    recent = delivery_report(ws, since=now - timedelta(days=14))
    assert [(m.model, m.promotions) for m in recent.models] == [("churn", 2), ("fraud", 1)]
    only = delivery_report(ws, "churn")
    assert [m.model for m in only.models] == ["churn"]
    with pytest.raises(NotFound):
        delivery_report(ws, "nope")


def test_an_unpromoted_model_reports_no_rates(workspace: Workspace, model_dir: Path) -> None:
    register(workspace, model_dir, "quiet", 1)
    [quiet] = delivery_report(workspace, "quiet").models
    assert (quiet.candidates, quiet.promotions, quiet.gate_failure_rate) == (0, 0, None)
    assert quiet.change_failure_rate is None and quiet.promotions_per_week == []


def test_maturity_rises_with_evidence(workspace: Workspace) -> None:
    ws = workspace

    def grade() -> tuple[int, list[str]]:
        report = maturity_report(ws)
        assert report.name == LEVELS[report.level]
        return report.level, [c.key for c in report.criteria if c.met]

    report = maturity_report(ws)
    assert (report.level, report.name) == (0, "manual")
    assert len(report.next_steps) == 3 and not any(c.met for c in report.criteria)

    # Level 1: a model with lineage, a pipeline that ran, a gate before promotion.
    X, y = training_frame()
    with Client(settings=ws.settings) as client, client.start_run(experiment="churn"):
        ds = client.log_dataset("churn-train", X)
        client.log_model(
            LogisticRegression().fit(X, y),
            "churn",
            input_example=X.head(3),
            datasets=[{"dataset_id": ds.id, "role": "training"}],
        )
    assert grade() == (0, ["lineage"])
    add_pipeline(ws)
    add_run(ws, {"total_s": 10})
    add_promotion(ws, "churn", 1, datetime.now(UTC))
    level, met = grade()
    assert level == 1 and met == ["lineage", "pipelines", "quality_gates"]
    report = maturity_report(ws)
    assert [c.evidence for c in report.criteria if c.key == "pipelines"] == [
        {"pipelines": 1, "runs": 1, "succeeded_runs": 1}
    ]

    # Level 2: new data starts a run, and the pipeline promotes by itself.
    def launch(pipeline: str, params: dict[str, Any], trigger: dict[str, Any]) -> str:
        return add_run(ws, {"total_s": 5}, kind=trigger["kind"], pipeline=pipeline)

    triggers = TriggerService(ws, launch)
    triggers.create(TriggerSpec(name="data", pipeline="retrain", kind="dataset", dataset="new"))
    ws.tracking.log_dataset("new", X.head(50), store_data=False)
    [event] = triggers.poll()
    assert grade()[0] == 1
    add_promotion(ws, "churn", 1, datetime.now(UTC), run_id=event.run_id)
    assert grade()[0] == 2

    # Level 3: reference profile and alert rules, feedback, an alert that retrained.
    ws.monitoring.set_reference("models:/churn/1", data=X)
    ws.endpoints.create("churn", "models:/churn/1")
    log = PredictionLog(ws, flush_seconds=3600)
    log.start()
    log.log(
        endpoint="churn",
        model="churn",
        version=1,
        request_id="r0",
        inputs={f: np.array([0.5]) for f in FEATURES},
        outputs={"predictions": np.array([1])},
        rows=1,
        latency_ms=1.0,
        at=datetime.now(UTC) - timedelta(minutes=1),
    )
    log.close()
    ws.monitoring.submit_feedback("churn", [{"request_id": "r0", "label": 1}])
    ws.monitoring.create_rule(
        {
            "name": "drift",
            "endpoint": "churn",
            "kind": "drift",
            "metric": "drift_share",
            "op": ">",
            "threshold": 0.3,
            "window": 300,
            "min_samples": 1,
        }
    )
    triggers.create({"name": "on-drift", "pipeline": "retrain", "kind": "alert"})
    assert grade()[0] == 2
    ws.monitoring.alerts.evaluate(
        "churn", 300, datetime(2026, 3, 1, tzinfo=UTC), {"drift_share": 0.8}, 100
    )
    assert [e.outcome for e in triggers.poll()] == ["started"]
    report = maturity_report(ws)
    assert (report.level, report.name, report.next_steps) == (
        3,
        "CI/CD + continuous training",
        [],
    )
    evidence = {c.key: c.evidence for c in report.criteria}
    assert evidence["feedback"] == {"feedback_labels": 1, "endpoints": 1}
    assert evidence["monitoring"] == {"versions_with_reference_profile": 1, "alert_rules": 1}
    assert evidence["alert_retraining"] == {"alert_triggers": 1, "runs_started_by_alerts": 1}
