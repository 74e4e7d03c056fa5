"""Progressive delivery: a new version reaches an endpoint's traffic step by step, compared
with the baseline at each step, and rolls back by itself when it is worse."""

from modelyard.rollouts.entities import (
    Analysis,
    Check,
    Rollout,
    RolloutEvent,
    RolloutPlan,
    Thresholds,
)
from modelyard.serving.entities import StickyKey

__all__ = [
    "Analysis",
    "Check",
    "Rollout",
    "RolloutEvent",
    "RolloutPlan",
    "StickyKey",
    "Thresholds",
]
