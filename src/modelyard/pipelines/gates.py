"""Quality gates: the rules a candidate version must pass before an alias moves to it.

:func:`evaluate_candidate` scores the candidate (and the version the alias now names, the
champion) on the same holdout, then checks each rule of a :class:`QualityGate`:

- :class:`MetricThreshold` a holdout metric against a fixed value;
- :class:`NoWorseThanChampion` the candidate's metric against the champion's, with a margin
  (passes, with a note, when there is no champion);
- :class:`DataValidationPassed` a :class:`~modelyard.pipelines.validation.ValidationReport`;
- :class:`LatencyBudget` the candidate's predict latency on this machine (p50/p99 after warm-up);
- :class:`ApprovalRequired` an approved sign-off of ``models:/NAME/VERSION@ALIAS``; without one
  it requests one and fails. It is checked last and only requested once every other rule
  passed, so approvers are never asked about a candidate that fails anyway.

:func:`promote` moves the alias only when every rule passed and the champion is still the one
the candidate was compared with; it always records a promotion (promoted or not, with the
report) and an audit record. A failed gate never changes what is served.

Metrics (scikit-learn): classification ``accuracy``, ``balanced_accuracy``, ``precision``,
``recall``, ``f1`` (two classes: of the larger label; more: macro), ``roc_auc`` and
``log_loss`` (need a probabilities output); regression ``mae``, ``mse``, ``rmse``, ``r2``,
``mape``. A metric that cannot be computed is None, with the reason in ``metric_notes``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, Field
from sqlalchemy import select

from modelyard.errors import Conflict, Forbidden, InvalidInput, ModelyardError, NotFound
from modelyard.page import check_limit
from modelyard.store.tables import PromotionRow

# numpy and pandas are imported by the functions that evaluate a candidate: reading and
# recording promotions (`modelyard pipelines promotions`, the API) needs neither.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from modelyard.formats import Predictor
    from modelyard.pipelines.validation import ValidationReport
    from modelyard.registry.entities import ModelVersion
    from modelyard.rollouts.entities import Rollout, RolloutPlan
    from modelyard.workspace import Workspace

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "ApprovalRequired",
    "DataValidationPassed",
    "GateReport",
    "LatencyBudget",
    "MetricThreshold",
    "NoWorseThanChampion",
    "Promotion",
    "QualityGate",
    "Rule",
    "RuleResult",
    "evaluate_candidate",
    "get_promotion",
    "list_promotions",
    "mark_rolled_back",
    "promote",
    "rule_from_dict",
]

Task = Literal["classification", "regression"]
Op = Literal[">=", ">", "<=", "<", "=="]
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
LOWER_IS_BETTER = frozenset({"mae", "mse", "rmse", "mape", "log_loss"})
_PROBABILITY_NAMES = ("probabilities", "probability", "proba", "predict_proba")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}


# --- entities -----------------------------------------------------------------------------


class RuleResult(BaseModel):
    """One rule's verdict, with the value it measured and the threshold it used."""

    rule: str
    description: str
    passed: bool
    value: float | str | None = None
    threshold: float | str | None = None
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class GateReport(BaseModel):
    """A candidate's verdict: every rule, and the metrics of candidate and champion."""

    candidate: str
    model: str
    version: int
    alias: str
    subject: str  # what an approval names: models:/NAME/VERSION@ALIAS
    champion_version: int | None
    task: Task
    holdout_rows: int
    candidate_metrics: dict[str, float | None]
    champion_metrics: dict[str, float | None] | None = None
    metric_notes: dict[str, str] = Field(default_factory=dict)
    rules: list[RuleResult]
    passed: bool
    evaluated_at: datetime
    evaluated_by: str = ""

    def reasons(self) -> list[str]:
        """The failed rules' messages."""
        return [f"{r.rule}: {r.message}" for r in self.rules if not r.passed]

    def summary(self) -> str:
        champion = (
            f"v{self.champion_version}" if self.champion_version is not None else "no champion"
        )
        head = "passed" if self.passed else "failed"
        lines = [
            f"{self.candidate} {head} the gate for @{self.alias} ({champion}; "
            f"{self.holdout_rows:,} holdout rows)"
        ]
        for r in self.rules:
            lines.append(f"  {'PASS' if r.passed else 'FAIL'} {r.description}: {r.message}")
        return "\n".join(lines)


