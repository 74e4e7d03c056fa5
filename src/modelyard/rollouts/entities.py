"""What the rollouts domain hands out: plans, rollouts, analyses and their checks."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelyard.serving.entities import StickyKey

#: A rollout's life: ``shadow`` (mirrored, not answering), ``canary`` (a share of traffic),
#: ``promoting`` (every step passed; waiting for the alias move to be allowed, e.g. an
#: approval), then one of the ends.
Phase = Literal["shadow", "canary", "promoting", "succeeded", "rolled_back", "aborted"]
ENDED: frozenset[str] = frozenset({"succeeded", "rolled_back", "aborted"})
Verdict = Literal["pass", "fail", "inconclusive"]
Finish = Literal["alias", "endpoint"]
Url = Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://")]


class Thresholds(BaseModel):
    """How much worse than the baseline the canary may be before a check fails.

    A check fails only when the difference is both statistically significant (one-sided
    p-value below ``alpha``) and larger than its margin here: a significant but negligible
    difference passes, a large difference on too little data is inconclusive.
    """

    model_config = ConfigDict(extra="forbid")

    #: 0.001, not 0.01: a rollout tests each step at least once, and at 0.01 about one good
    #: canary in a hundred would fail an analysis at low traffic; the bad canaries the
    #: checks exist for give p-values far below either (see bench/RESULTS.md, rollouts).
    alpha: float = Field(default=0.001, gt=0, lt=0.5, description="significance level per check")
    error_rate_margin: float = Field(
        default=0.01, ge=0, le=1, description="canary error rate above the baseline's (absolute)"
    )
    latency_ratio: float = Field(
        default=0.2, ge=0, le=100, description="canary p50 above the baseline's (relative)"
    )
    latency_ms: float = Field(
        default=5.0, ge=0, le=600_000, description="... and by at least this many ms"
    )
    max_p99_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="an absolute ceiling on the canary's p99"
    )
    output_psi: float = Field(
        default=0.2, gt=0, le=10, description="PSI of the canary's outputs vs the baseline's"
    )
    metric_margin: float = Field(
        default=0.02, ge=0, le=1e9, description="feedback metric worse than the baseline's by"
    )
    disagreement: float = Field(
        default=0.1, ge=0, le=1, description="shadow: share of answers that differ"
    )


class RolloutPlan(BaseModel):
    """How a rollout proceeds. Every field has a default; see docs/rollouts.md."""

    model_config = ConfigDict(extra="forbid")

    steps: list[Annotated[float, Field(ge=0.1, le=100)]] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="the canary's share of traffic, in percent, step by step",
    )
    shadow_requests: int = Field(
        default=0, ge=0, le=10_000_000, description="mirror this many requests first (0: none)"
    )
    interval_seconds: float = Field(
        default=30.0, ge=1, le=86_400, description="seconds between analyses"
    )
    min_requests: int = Field(
        default=50, ge=1, le=10_000_000, description="canary requests a step needs to pass"
    )
    min_labels: int = Field(
        default=30,
        ge=1,
        le=10_000_000,
        description="labelled predictions per side before feedback metrics are compared",
    )
    max_failures: int = Field(
        default=1, ge=1, le=100, description="consecutive failed analyses before rollback"
    )
    max_inconclusive: int = Field(
        default=10, ge=1, le=10_000, description="consecutive inconclusive analyses tolerated"
    )
    deadline_seconds: float = Field(
        default=86_400.0, ge=1, le=30 * 86_400, description="roll back if not done by then"
    )
    early_errors: bool = Field(
        default=True,
        description="between analyses, look at the canary's errors every second and roll "
        "back at once on overwhelming evidence",
    )
    finish: Finish | None = Field(
        default=None,
        description="alias: move the alias to the new version; endpoint: point only the "
        "endpoint at it (default: alias when the endpoint follows one)",
    )
    alias: str | None = Field(default=None, description="the alias to move (finish=alias)")
    sticky: StickyKey | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    webhooks: list[Url] = Field(default_factory=list, max_length=10)

    @field_validator("alias")
    @classmethod
    def _alias(cls, alias: str | None) -> str | None:
        from modelyard.errors import InvalidInput
        from modelyard.registry.uri import check_alias

        try:
            return None if alias is None else check_alias(alias)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None

    @model_validator(mode="after")
    def _something_to_compare(self) -> RolloutPlan:
        if self.alias is not None and self.finish == "endpoint":
            raise ValueError("alias is what finish=alias moves; leave it out with finish=endpoint")
        if self.steps[0] >= 100 and self.shadow_requests == 0:
            raise ValueError(
                "a first step of 100 % leaves no baseline to compare the canary with; start "
                "lower (e.g. steps [5, 25, 50, 100]) or add a shadow phase (shadow_requests)"
            )
        return self

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must increase, e.g. [5, 25, 50, 100]")
        return steps


class Check(BaseModel):
    """One comparison of the canary with the baseline in one analysis."""

    name: str  # errors, latency, outputs, metric:<name>, disagreement, ...
    verdict: Verdict
    summary: str  # one line a person reads
    figures: dict[str, Any] = Field(default_factory=dict)


class Analysis(BaseModel):
    """One look at a step's data: each check's verdict and the step's verdict."""

    at: datetime
    phase: Phase
    step: int
    weight: float
    verdict: Verdict
    baseline_requests: int
    canary_requests: int
    checks: list[Check]
    early: bool = False  # the early error look, between analyses


class RolloutEvent(BaseModel):
    """A change of a rollout's state: started, stepped, paused, rolled back, ..."""

    at: datetime
    kind: str
    by: str
    detail: str = ""


class Rollout(BaseModel):
    """A new version's way into an endpoint's traffic, step by step, under analysis."""

    id: str
    endpoint: str
    model: str
    version: int
    target: str  # models:/<model>/<version>: the canary's route
    baseline: str  # the endpoint's target when the rollout started
    baseline_model: str = ""  # ... and the version it named then
    baseline_version: int = 0
    plan: RolloutPlan
    phase: Phase
    paused: bool = False
    step: int  # index into plan.steps (-1: shadow phase)
    weight: float  # the canary's share now, in percent
    failures: int = 0  # consecutive failed analyses
    inconclusive: int = 0  # consecutive inconclusive analyses
    reason: str = ""  # why it ended, or why it waits
    started_at: datetime
    started_by: str
    step_started_at: datetime
    next_analysis_at: datetime
    ended_at: datetime | None = None
    promotion_id: str | None = None
    analyses: list[Analysis] = Field(default_factory=list)  # the newest, oldest first
    analysis_count: int = 0  # how many there are in all
    events: list[RolloutEvent] = Field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase not in ENDED
