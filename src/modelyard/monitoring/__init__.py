"""Monitoring: the prediction log (and, built on it, profiles, drift and feedback)."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.monitoring.predlog import BASE_SCHEMA, PredictionLog, PredictionSegment

__all__ = ["BASE_SCHEMA", "PredictionLog", "PredictionSegment"]


def __getattr__(name: str) -> Any:
    # The log, and pyarrow under it, loads on first use: the SDK and the CLI import the
    # monitoring service and its entities without writing or reading the log.
    if name in __all__:
        from modelyard.monitoring import predlog

        return getattr(predlog, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
