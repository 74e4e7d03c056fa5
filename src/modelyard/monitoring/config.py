"""Monitoring settings: how drift is judged, and what an endpoint's outputs mean."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["DriftConfig", "DriftMethod", "FeatureDriftConfig", "MonitorConfig"]

DriftMethod = Literal["psi", "ks", "chisquare", "jensenshannon", "wasserstein"]


class FeatureDriftConfig(BaseModel):
    """How one feature is judged: its method and threshold (None: the method's default)."""

    method: DriftMethod | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    enabled: bool = True


class DriftConfig(BaseModel):
    """Drift settings for a whole comparison; per-feature entries override the defaults.

    Defaults follow Evidently's data drift preset so verdicts match what teams know:
    numbers use the normed Wasserstein distance (threshold 0.1) above ``large_sample`` rows
    and Kolmogorov-Smirnov (p < 0.05) below; categories use Jensen-Shannon (0.1) above and
    chi-square (p < 0.05) below.
    """

    numeric_method: DriftMethod | None = None  # None: by sample size, as above
    categorical_method: DriftMethod | None = None
    large_sample: int = Field(default=1000, ge=1)
    min_samples: int = Field(default=30, ge=1)  # fewer rows in a window: "insufficient"
    drift_share: float = Field(default=0.5, gt=0, le=1)  # share of drifted features => dataset
    features: dict[str, FeatureDriftConfig] = Field(default_factory=dict)


class MonitorConfig(BaseModel):
    """An endpoint's monitoring settings (stored per endpoint, all optional)."""

    task: Literal["auto", "classification", "regression"] = "auto"
    prediction: str | None = None  # output holding the predicted label/value (first output)
    probabilities: str | None = None  # output of class probabilities, for ROC AUC / log loss
    positive_label: Any = None  # for binary precision/recall/F1 (default: the larger label)
    granularities: list[int] = Field(default_factory=lambda: [300, 3600, 86400])
    lateness_seconds: int = Field(default=30, ge=0)  # log rows may arrive this late
    drift: DriftConfig = Field(default_factory=DriftConfig)