class Promotion(BaseModel):
    """A promotion decision: whether the alias moved, from which version, and why."""

    id: str
    model: str
    version: int
    alias: str
    previous_version: int | None
    promoted: bool
    reasons: list[str]
    report: GateReport
    pipeline_run_id: str | None = None
    triggered_at: datetime | None = None
    decided_at: datetime
    decided_by: str = ""
    rolled_back_at: datetime | None = None
    #: The rollout releasing the candidate (``promote(..., rollout=...)``): ``promoted``
    #: turns true when it succeeds.
    rollout_id: str | None = None


# --- rules --------------------------------------------------------------------------------


@dataclass
class _Context:
    ws: Workspace
    candidate: ModelVersion
    champion: ModelVersion | None
    alias: str
    subject: str
    predictor: Predictor
    features: pd.DataFrame
    candidate_metrics: dict[str, float | None]
    champion_metrics: dict[str, float | None] | None
    champion_error: str
    notes: dict[str, str]
    failed_so_far: list[str] = field(default_factory=list)


class Rule(Protocol):
    kind: ClassVar[str]

    def describe(self) -> str: ...

    def check(self, ctx: _Context) -> RuleResult: ...


def _result(rule: Rule, passed: bool, message: str, **kw: Any) -> RuleResult:
    return RuleResult(
        rule=rule.kind, description=rule.describe(), passed=passed, message=message, **kw
    )


@dataclass(frozen=True)
class MetricThreshold:
    """The candidate's holdout ``metric`` must satisfy ``metric op value``."""

    metric: str
    op: Op
    value: float
    kind: ClassVar[str] = "metric_threshold"

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if self.op not in _OPS:
            raise InvalidInput(f"op must be one of {', '.join(_OPS)}, not {self.op!r}")

    def describe(self) -> str:
        return f"{self.metric} {self.op} {_fmt(self.value)}"

    def check(self, ctx: _Context) -> RuleResult:
        got = ctx.candidate_metrics.get(self.metric)
        if got is None:
            why = ctx.notes.get(self.metric, "not computed")
            return _result(self, False, f"{self.metric} is not available: {why}")
        ok = _OPS[self.op](got, self.value)
        sign = self.op if ok else _negate(self.op)
        return _result(
            self,
            ok,
            f"{self.metric} {_fmt(got)} {sign} {_fmt(self.value)}",
            value=got,
            threshold=self.value,
        )


@dataclass(frozen=True)
class NoWorseThanChampion:
    """The candidate's ``metric`` must be at most ``margin`` worse than the champion's.

    ``higher_is_better`` None infers it from the metric (errors and losses: lower).
    """

    metric: str
    margin: float = 0.0
    higher_is_better: bool | None = None
    kind: ClassVar[str] = "no_worse_than_champion"

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if self.margin < 0:
            raise InvalidInput("margin must be zero or positive")

    @property
    def higher(self) -> bool:
        if self.higher_is_better is not None:
            return self.higher_is_better
        return self.metric not in LOWER_IS_BETTER

    def describe(self) -> str:
        margin = f" (margin {_fmt(self.margin)})" if self.margin else ""
        return f"{self.metric} no worse than the champion{margin}"

    def check(self, ctx: _Context) -> RuleResult:
        got = ctx.candidate_metrics.get(self.metric)
        if ctx.champion is None:
            return _result(
                self, True, f"no champion at @{ctx.alias}: nothing to compare with", value=got
            )
        if ctx.champion.version == ctx.candidate.version:
            return _result(self, True, f"the candidate is the champion (v{ctx.champion.version})")
        if ctx.champion_metrics is None:
            return _result(
                self,
                False,
                f"cannot evaluate the champion v{ctx.champion.version} on this holdout: "
                f"{ctx.champion_error}",
            )
        theirs = ctx.champion_metrics.get(self.metric)
        if got is None or theirs is None:
            side = "candidate" if got is None else "champion"
            why = ctx.notes.get(self.metric if got is None else f"champion.{self.metric}", "")
            return _result(self, False, f"{self.metric} of the {side} is not available: {why}")
        bound = theirs - self.margin if self.higher else theirs + self.margin
        ok = got >= bound if self.higher else got <= bound
        word = "higher" if self.higher else "lower"
        message = (
            f"{self.metric} {_fmt(got)} vs champion v{ctx.champion.version} {_fmt(theirs)} "
            f"({word} is better, margin {_fmt(self.margin)}): "
            + ("no worse" if ok else f"worse than the bound {_fmt(bound)}")
        )
        return _result(self, ok, message, value=got, threshold=bound, details={"champion": theirs})


