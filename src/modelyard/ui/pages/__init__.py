"""The dashboard's pages, one module per area; each holds an APIRouter named ``router``."""

from modelyard.ui.pages import (
    approvals,
    audit,
    endpoints,
    experiments,
    home,
    models,
    monitoring,
    pipelines,
)

ROUTERS = [
    home.router,
    models.router,
    experiments.router,
    endpoints.router,
    monitoring.router,
    pipelines.router,
    approvals.router,
    audit.router,
]
