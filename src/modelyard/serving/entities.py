"""What the serving domain hands out: endpoints and their traffic policies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

#: The longest an endpoint may take to give a prediction.
MAX_TIMEOUT_MS = 600_000


class Route(BaseModel):
    """One destination of a weighted split: a model URI and its share of traffic."""

    target: str = Field(description="models:/name@alias or models:/name/3")
    weight: float = Field(
        gt=0, le=1e9, allow_inf_nan=False, description="relative share; need not sum to 100"
    )


class TrafficPolicy(BaseModel):
    """How an endpoint picks the version that answers.

    With no routes, the endpoint's target answers everything. With routes, each request
    goes to one route chosen by weight (A/B split, canary). A shadow target receives a
    copy of every request; its answers are logged, never returned.
    """

    routes: list[Route] = Field(default_factory=list)
    shadow: str | None = None


class Batching(BaseModel):
    """Upper bounds for adaptive batching; the batcher stays below them when traffic is light."""

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)


class CacheConfig(BaseModel):
    """An optional prediction cache keyed by the hash of the request's inputs."""

    enabled: bool = False
    max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    ttl_seconds: float = Field(default=300.0, gt=0, le=366 * 86_400, allow_inf_nan=False)


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
    created_at: datetime
    updated_at: datetime
    created_by: str = ""

    def targets(self) -> list[str]:
        """Every model URI this endpoint may send a request to (shadow included)."""
        found = [r.target for r in self.policy.routes] or [self.target]
        if self.policy.shadow:
            found.append(self.policy.shadow)
        return list(dict.fromkeys(found))