@dataclass(frozen=True)
class DataValidationPassed:
    """The data the candidate was trained or evaluated on passed its validation."""

    report: ValidationReport
    kind: ClassVar[str] = "data_validation"

    def describe(self) -> str:
        return "data validation passed"

    def check(self, ctx: _Context) -> RuleResult:
        failed = self.report.failures
        if not failed:
            return _result(
                self, True, f"{len(self.report.checks)} checks passed", value=0, threshold=0
            )
        text = "; ".join(f"{c.name}: {c.message}" for c in failed)
        return _result(
            self,
            False,
            f"{len(failed)} checks failed: {text}",
            value=len(failed),
            threshold=0,
            details={"summary": self.report.summary()},
        )


@dataclass(frozen=True)
class LatencyBudget:
    """The candidate's predict latency on ``rows`` rows, over ``calls`` calls after
    ``warmup`` calls, must have a p99 (and a p50, if given) within budget, in milliseconds."""

    p99_ms: float
    rows: int = 1
    calls: int = 200
    p50_ms: float | None = None
    warmup: int = 20
    kind: ClassVar[str] = "latency_budget"

    def __post_init__(self) -> None:
        if self.p99_ms <= 0 or (self.p50_ms is not None and self.p50_ms <= 0):
            raise InvalidInput("latency budgets must be positive milliseconds")
        if self.rows < 1 or self.calls < 1 or self.warmup < 0:
            raise InvalidInput("rows and calls must be at least 1, warmup at least 0")

    def describe(self) -> str:
        p50 = f", p50 <= {_fmt(self.p50_ms)} ms" if self.p50_ms is not None else ""
        return f"latency p99 <= {_fmt(self.p99_ms)} ms{p50} ({self.rows} row/call)"

    def check(self, ctx: _Context) -> RuleResult:
        import numpy as np

        frame = ctx.features
        batch = frame.iloc[np.arange(self.rows) % len(frame)]
        predict = ctx.predictor.predict
        for _ in range(self.warmup):
            predict(batch)
        times = np.empty(self.calls)
        for i in range(self.calls):
            start = time.perf_counter_ns()
            predict(batch)
            times[i] = time.perf_counter_ns() - start
        ms = times / 1e6
        p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
        ok = p99 <= self.p99_ms and (self.p50_ms is None or p50 <= self.p50_ms)
        message = f"p50 {p50:.3f} ms, p99 {p99:.3f} ms over {self.calls} calls: " + (
            "within budget" if ok else "over budget"
        )
        return _result(
            self,
            ok,
            message,
            value=p99,
            threshold=self.p99_ms,
            details={
                "p50_ms": p50,
                "p99_ms": p99,
                "mean_ms": float(ms.mean()),
                "max_ms": float(ms.max()),
                "calls": self.calls,
                "rows": self.rows,
            },
        )


