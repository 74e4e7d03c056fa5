"""The model registry: versioned models, aliases, lineage and model cards."""

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
from modelyard.registry.service import RegistryService
from modelyard.registry.uri import ModelRef, parse_model_uri

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
