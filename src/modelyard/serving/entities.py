"""What the serving domain hands out: endpoints and their traffic policies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The longest an endpoint may take to give a prediction.
MAX_TIMEOUT_MS = 600_000


class Route(BaseModel):
    """One destination of a weighted split: a model URI and its share of traffic."""

    target: str = Field(description="models:/name@alias or models:/name/3")
    weight: float = Field(
        gt=0, le=1e9, allow_inf_nan=False, description="relative share; need not sum to 100"
    )


HeaderName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")]


class StickyKey(BaseModel):
    """Where a request's user key comes from: a header or an input field (the first row's
    value). The same key always goes to the same route while the weights allow it: a user
    sees one version during a rollout.

    The header is matched case-insensitively."""

    model_config = ConfigDict(extra="forbid")

    header: HeaderName | None = None
    field: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _one(self) -> StickyKey:
        if (self.header is None) == (self.field is None):
            raise ValueError("name either a header or a field as the sticky key, not both")
        return self


VariantName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
#: Metrics that are better lower: they cannot rank variants (higher first).
LOWER_IS_BETTER = frozenset({"mae", "mse", "rmse", "log_loss", "loss", "error", "error_rate"})
#: The longest deadline a request or an endpoint's SLO may ask for.
MAX_DEADLINE_MS = MAX_TIMEOUT_MS


class Variant(BaseModel):
    """One variant of an SLO-switched endpoint: a model URI, and optionally its quality.

    Without ``quality`` the gateway reads it: from the endpoint's labelled feedback on this
    version once there is enough, else from the version's run (its ``quality_metric``)."""

    model_config = ConfigDict(extra="forbid")

    name: VariantName
    target: str = Field(description="models:/name@alias or models:/name/3")
    quality: float | None = Field(
        default=None, allow_inf_nan=False, description="higher is better, e.g. accuracy"
    )


class VariantStatus(BaseModel):
    """A variant of an SLO-switched endpoint as the gateway ranks it: the version its target
    resolves to, and its quality with where that comes from (policy, feedback, run, or
    unknown)."""

    name: str
    target: str
    model: str
    version: int
    quality: float | None = None
    source: Literal["policy", "feedback", "run", "unknown"] = "unknown"


class TrafficPolicy(BaseModel):
    """How an endpoint picks the version that answers.

    With no routes, the endpoint's target answers everything. With routes, each request
    goes to one route chosen by weight (A/B split, canary), at random or, with ``sticky``,
    by a hash of the request's user key. A shadow target receives a copy of every request;
    its answers are logged, never returned.
    """

    routes: list[Route] = Field(default_factory=list)
    shadow: str | None = None
    #: Route by a hash of a user key instead of at random (see :class:`StickyKey`).
    sticky: StickyKey | None = None
    #: The id of the rollout that drives these routes (see modelyard.rollouts); while it
    #: runs, the endpoint's target and policy change only through it.
    rollout: str | None = None
    #: SLO model switching (see docs/switching.md): each request goes to the most accurate
    #: variant predicted to answer within its deadline.
    variants: list[Variant] = Field(default_factory=list, max_length=16)
    #: Each request's deadline unless it brings a shorter one (x-modelyard-deadline-ms).
    slo_ms: float | None = Field(default=None, gt=0, le=MAX_DEADLINE_MS, allow_inf_nan=False)
    #: The metric (higher is better) that ranks variants without an explicit quality.
    quality_metric: str = Field(default="accuracy", min_length=1, max_length=250)

    @model_validator(mode="after")
    def _switching(self) -> TrafficPolicy:
        if not self.variants:
            return self
        if self.routes or self.sticky is not None or self.rollout is not None:
            raise ValueError(
                "variants switch each request by its deadline: leave out routes and sticky "
                "(and no rollout may drive the endpoint)"
            )
        names = [v.name for v in self.variants]
        if len(set(names)) < len(names):
            raise ValueError(f"variant names must be unique, got {', '.join(names)}")
        if self.slo_ms is None:
            raise ValueError("variants need slo_ms, the latency each request should be answered in")
        if self.quality_metric.lower() in LOWER_IS_BETTER:
            raise ValueError(
                f"quality_metric ranks variants, higher first: {self.quality_metric} is better "
                "lower; use accuracy, f1, roc_auc, precision, recall or r2"
            )
        return self


class Batching(BaseModel):
    """Upper bounds for adaptive batching; the batcher stays below them when traffic is light."""

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)


class CacheConfig(BaseModel):
    """An optional prediction cache keyed by the hash of the request's inputs."""

    enabled: bool = False
    max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    ttl_seconds: float = Field(default=300.0, gt=0, le=366 * 86_400, allow_inf_nan=False)


GuardPolicy = Literal["off", "log", "flag", "reject"]
RedactAction = Literal["drop", "hash", "mask"]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]


class GuardConfig(BaseModel):
    """An input guard: each request's rows scored against the served version's reference.

    ``log`` writes each row's novelty score to the prediction log; ``flag`` also answers with
    an ``X-Modelyard-Guard`` header naming the rows at or above ``threshold``; ``reject``
    answers 422 instead of predicting when any row is. See docs/governance.md (input guard).
    """

    policy: GuardPolicy = "off"
    threshold: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)


class GuardVersion(BaseModel):
    """Whether the guard can score one served version's requests, and why not."""

    model: str
    version: int
    active: bool
    reason: str = ""
    features: list[str] = Field(default_factory=list)


class GuardStatus(BaseModel):
    """An endpoint's guard as the gateway applies it: its settings, and per version whether
    it is active (inactive: the version has no reference profile)."""

    endpoint: str
    policy: GuardPolicy
    threshold: float
    versions: list[GuardVersion] = Field(default_factory=list)


class Destination(NamedTuple):
    """A model URI an endpoint sends requests to: as its target, a weighted route, an SLO
    variant (``name``), or a shadow copy."""

    target: str
    role: Literal["target", "route", "variant", "shadow"]
    #: Percent of requests; None: chosen per request (a variant) or a copy of each (shadow).
    share: float | None
    name: str = ""


class Endpoint(BaseModel):
    id: str
    name: str
    target: str
    policy: TrafficPolicy = Field(default_factory=TrafficPolicy)
    batching: Batching = Field(default_factory=Batching)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    runtime: Literal["auto", "native"] = "auto"
    pinned: bool = False
    timeout_ms: int = Field(default=10_000, ge=1, le=MAX_TIMEOUT_MS)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    #: Input columns marked personal: what the prediction log keeps of them (the model
    #: still gets the real values). See docs/governance.md (redaction).
    redact: dict[ColumnName, RedactAction] = Field(default_factory=dict, max_length=1000)
    created_at: datetime
    updated_at: datetime
    created_by: str = ""

    def destinations(self) -> list[Destination]:
        """Where this endpoint sends requests, and each one's share of them."""
        policy = self.policy
        if policy.variants:
            found = [Destination(v.target, "variant", None, v.name) for v in policy.variants]
        elif policy.routes:
            total = sum(r.weight for r in policy.routes)
            found = [Destination(r.target, "route", 100 * r.weight / total) for r in policy.routes]
        else:
            found = [Destination(self.target, "target", 100.0)]
        if policy.shadow:
            found.append(Destination(policy.shadow, "shadow", None))
        return found

    def targets(self) -> list[str]:
        """Every model URI this endpoint may send a request to (shadow included)."""
        found = [
            *(r.target for r in self.policy.routes),
            *(v.target for v in self.policy.variants),
        ] or [self.target]
        if self.policy.shadow:
            found.append(self.policy.shadow)
        return list(dict.fromkeys(found))
