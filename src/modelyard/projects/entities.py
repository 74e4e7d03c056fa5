"""What the projects domain hands out: projects with their KPIs and stakeholders."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from modelyard.jsonio import JsonFloat


class KPI(BaseModel):
    """A business or model measure the project is judged by, with the target to reach."""

    name: str = Field(min_length=1, max_length=256)
    target: JsonFloat = Field(allow_inf_nan=False)
    direction: Literal["maximize", "minimize"]
    unit: str = ""
    description: str = ""
    # The monitoring metric the KPI is measured by (e.g. "accuracy"); None: the KPI's name.
    metric: str | None = Field(default=None, min_length=1, max_length=256)


class Stakeholder(BaseModel):
    """Someone who owns, uses or signs off the model."""

    name: str = Field(min_length=1, max_length=256)
    role: str
    contact: str = ""


class Project(BaseModel):
    id: str
    name: str
    description: str = ""
    objective: str = ""
    kpis: list[KPI] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list)
    stakeholders: list[Stakeholder] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
