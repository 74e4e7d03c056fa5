"""Project routes: the use case, KPIs, constraints and stakeholders a model serves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from modelyard.api.deps import editor, viewer
from modelyard.api.requests import ApiRoute, documented
from modelyard.page import Limit, Page
from modelyard.projects.entities import KPI, Project, Stakeholder
from modelyard.projects.service import NAME
from modelyard.workspace import Workspace

router = APIRouter(tags=["projects"], route_class=ApiRoute)


class ProjectCreate(BaseModel):
    name: Annotated[str, documented(NAME, "up to 128 letters, digits, '.', '_', '-'")]
    description: str = ""
    objective: str = ""
    kpis: list[KPI] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list)
    stakeholders: list[Stakeholder] = Field(default_factory=list)


class ProjectPatch(BaseModel):
    description: str | None = None
    objective: str | None = None
    kpis: list[KPI] | None = None
    constraints: list[str] | None = None
    stakeholders: list[Stakeholder] | None = None


@router.post("/projects", status_code=201, response_model=Project)
def create_project(body: ProjectCreate, ws: Workspace = Depends(editor)) -> Project:
    return ws.projects.create(
        body.name,
        description=body.description,
        objective=body.objective,
        kpis=body.kpis,
        constraints=body.constraints,
        stakeholders=body.stakeholders,
    )


@router.get("/projects", response_model=Page[Project])
def list_projects(
    q: str | None = None,
    limit: Limit = 100,
    page_token: str | None = None,
    ws: Workspace = Depends(viewer),
) -> Page[Project]:
    return ws.projects.list(q=q, limit=limit, page_token=page_token)


@router.get("/projects/{name}", response_model=Project)
def get_project(name: str, ws: Workspace = Depends(viewer)) -> Project:
    return ws.projects.get(name)


@router.patch("/projects/{name}", response_model=Project)
def update_project(name: str, body: ProjectPatch, ws: Workspace = Depends(editor)) -> Project:
    return ws.projects.update(name, **body.model_dump(exclude_unset=True))


@router.delete("/projects/{name}", status_code=204)
def delete_project(name: str, ws: Workspace = Depends(editor)) -> None:
    ws.projects.delete(name)
