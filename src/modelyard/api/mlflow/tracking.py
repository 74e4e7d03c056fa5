"""MLflow's tracking routes (filled in by the work on issue #20)."""

from __future__ import annotations

from fastapi import APIRouter

from modelyard.api.mlflow.protocol import MlflowRoute

router = APIRouter(route_class=MlflowRoute)