@dataclass(frozen=True)
class ApprovalRequired:
    """An approval of ``models:/NAME/VERSION@ALIAS`` (by a user holding ``role``, if set)."""

    role: str | None = None
    kind: ClassVar[str] = "approval"

    def __post_init__(self) -> None:
        from modelyard.governance.entities import Role

        if self.role is not None and self.role not in Role.__members__:
            raise InvalidInput(f"role must be one of {', '.join(Role.__members__)}")

    def describe(self) -> str:
        return "approval" + (f" by a {self.role}" if self.role else "")

    def check(self, ctx: _Context) -> RuleResult:
        approvals = ctx.ws.approvals
        if ctx.failed_so_far:
            return _result(self, False, "not requested: the candidate fails other rules")
        latest = approvals.latest(ctx.subject)
        if latest is not None and latest.used_at is not None:
            latest = None  # it cleared a move already: this one needs its own
        if latest is not None and latest.status == "approved":
            decider = (latest.context.get("deciders") or {}).get(latest.decided_by)
            problem = self._role_problem(ctx, latest.decided_by, decider)
            if problem:
                return _result(self, False, problem, value=latest.decided_by)
            return _result(
                self,
                True,
                f"approved by {latest.decided_by} ({latest.id})",
                value=latest.decided_by,
                details={"approval_id": latest.id},
            )
        if latest is not None and latest.status == "rejected":
            note = f": {latest.note}" if latest.note else ""
            return _result(
                self,
                False,
                f"rejected by {latest.decided_by} ({latest.id}){note}",
                details={"approval_id": latest.id},
            )
        pending = latest or approvals.request(
            ctx.subject,
            {
                "reason": "promotion",
                "candidate": ctx.candidate.uri,
                "alias": ctx.alias,
                "champion_version": ctx.champion.version if ctx.champion else None,
                "metrics": ctx.candidate_metrics,
                "role": self.role,
            },
        )
        return _result(
            self,
            False,
            f"awaiting approval {pending.id}: `modelyard approvals approve {pending.id}`",
            details={"approval_id": pending.id},
        )

    def _role_problem(
        self, ctx: _Context, approver: str, decider: dict[str, Any] | None = None
    ) -> str:
        """Why ``approver`` does not count (a sentence), or ""; roles bound on the model or
        its project count as well as the approver's workspace role."""
        if self.role is None:
            return ""
        from modelyard.governance.access import Scope
        from modelyard.governance.entities import Identity, Role
        from modelyard.governance.identity import LOCAL_USER

        groups: list[str] = []
        if approver == LOCAL_USER.name:
            role = LOCAL_USER.role
        else:
            try:  # a registered user: as they are now (a role taken away no longer counts)
                role = ctx.ws.identities.get_user(approver).role
            except NotFound:
                if decider is None:
                    return f"approver {approver} is not a known user; a {self.role} must approve"
                # signed in with an identity provider: as their token said when they decided
                role, groups = Role(decider["role"]), list(decider.get("groups") or [])
        model = ctx.candidate.model
        project = ctx.ws.registry.get_model(model).project
        held = ctx.ws.access.roles(
            Scope(model=model, project=project), Identity(name=approver, role=role, groups=groups)
        )
        if not any(r.allows(Role(self.role)) for r in held):
            return f"approved by {approver}, {_a(role.value)}; {_a(self.role)} must approve"
        return ""


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


_RULES: dict[str, type[Any]] = {
    r.kind: r for r in (MetricThreshold, NoWorseThanChampion, DataValidationPassed, LatencyBudget)
}
_RULES[ApprovalRequired.kind] = ApprovalRequired


def rule_from_dict(spec: Mapping[str, Any]) -> Rule:
    """A rule from ``{"rule": "metric_threshold", "metric": "f1", "op": ">=", "value": 0.8}``
    (kinds: metric_threshold, no_worse_than_champion, latency_budget, approval; a
    data_validation rule takes a ValidationReport and is built in code)."""
    fields = dict(spec)
    kind = fields.pop("rule", None)
    cls = _RULES.get(str(kind))
    if cls is None or cls is DataValidationPassed:
        known = ", ".join(k for k in _RULES if k != DataValidationPassed.kind)
        raise InvalidInput(f"unknown gate rule {kind!r}; use one of {known}")
    try:
        rule: Rule = cls(**fields)
    except TypeError as exc:
        raise InvalidInput(f"gate rule {kind}: {exc}") from None
    return rule


@dataclass
class QualityGate:
    """Rules a candidate must all pass; approvals are checked after the others."""

    rules: Sequence[Rule]

    def __post_init__(self) -> None:
        self.rules = [rule_from_dict(r) if isinstance(r, Mapping) else r for r in self.rules]

    @property
    def metrics(self) -> list[str]:
        return [
            r.metric for r in self.rules if isinstance(r, MetricThreshold | NoWorseThanChampion)
        ]


# --- evaluation ---------------------------------------------------------------------------


