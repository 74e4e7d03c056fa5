"""The model registry: versioned models, aliases, lineage and model cards."""

from typing import TYPE_CHECKING, Any

from modelyard.registry.entities import (
    Alias,
    DatasetLink,
    Lineage,
    ModelCard,
    ModelVersion,
    RegisteredModel,
    RetentionResult,
    VersionRuntime,
)
from modelyard.registry.uri import ModelRef, parse_model_uri

if TYPE_CHECKING:
    from modelyard.registry.service import RegistryService

__all__ = [
    "Alias",
    "DatasetLink",
    "Lineage",
    "ModelCard",
    "ModelRef",
    "ModelVersion",
    "RegisteredModel",
    "RegistryService",
    "RetentionResult",
    "VersionRuntime",
    "parse_model_uri",
]


def __getattr__(name: str) -> Any:
    # The service, and SQLAlchemy under it, loads on first use: a gateway answers its first
    # requests with the entities alone (see serving/plans.py).
    if name == "RegistryService":
        from modelyard.registry.service import RegistryService

        return RegistryService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
