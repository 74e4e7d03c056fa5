"""Serving: endpoints, the gateway (OIP v2 and MLflow scoring), batching and the model pool."""

from modelyard.serving.entities import Batching, CacheConfig, Endpoint, Route, TrafficPolicy

__all__ = ["Batching", "CacheConfig", "Endpoint", "Route", "TrafficPolicy"]