def evaluate_candidate(
    ws: Workspace,
    candidate: str,
    holdout: pd.DataFrame,
    target: str,
    gate: QualityGate,
    *,
    alias: str = "champion",
    metrics: Sequence[str] | None = None,
    task: Task | None = None,
    trusted: bool = False,
) -> GateReport:
    """Score ``candidate`` (a ``models:/`` URI) and the ``alias`` holder on ``holdout``, then
    check every rule of ``gate``. ``metrics`` default by task, inferred unless given."""
    import pandas as pd

    if not isinstance(holdout, pd.DataFrame):
        raise InvalidInput(f"holdout must be a DataFrame, not {type(holdout).__name__}")
    if target not in holdout.columns:
        raise InvalidInput(f"the holdout has no target column {target!r}")
    if task is not None and task not in ("classification", "regression"):
        raise InvalidInput("task must be 'classification' or 'regression'")
    labelled = holdout[holdout[target].notna()]
    if labelled.empty:
        raise InvalidInput("the holdout has no row with a target value")
    version = ws.registry.resolve(candidate)
    champion = _champion(ws, version.model, alias)
    y = labelled[target].to_numpy()
    features = labelled.drop(columns=[target])
    predictor = ws.registry.load_model(version, trusted=trusted)
    outputs = predictor.predict(features)
    prediction, proba = _split_outputs(outputs)
    chosen_task: Task = task or _infer_task(y, prediction, proba)
    names = list(
        dict.fromkeys(
            [
                *(metrics or _default_metrics(chosen_task)),
                *gate.metrics,
            ]
        )
    )
    for name in names:
        _check_metric(name, chosen_task)
    notes: dict[str, str] = {}
    if len(labelled) < len(holdout):
        notes["holdout"] = f"{len(holdout) - len(labelled)} rows without a target were left out"
    cand_metrics = _metrics(chosen_task, names, y, prediction, proba, notes, "")

    champ_metrics: dict[str, float | None] | None = None
    champion_error = ""
    if champion is not None and champion.version == version.version:
        champ_metrics = dict(cand_metrics)
    elif champion is not None:
        try:
            out = ws.registry.load_model(champion, trusted=trusted).predict(features)
            c_pred, c_proba = _split_outputs(out)
            champ_metrics = _metrics(chosen_task, names, y, c_pred, c_proba, notes, "champion.")
        except (ModelyardError, ValueError, TypeError, KeyError) as exc:
            champion_error = str(getattr(exc, "detail", exc))
            notes["champion"] = f"could not evaluate v{champion.version}: {champion_error}"

    subject = f"models:/{version.model}/{version.version}@{alias}"
    ctx = _Context(
        ws=ws,
        candidate=version,
        champion=champion,
        alias=alias,
        subject=subject,
        predictor=predictor,
        features=features,
        candidate_metrics=cand_metrics,
        champion_metrics=champ_metrics,
        champion_error=champion_error,
        notes=notes,
    )
    results: dict[int, RuleResult] = {}
    ordered = sorted(
        enumerate(gate.rules), key=lambda ir: isinstance(ir[1], ApprovalRequired)
    )  # approvals last, the report keeps the gate's order
    for i, rule in ordered:
        res = rule.check(ctx)
        results[i] = res
        if not res.passed:
            ctx.failed_so_far.append(res.rule)
    rules = [results[i] for i in range(len(gate.rules))]
    return GateReport(
        candidate=version.uri,
        model=version.model,
        version=version.version,
        alias=alias,
        subject=subject,
        champion_version=champion.version if champion else None,
        task=chosen_task,
        holdout_rows=len(labelled),
        candidate_metrics=cand_metrics,
        champion_metrics=champ_metrics,
        metric_notes=notes,
        rules=rules,
        passed=all(r.passed for r in rules),
        evaluated_at=datetime.now(UTC),
        evaluated_by=ws.actor,
    )


def _champion(ws: Workspace, model: str, alias: str) -> ModelVersion | None:
    try:
        current = ws.registry.get_alias(model, alias)
    except NotFound:
        return None
    return ws.registry.get_version(model, current.version)


# --- promotion ----------------------------------------------------------------------------


