"""What the registry hands out: registered models, versions, aliases, cards, lineage."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelyard.errors import InvalidInput
from modelyard.jsonio import JsonFloat

#: The oldest a retention rule's ``min_age_days`` may ask for (a century).
MAX_RETENTION_DAYS = 36_500
#: The longest tag key and value of a model or version.
MAX_TAG_KEY = 256
MAX_TAG_VALUE = 5000


class RegisteredModel(BaseModel):
    id: str
    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    aliases: dict[str, int] = Field(default_factory=dict)
    latest_version: int | None = None
    project: str | None = None
    archived: bool = False
    created_at: datetime
    updated_at: datetime
    created_by: str = ""


class DatasetLink(BaseModel):
    """A dataset a version was trained or evaluated on."""

    dataset_id: str
    role: Literal["training", "validation", "test", "evaluation"] = "training"


class ModelVersion(BaseModel):
    id: str
    model: str
    version: int
    manifest_digest: str
    format: str
    signature: dict[str, Any]
    manifest: dict[str, Any]
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    status: Literal["ready", "archived"] = "ready"
    run_id: str | None = None
    datasets: list[DatasetLink] = Field(default_factory=list)
    source: str = ""
    created_at: datetime
    #: When its description or tags last changed (None from servers before this field).
    updated_at: datetime | None = None
    created_by: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


class Alias(BaseModel):
    model: str
    alias: str
    version: int
    updated_at: datetime


CARD_SECTIONS = (
    "summary",
    "intended_use",
    "limitations",
    "data",
    "metrics",
    "signature",
    "lineage",
    "ethical_considerations",
)


def check_card_sections(names: Iterable[str]) -> None:
    """InvalidInput naming the sections of ``names`` that a model card does not have."""
    unknown = set(names) - set(CARD_SECTIONS)
    if unknown:
        raise InvalidInput(
            f"unknown model card section(s) {', '.join(sorted(unknown))}; "
            f"sections are: {', '.join(CARD_SECTIONS)}"
        )


class CardSections(BaseModel):
    """The sections of a model card (:data:`CARD_SECTIONS`)."""

    summary: str = ""
    intended_use: str = ""
    limitations: str = ""
    data: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, JsonFloat] = Field(default_factory=dict)
    signature: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    ethical_considerations: str = ""


class ModelCard(CardSections):
    """A model card: generated at registration, editable section by section."""

    model: str
    version: int

    def to_markdown(self) -> str:
        """The card as a Markdown document."""
        lines = [f"# Model card: {self.model} v{self.version}", ""]
        for title, text in (
            ("Summary", self.summary),
            ("Intended use", self.intended_use),
            ("Limitations", self.limitations),
            ("Ethical considerations", self.ethical_considerations),
        ):
            lines += [f"## {title}", "", text or "_Not documented yet._", ""]
        lines += ["## Data", ""]
        lines += [
            f"- {d.get('name', d.get('dataset_id'))} v{d.get('version', '?')} ({d.get('role')}): "
            f"{d.get('num_rows', '?')} rows, digest {d.get('digest', '?')}"
            for d in self.data
        ] or ["_No dataset linked._"]
        lines += ["", "## Metrics", ""]
        lines += [f"- {k}: {v:.6g}" for k, v in sorted(self.metrics.items())] or ["_None logged._"]
        lines += ["", "## Signature", "", "| input | dtype | shape |", "|---|---|---|"]
        lines += [
            f"| {i.get('name')} | {i.get('dtype')} | {i.get('shape')} |"
            for i in self.signature.get("inputs", [])
        ]
        lines += ["", "## Lineage", ""]
        lines += [f"- {k}: {v}" for k, v in self.lineage.items()] or ["_None recorded._"]
        return "\n".join(lines) + "\n"


class Lineage(BaseModel):
    """Where a version came from: its run, experiment, datasets and code."""

    model: str
    version: int
    run_id: str | None = None
    experiment: str | None = None
    datasets: list[dict[str, Any]] = Field(default_factory=list)
    source: str = ""
    params: dict[str, str] = Field(default_factory=dict)
    code_version: str | None = None


class RetentionResult(BaseModel):
    """Versions a retention rule removed (or would remove, in a dry run)."""

    model: str
    deleted: list[int]
    kept: list[int]
    dry_run: bool


class VersionRuntime(BaseModel):
    """An optimised runtime checked against a version's native predictions (e.g. ONNX)."""

    model: str
    version: int
    runtime: str
    status: Literal["identical", "different", "failed", "unsupported"]
    artifact_digest: str | None = None
    report: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime

    @property
    def usable(self) -> bool:
        return self.status == "identical" and self.artifact_digest is not None
