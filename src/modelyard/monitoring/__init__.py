"""Monitoring: the prediction log (and, built on it, profiles, drift and feedback)."""

from modelyard.monitoring.predlog import BASE_SCHEMA, PredictionLog, PredictionSegment

__all__ = ["BASE_SCHEMA", "PredictionLog", "PredictionSegment"]