def promote(
    ws: Workspace,
    report: GateReport,
    *,
    alias: str = "champion",
    pipeline_run_id: str | None = None,
    triggered_at: datetime | None = None,
    rollout: RolloutPlan | Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> Promotion:
    """Move ``alias`` to the report's candidate if every rule passed; record the decision.

    The alias does not move either when it changed since the report's evaluation (when
    ``alias`` is the one the candidate was compared with) or when the registry refuses.

    With ``rollout`` (a :class:`~modelyard.rollouts.RolloutPlan`), a candidate that passed
    is released by a rollout on ``endpoint`` (default: the one endpoint that serves
    ``models:/<model>@<alias>``) instead of at once: the alias moves when the rollout
    succeeds, and the promotion is ``promoted`` from then on. With no endpoint following
    the alias (no champion yet, say) the alias moves at once.
    """
    reasons = report.reasons()
    previous = _alias_version(ws, report.model, alias)
    if not reasons and alias == report.alias and previous != report.champion_version:
        reasons.append(
            f"@{alias} moved from {_v(report.champion_version)} to {_v(previous)} since the "
            "gate was evaluated; evaluate the candidate again"
        )
    promotion_id = _new_id()
    rollout_id = None
    if not reasons and rollout is not None:
        try:
            where = endpoint or _following(ws, report.model, alias)
            if where is not None:
                plan = dict(rollout.model_dump() if hasattr(rollout, "model_dump") else rollout)
                plan.update(finish="alias", alias=alias)
                started = ws.rollouts.start(
                    where,
                    f"models:/{report.model}/{report.version}",
                    plan,
                    promotion_id=promotion_id,
                )
                rollout_id = started.id
        except ModelyardError as exc:
            reasons.append(f"could not start a rollout: {exc.detail}")
    promoted = False
    if not reasons and rollout_id is None:
        try:
            ws.registry.set_alias(
                report.model,
                alias,
                report.version,
                reason=f"promoted: every quality gate passed ({report.subject})",
                gates_passed=True,
            )
            promoted = True
        except (Conflict, NotFound, InvalidInput, Forbidden) as exc:
            reasons.append(f"the registry refused to move @{alias}: {exc.detail}")
    now = datetime.now(UTC)
    row = PromotionRow(
        id=promotion_id,
        model=report.model,
        version=report.version,
        alias=alias,
        previous_version=previous,
        promoted=promoted,
        report={**report.model_dump(mode="json"), "reasons": reasons},
        pipeline_run_id=pipeline_run_id,
        triggered_at=triggered_at,
        decided_at=now,
        decided_by=ws.actor,
        rolled_back_at=None,
        rollout_id=rollout_id,
    )
    with ws.store.write(ws.actor) as tx:
        tx.session.add(row)
        after: dict[str, Any] = {
            "model": report.model,
            "version": report.version,
            "alias": alias,
            "promoted": promoted,
            "pipeline_run_id": pipeline_run_id,
        }
        if rollout_id is not None:
            after["rollout"] = rollout_id
        if reasons:
            after["reasons"] = reasons
        action = "pipeline.promote" if promoted else "pipeline.gate_failed"
        if rollout_id is not None:
            action = "pipeline.release"
        tx.record(action, "promotion", row.id, {"version": previous}, after)
    return _promotion(row)


def _following(ws: Workspace, model: str, alias: str) -> str | None:
    """The one endpoint that serves ``models:/<model>@<alias>`` (None: none, or several:
    name one)."""
    uri = f"models:/{model}@{alias}"
    found = [e.name for e in ws.endpoints.list() if e.target == uri]
    if len(found) > 1:
        raise InvalidInput(
            f"endpoints {', '.join(found)} all serve {uri}; name the one to roll out on "
            "(promote(..., endpoint=NAME))"
        )
    return found[0] if found else None


def record_rollout(ws: Workspace, promotion_id: str, rollout: Rollout) -> Promotion:
    """Record how the rollout releasing a promotion ended: promoted when it succeeded,
    else the reason it did not."""
    with ws.store.write(ws.actor) as tx:
        row = tx.session.get(PromotionRow, promotion_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no promotion {promotion_id!r}")
        if rollout.phase == "succeeded":
            row.promoted = True
            row.decided_at = rollout.ended_at or datetime.now(UTC)  # when it went live
            action = "pipeline.promote"
        else:
            reason = f"rollout {rollout.id} {rollout.phase.replace('_', ' ')}: {rollout.reason}"
            report = dict(row.report)
            report["reasons"] = [*report.get("reasons", []), reason]
            row.report = report
            action = "pipeline.gate_failed"
        tx.record(
            action,
            "promotion",
            row.id,
            {"version": row.previous_version},
            {
                "model": row.model,
                "version": row.version,
                "alias": row.alias,
                "promoted": row.promoted,
                "rollout": rollout.id,
            },
        )
        return _promotion(row)


def get_promotion(ws: Workspace, promotion_id: str) -> Promotion:
    with ws.store.read() as s:
        row = s.get(PromotionRow, promotion_id)
        if row is None:
            raise NotFound(f"no promotion {promotion_id!r}")
        return _promotion(row)


def list_promotions(
    ws: Workspace,
    model: str | None = None,
    *,
    alias: str | None = None,
    promoted: bool | None = None,
    pipeline_run_id: str | None = None,
    limit: int = 100,
) -> list[Promotion]:
    """Promotion decisions, newest first (``pipeline_run_id``: only that run's)."""
    check_limit(limit)
    query = select(PromotionRow).order_by(PromotionRow.decided_at.desc(), PromotionRow.id.desc())
    if model is not None:
        query = query.where(PromotionRow.model == model)
    if pipeline_run_id is not None:
        query = query.where(PromotionRow.pipeline_run_id == pipeline_run_id)
    if alias is not None:
        query = query.where(PromotionRow.alias == alias)
    if promoted is not None:
        query = query.where(PromotionRow.promoted == promoted)
    with ws.store.read() as s:
        return [_promotion(r) for r in s.scalars(query.limit(limit))]


def mark_rolled_back(ws: Workspace, promotion_id: str, at: datetime | None = None) -> Promotion:
    """Record that a promotion was later undone (counts towards the change failure rate)."""
    with ws.store.write(ws.actor) as tx:
        row = tx.session.get(PromotionRow, promotion_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no promotion {promotion_id!r}")
        if not row.promoted:
            raise Conflict(f"promotion {promotion_id} did not move an alias; nothing to roll back")
        if row.rolled_back_at is None:
            row.rolled_back_at = at or datetime.now(UTC)
            tx.record(
                "pipeline.rollback",
                "promotion",
                row.id,
                None,
                {"model": row.model, "version": row.version, "alias": row.alias},
            )
        return _promotion(row)


def _promotion(row: PromotionRow) -> Promotion:
    data = dict(row.report)
    reasons = [str(r) for r in data.pop("reasons", [])]
    return Promotion(
        id=row.id,
        model=row.model,
        version=row.version,
        alias=row.alias,
        previous_version=row.previous_version,
        promoted=row.promoted,
        reasons=reasons,
        report=GateReport.model_validate(data),
        pipeline_run_id=row.pipeline_run_id,
        triggered_at=row.triggered_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        rolled_back_at=row.rolled_back_at,
        rollout_id=row.rollout_id,
    )


def _alias_version(ws: Workspace, model: str, alias: str) -> int | None:
    try:
        return ws.registry.get_alias(model, alias).version
    except NotFound:
        return None


def _new_id() -> str:
    from ulid import ULID

    return str(ULID())


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"


# --- metrics ------------------------------------------------------------------------------

_CLASSIFICATION_ALL = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
)
_REGRESSION_ALL = ("mae", "mse", "rmse", "r2", "mape")


def _check_metric(name: str, task: Task | None = None) -> None:
    known: tuple[str, ...] = _CLASSIFICATION_ALL + _REGRESSION_ALL
    if task is not None:
        known = _CLASSIFICATION_ALL if task == "classification" else _REGRESSION_ALL
    if name not in known:
        what = f"{task} metric" if task else "metric"
        raise InvalidInput(f"unknown {what} {name!r}; use one of {', '.join(known)}")


def _default_metrics(task: Task) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def _split_outputs(
    outputs: Mapping[str, Any],
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64] | None]:
    import numpy as np

    if not outputs:
        raise InvalidInput("the model returned no outputs")
    name = "predictions" if "predictions" in outputs else next(iter(outputs))
    prediction = np.asarray(outputs[name])
    if prediction.ndim == 2 and prediction.shape[1] == 1:
        prediction = prediction[:, 0]
    proba_name = next((n for n in _PROBABILITY_NAMES if n in outputs and n != name), None)
    proba = None if proba_name is None else np.asarray(outputs[proba_name], dtype=np.float64)
    return prediction, proba


def _infer_task(
    y: npt.NDArray[Any], prediction: npt.NDArray[Any], proba: npt.NDArray[Any] | None
) -> Task:
    import pandas as pd
    from sklearn.utils.multiclass import type_of_target

    if proba is not None:
        return "classification"
    try:
        kind = type_of_target(y)
    except ValueError:
        return "regression"
    if kind not in ("binary", "multiclass"):
        return "regression"
    try:
        labels = set(pd.unique(y).tolist())
        predicted = set(pd.unique(prediction.reshape(-1)).tolist())
    except TypeError:
        return "classification"
    if predicted <= labels or prediction.dtype.kind in "biuOSU":
        return "classification"
    return "regression"  # fractional predictions that are not labels


def _metrics(
    task: Task,
    names: Sequence[str],
    y: npt.NDArray[Any],
    prediction: npt.NDArray[Any],
    proba: npt.NDArray[np.float64] | None,
    notes: dict[str, str],
    prefix: str,
) -> dict[str, float | None]:
    if len(prediction) != len(y):
        raise InvalidInput(
            f"the model returned {len(prediction)} predictions for {len(y)} holdout rows"
        )
    compute = _classification if task == "classification" else _regression
    out: dict[str, float | None] = {}
    for name in names:
        try:
            value, why = compute(name, y, prediction, proba)
        except (ValueError, TypeError) as exc:
            value, why = None, str(exc)
        if value is not None and not math.isfinite(value):
            value, why = None, f"{name} is not finite"
        out[name] = value
        if why:
            notes[prefix + name] = why
    return out


def _classification(
    name: str,
    y: npt.NDArray[Any],
    pred: npt.NDArray[Any],
    proba: npt.NDArray[np.float64] | None,
) -> tuple[float | None, str]:
    import numpy as np
    import pandas as pd
    from sklearn import metrics as m

    labels = sorted(set(pd.unique(y).tolist()) | set(pd.unique(pred).tolist()))
    binary = len(labels) <= 2
    avg: dict[str, Any] = (
        {"average": "binary", "pos_label": labels[-1]} if binary else {"average": "macro"}
    )
    if name == "accuracy":
        return float(m.accuracy_score(y, pred)), ""
    if name == "balanced_accuracy":
        return float(m.balanced_accuracy_score(y, pred)), ""
    if name in ("precision", "recall", "f1"):
        fn = {"precision": m.precision_score, "recall": m.recall_score, "f1": m.f1_score}[name]
        return float(fn(y, pred, zero_division=0, **avg)), ""
    # roc_auc, log_loss: from probabilities, one column per class in sorted order
    if proba is None:
        return None, "the model gives no probabilities"
    classes = sorted(set(pd.unique(y).tolist()))
    if name == "roc_auc" and len(classes) < 2:
        return None, "the holdout has a single class"
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    if proba.shape[1] != len(classes):
        return None, (
            f"the model gives {proba.shape[1]} probability columns but the holdout has "
            f"{len(classes)} classes"
        )
    if name == "roc_auc":
        if len(classes) == 2:
            return float(m.roc_auc_score(y, proba[:, 1])), ""
        return float(m.roc_auc_score(y, proba, multi_class="ovr", labels=classes)), ""
    return float(m.log_loss(y, proba, labels=classes)), ""


def _regression(
    name: str,
    y: npt.NDArray[Any],
    pred: npt.NDArray[Any],
    proba: npt.NDArray[np.float64] | None,
) -> tuple[float | None, str]:
    import numpy as np
    from sklearn import metrics as m

    yt = np.asarray(y, dtype=np.float64)
    yp = np.asarray(pred, dtype=np.float64).reshape(len(yt), -1)[:, 0]
    if name == "mae":
        return float(m.mean_absolute_error(yt, yp)), ""
    if name == "mse":
        return float(m.mean_squared_error(yt, yp)), ""
    if name == "rmse":
        return float(math.sqrt(m.mean_squared_error(yt, yp))), ""
    if name == "mape":
        return float(m.mean_absolute_percentage_error(yt, yp)), ""
    if len(yt) < 2 or np.all(yt == yt[0]):
        return None, "R² is undefined for a constant target"
    return float(m.r2_score(yt, yp)), ""


# --- formatting ---------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None:
        return "none"
    return f"{x:.4g}"


def _negate(op: str) -> str:
    return {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!="}[op]
