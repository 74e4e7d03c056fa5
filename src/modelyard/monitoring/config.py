"""Monitoring settings: how drift is judged, and what an endpoint's outputs mean."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool

from modelyard.jsonio import JsonFloat, JsonInt, NotABoolean
from modelyard.store.schema import MAX_INTEGER

__all__ = ["DriftConfig", "DriftMethod", "FeatureDriftConfig", "MonitorConfig", "QualityMetric"]

DriftMethod = Literal["psi", "ks", "chisquare", "jensenshannon", "wasserstein"]
QualityMetric = Literal["accuracy", "precision", "recall", "f1", "roc_auc", "r2"]
#: The window lengths a monitor may keep: a minute or more, dividing a day.
GRANULARITIES = [g for g in range(60, 86_401) if 86_400 % g == 0]


class FeatureDriftConfig(BaseModel):
    """How one feature is judged: its method and threshold (None: the method's default)."""

    method: DriftMethod | None = None
    threshold: Annotated[float, Field(allow_inf_nan=False), NotABoolean] | None = None
    enabled: StrictBool = True


class DriftConfig(BaseModel):
    """Drift settings for a whole comparison; per-feature entries override the defaults.

    Defaults follow Evidently's data drift preset so verdicts match what teams know:
    numbers use the normed Wasserstein distance (threshold 0.1) above ``large_sample`` rows
    and Kolmogorov-Smirnov (p < 0.05) below; categories use Jensen-Shannon (0.1) above and
    chi-square (p < 0.05) below.
    """

    numeric_method: DriftMethod | None = None  # None: by sample size, as above
    categorical_method: DriftMethod | None = None
    large_sample: JsonInt = Field(default=1000, ge=1, le=MAX_INTEGER)
    # Fewer rows in a window: "insufficient".
    min_samples: JsonInt = Field(default=30, ge=1, le=MAX_INTEGER)
    drift_share: JsonFloat = Field(default=0.5, gt=0, le=1)  # share of drifted features
    features: dict[str, FeatureDriftConfig] = Field(default_factory=dict)


class MonitorConfig(BaseModel):
    """An endpoint's monitoring settings (stored per endpoint, all optional)."""

    task: Literal["auto", "classification", "regression"] = "auto"
    prediction: str | None = None  # output holding the predicted label/value (first output)
    probabilities: str | None = None  # output of class probabilities, for ROC AUC / log loss
    positive_label: Any = None  # for binary precision/recall/F1 (default: the larger label)
    # Seconds; each divides a day, as the monitor's windows tile days (service.configure).
    granularities: list[Annotated[JsonInt, Field(json_schema_extra={"enum": GRANULARITIES})]] = (
        Field(default_factory=lambda: [300, 3600, 86400], min_length=1)
    )
    lateness_seconds: JsonInt = Field(default=30, ge=0, le=7 * 86_400)  # rows may be this late
    # A label whose prediction is not in the log yet is held this long, then expires.
    feedback_hold_seconds: JsonInt = Field(default=3600, ge=0, le=30 * 86400)
    # Labels for predictions up to this old re-evaluate their closed windows' alert rules.
    late_labels_seconds: JsonInt = Field(default=7 * 86400, ge=0, le=90 * 86400)
    # What "quality" weighs answers by in effective accuracy (monitoring/deadlines.py):
    # a metric where higher is better, from feedback or the version's evaluation run.
    quality_metric: QualityMetric = "accuracy"
    drift: DriftConfig = Field(default_factory=DriftConfig)
