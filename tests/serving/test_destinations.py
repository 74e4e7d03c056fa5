"""Where an endpoint sends its requests, and each destination's share."""

from __future__ import annotations

from datetime import UTC, datetime

from modelyard.serving.entities import Destination, Endpoint, TrafficPolicy

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def endpoint(target: str = "models:/m@champion", **policy: object) -> Endpoint:
    return Endpoint(
        id="e",
        name="e",
        target=target,
        policy=TrafficPolicy.model_validate(policy),
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_single_target_takes_every_request() -> None:
    assert endpoint().destinations() == [Destination("models:/m@champion", "target", 100.0)]


def test_routes_share_by_relative_weight_and_a_shadow_copies() -> None:
    split = endpoint(
        routes=[{"target": "models:/m/1", "weight": 3}, {"target": "models:/m/2", "weight": 1}],
        shadow="models:/m/3",
    )
    assert split.destinations() == [
        Destination("models:/m/1", "route", 75.0),
        Destination("models:/m/2", "route", 25.0),
        Destination("models:/m/3", "shadow", None),
    ]


def test_variants_are_chosen_per_request() -> None:
    switched = endpoint(
        variants=[
            {"name": "big", "target": "models:/m/1"},
            {"name": "small", "target": "models:/s/1"},
        ],
        slo_ms=50,
    )
    assert [(d.role, d.share, d.name) for d in switched.destinations()] == [
        ("variant", None, "big"),
        ("variant", None, "small"),
    ]
