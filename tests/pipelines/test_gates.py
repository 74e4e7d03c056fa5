"""Quality gates and promotion: real sklearn models, a real registry, the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelyard import Client
from modelyard.errors import Forbidden, InvalidInput
from modelyard.pipelines.gates import (
    ApprovalRequired,
    DataValidationPassed,
    LatencyBudget,
    MetricThreshold,
    NoWorseThanChampion,
    QualityGate,
    evaluate_candidate,
    get_promotion,
    list_promotions,
    mark_rolled_back,
    promote,
    rule_from_dict,
)
from modelyard.pipelines.validation import validate
from modelyard.workspace import Workspace

FEATURES = ["f0", "f1", "f2", "f3"]


def data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=FEATURES)
    frame["label"] = ((frame.f0 + frame.f1 + 0.3 * rng.normal(size=n)) > 0).astype(int)
    frame["amount"] = 3 * frame.f0 - 2 * frame.f2 + 0.1 * rng.normal(size=n)
    return frame


TRAIN, HOLDOUT = data(600, 1), data(400, 2)
X = TRAIN[FEATURES]
GOOD = LogisticRegression().fit(X, TRAIN.label)
WEAK = DummyClassifier(strategy="most_frequent").fit(X, TRAIN.label)
CLASSIFIER_HOLDOUT = HOLDOUT.drop(columns=["amount"])


def register(ws: Workspace, model: Any, name: str = "fraud", alias: str | None = None) -> int:
    with Client(settings=ws.settings) as client:
        return client.log_model(model, name, input_example=X.head(5), alias=alias).version


def test_better_candidate_is_promoted(any_workspace: Workspace) -> None:
    ws = any_workspace
    register(ws, WEAK, alias="champion")
    register(ws, GOOD)
    gate = QualityGate(
        [
            MetricThreshold("accuracy", ">=", 0.8),
            NoWorseThanChampion("f1", margin=0.01),
            LatencyBudget(p99_ms=2000, calls=20, warmup=2),
        ]
    )
    report = evaluate_candidate(ws, "models:/fraud/2", CLASSIFIER_HOLDOUT, "label", gate)
    assert report.passed, report.summary()
    assert report.task == "classification" and report.champion_version == 1
    assert set(report.candidate_metrics) == {"accuracy", "f1", "roc_auc"}
    assert report.champion_metrics is not None
    assert report.candidate_metrics["accuracy"] > report.champion_metrics["accuracy"]  # type: ignore[operator]
    assert report.champion_metrics["roc_auc"] == pytest.approx(0.5)
    assert [r.rule for r in report.rules] == [
        "metric_threshold",
        "no_worse_than_champion",
        "latency_budget",
    ]
    assert report.rules[1].details["champion"] == report.champion_metrics["f1"]
    assert report.rules[2].details["p50_ms"] <= report.rules[2].details["p99_ms"]

    triggered = datetime(2026, 1, 1, tzinfo=UTC)
    promotion = promote(ws, report, pipeline_run_id="01JPIPE", triggered_at=triggered)
    assert promotion.promoted and promotion.reasons == []
    assert promotion.previous_version == 1 and promotion.version == 2
    assert ws.registry.get_alias("fraud", "champion").version == 2
    stored = list_promotions(ws, "fraud")
    assert stored == [promotion] and stored[0].triggered_at == triggered
    assert get_promotion(ws, promotion.id).report == report

    audit = ws.audit.list(action="pipeline.promote").items
    assert len(audit) == 1 and audit[0].entity_id == promotion.id
    assert audit[0].before == {"version": 1}
    assert audit[0].after is not None and audit[0].after["pipeline_run_id"] == "01JPIPE"
    assert ws.audit.list(action="alias.set").items[0].after == {
        "version": 2,
        "reason": "promoted: every quality gate passed (models:/fraud/2@champion)",
        "gates_passed": True,
    }


def test_worse_candidate_is_not_promoted(any_workspace: Workspace) -> None:
    ws = any_workspace
    register(ws, GOOD, alias="champion")
    register(ws, WEAK)
    gate = QualityGate([NoWorseThanChampion("accuracy", margin=0.02)])
    report = evaluate_candidate(ws, "models:/fraud/2", CLASSIFIER_HOLDOUT, "label", gate)
    assert not report.passed
    rule = report.rules[0]
    assert rule.value == report.candidate_metrics["accuracy"]
    assert rule.threshold == pytest.approx(report.champion_metrics["accuracy"] - 0.02)  # type: ignore[index]
    assert "worse than the bound" in rule.message and "champion v1" in rule.message

    promotion = promote(ws, report)
    assert not promotion.promoted
    assert ws.registry.get_alias("fraud", "champion").version == 1
    assert len(promotion.reasons) == 1
    assert promotion.reasons[0].startswith("no_worse_than_champion: accuracy")
    assert list_promotions(ws, "fraud", promoted=False) == [promotion]
    failed = ws.audit.list(action="pipeline.gate_failed").items
    assert len(failed) == 1 and failed[0].after is not None
    assert failed[0].after["reasons"] == promotion.reasons
    assert ws.audit.list(action="alias.set").items[0].after == {"version": 1}  # only the first


def test_no_champion_passes_with_a_note(workspace: Workspace) -> None:
    register(workspace, GOOD)
    gate = QualityGate([NoWorseThanChampion("roc_auc")])
    report = evaluate_candidate(
        workspace, "models:/fraud/latest", CLASSIFIER_HOLDOUT, "label", gate
    )
    assert report.passed and report.champion_version is None
    assert report.rules[0].message == "no champion at @champion: nothing to compare with"
    promotion = promote(workspace, report)
    assert promotion.promoted and promotion.previous_version is None
    assert workspace.registry.get_alias("fraud", "champion").version == 1


def test_latency_budget_fails(workspace: Workspace) -> None:
    register(workspace, GOOD)
    gate = QualityGate([LatencyBudget(p99_ms=1e-6, calls=30, warmup=3)])
    report = evaluate_candidate(workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", gate)
    rule = report.rules[0]
    assert not report.passed and not rule.passed
    assert isinstance(rule.value, float) and rule.value > 1e-6 and rule.threshold == 1e-6
    assert rule.details["calls"] == 30 and "over budget" in rule.message
    assert not promote(workspace, report, alias="challenger").promoted
    assert workspace.registry.get_model("fraud").aliases == {}


def test_regression_metrics_and_thresholds(workspace: Workspace) -> None:
    reg_holdout = HOLDOUT.drop(columns=["label"])
    register(workspace, LinearRegression().fit(X, TRAIN.amount), "amount", alias="champion")
    register(
        workspace, LinearRegression().fit(X[["f0", "f1", "f2", "f3"]] * 0, TRAIN.amount), "amount"
    )
    gate = QualityGate(
        [
            MetricThreshold("r2", ">=", 0.99),
            MetricThreshold("rmse", "<", 0.5),
            NoWorseThanChampion("rmse", margin=0.1),  # lower is better: inferred
        ]
    )
    good = evaluate_candidate(workspace, "models:/amount/1", reg_holdout, "amount", gate)
    assert good.task == "regression" and set(good.candidate_metrics) == {"mae", "rmse", "r2"}
    assert good.passed, good.summary()
    assert good.rules[2].message == "the candidate is the champion (v1)"

    bad = evaluate_candidate(workspace, "models:/amount/2", reg_holdout, "amount", gate)
    assert [r.passed for r in bad.rules] == [False, False, False]
    assert bad.rules[0].message.startswith("r2 ") and "< 0.99" in bad.rules[0].message
    assert "lower is better" in bad.rules[2].message
    assert bad.rules[2].threshold == pytest.approx(good.candidate_metrics["rmse"] + 0.1)  # type: ignore[operator]


def test_data_validation_rule(workspace: Workspace) -> None:
    register(workspace, GOOD)
    broken = CLASSIFIER_HOLDOUT.copy()
    broken.loc[:4, "f0"] = np.nan
    failing = validate(broken, {"max_missing": 0.0, "min_rows": 10})
    ok = validate(CLASSIFIER_HOLDOUT, {"max_missing": 0.0})
    gate = QualityGate([DataValidationPassed(ok), DataValidationPassed(failing)])
    report = evaluate_candidate(workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", gate)
    assert [r.passed for r in report.rules] == [True, False]
    assert report.rules[1].message.startswith("1 checks failed: max_missing: f0: 1.25% missing")
    assert report.reasons() == [f"data_validation: {report.rules[1].message}"]


def test_champion_moved_since_evaluation(workspace: Workspace) -> None:
    register(workspace, WEAK, alias="champion")
    register(workspace, GOOD)
    register(workspace, GOOD)
    report = evaluate_candidate(
        workspace, "models:/fraud/2", CLASSIFIER_HOLDOUT, "label", QualityGate([])
    )
    workspace.registry.set_alias("fraud", "champion", 3)
    promotion = promote(workspace, report)
    assert not promotion.promoted and promotion.previous_version == 3
    assert "moved from v1 to v3" in promotion.reasons[0]
    assert workspace.registry.get_alias("fraud", "champion").version == 3


def test_approval_flow(any_workspace: Workspace) -> None:
    ws = any_workspace.as_actor("alice")
    register(ws, WEAK, alias="champion")
    register(ws, GOOD)
    gate = QualityGate([ApprovalRequired(), MetricThreshold("roc_auc", ">", 0.9)])

    first = evaluate_candidate(ws, "models:/fraud/2", CLASSIFIER_HOLDOUT, "label", gate)
    assert not first.passed and first.subject == "models:/fraud/2@champion"
    approval_rule = first.rules[0]
    pending = ws.approvals.latest(first.subject)
    assert pending is not None and pending.status == "pending" and pending.requested_by == "alice"
    assert approval_rule.message == (
        f"awaiting approval {pending.id}: `modelyard approvals approve {pending.id}`"
    )
    assert pending.context["candidate"] == "models:/fraud/2"
    assert not promote(ws, first).promoted
    assert ws.registry.get_alias("fraud", "champion").version == 1

    again = evaluate_candidate(ws, "models:/fraud/2", CLASSIFIER_HOLDOUT, "label", gate)
    assert again.rules[0].details["approval_id"] == pending.id
    assert len(ws.approvals.list(subject=first.subject)) == 1

    with pytest.raises(Forbidden):
        ws.approvals.approve(pending.id)  # alice asked: she may not approve
    ws.as_actor("bob").approvals.approve(pending.id, note="looks good")

    passed = evaluate_candidate(ws, "models:/fraud/2", CLASSIFIER_HOLDOUT, "label", gate)
    assert passed.passed, passed.summary()
    assert passed.rules[0].message == f"approved by bob ({pending.id})"
    promotion = promote(ws, passed)
    assert promotion.promoted and ws.registry.get_alias("fraud", "champion").version == 2
    decisions = ws.audit.list(entity_type="approval").items
    assert [(r.action, r.actor) for r in reversed(decisions)] == [
        ("approval.request", "alice"),
        ("approval.approve", "bob"),
    ]


def test_approval_not_requested_for_a_failing_candidate(workspace: Workspace) -> None:
    register(workspace, GOOD, alias="champion")
    register(workspace, WEAK)
    gate = QualityGate([ApprovalRequired(role="admin"), NoWorseThanChampion("accuracy")])
    report = evaluate_candidate(workspace, "models:/fraud/2", CLASSIFIER_HOLDOUT, "label", gate)
    assert report.rules[0].message == "not requested: the candidate fails other rules"
    assert workspace.approvals.list() == []


def test_approval_role_and_rejection(workspace: Workspace) -> None:
    register(workspace, GOOD)
    workspace.identities.create_user("eve", "approver")
    workspace.identities.create_user("root", "admin")
    gate = QualityGate([ApprovalRequired(role="admin")])

    def run() -> Any:
        return evaluate_candidate(workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", gate)

    approval_id = run().rules[0].details["approval_id"]
    assert workspace.approvals.get(approval_id).context["role"] == "admin"
    workspace.as_actor("eve").approvals.approve(approval_id)
    assert run().rules[0].message == "approved by eve, an approver; an admin must approve"

    second = workspace.approvals.request("models:/fraud/1@champion")
    workspace.as_actor("root").approvals.reject(second.id, note="needs a bias review")
    rejected = run().rules[0]
    assert rejected.message == f"rejected by root ({second.id}): needs a bias review"
    third = workspace.approvals.request("models:/fraud/1@champion")
    workspace.as_actor("root").approvals.approve(third.id)
    assert run().passed


def test_an_approver_bound_on_the_model_counts(workspace: Workspace) -> None:
    register(workspace, GOOD)
    register(workspace, GOOD, name="other")
    workspace.identities.create_user("rita", "viewer")
    workspace.access.bind("user:rita", "approver", "model:fraud")
    gate = QualityGate([ApprovalRequired(role="approver")])
    first = evaluate_candidate(workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", gate)
    workspace.as_actor("rita").approvals.approve(first.rules[0].details["approval_id"])
    assert evaluate_candidate(
        workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", gate
    ).passed
    # the binding is on fraud only: rita may not decide other's approvals
    pending = evaluate_candidate(workspace, "models:/other/1", CLASSIFIER_HOLDOUT, "label", gate)
    with pytest.raises(Forbidden, match="rita may not decide approvals on model other"):
        workspace.as_actor("rita").approvals.approve(pending.rules[0].details["approval_id"])


def test_rollback_is_recorded(workspace: Workspace) -> None:
    register(workspace, GOOD)
    report = evaluate_candidate(
        workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", QualityGate([])
    )
    promotion = promote(workspace, report)
    rolled = mark_rolled_back(workspace, promotion.id)
    assert rolled.rolled_back_at is not None
    assert mark_rolled_back(workspace, promotion.id).rolled_back_at == rolled.rolled_back_at
    assert len(workspace.audit.list(action="pipeline.rollback").items) == 1


def test_bad_input(workspace: Workspace) -> None:
    register(workspace, GOOD)
    with pytest.raises(InvalidInput, match="unknown metric"):
        MetricThreshold("auc", ">=", 0.5)
    with pytest.raises(InvalidInput, match="op must be"):
        MetricThreshold("f1", "=>", 0.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="target column"):
        evaluate_candidate(workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "y", QualityGate([]))
    with pytest.raises(InvalidInput, match="unknown classification metric 'rmse'"):
        evaluate_candidate(
            workspace,
            "models:/fraud/1",
            CLASSIFIER_HOLDOUT,
            "label",
            QualityGate([MetricThreshold("rmse", "<", 1)]),
        )
    gate = QualityGate(
        [
            {"rule": "metric_threshold", "metric": "f1", "op": ">=", "value": 0.5},
            {"rule": "latency_budget", "p99_ms": 500, "calls": 5},
        ]
    )
    assert isinstance(gate.rules[1], LatencyBudget) and gate.metrics == ["f1"]
    with pytest.raises(InvalidInput, match="unknown gate rule"):
        rule_from_dict({"rule": "vibes"})
    with pytest.raises(InvalidInput, match="gate rule metric_threshold"):
        rule_from_dict({"rule": "metric_threshold", "metric": "f1", "treshold": 1})


def test_an_approver_signed_in_with_an_identity_provider_counts(workspace: Workspace) -> None:
    """Not a registered user: what their token said when they decided is what counts."""
    from modelyard.governance import Identity, Role

    register(workspace, GOOD)
    workspace.access.bind("group:risk", "approver", "model:fraud")
    gate = QualityGate([ApprovalRequired(role="approver")])
    first = evaluate_candidate(workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", gate)
    oidc = workspace.as_identity(Identity(name="olga", role=Role.viewer, groups=["risk"]))
    oidc.approvals.approve(first.rules[0].details["approval_id"])
    report = evaluate_candidate(workspace, "models:/fraud/1", CLASSIFIER_HOLDOUT, "label", gate)
    assert report.passed, report.rules[0].message
