"""ProjectService on SQLite and PostgreSQL: round trips, validation, updates, delete rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from ulid import ULID

from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.projects.entities import KPI, Project, Stakeholder
from modelyard.store.tables import RegisteredModelRow
from modelyard.workspace import Workspace


def _churn(ws: Workspace) -> Project:
    return ws.projects.create(
        "churn",
        description="Predict which customers leave",
        objective="Cut monthly churn",
        kpis=[
            KPI(name="recall", target=0.8, direction="maximize"),
            {"name": "latency", "target": 50, "direction": "minimize", "unit": "ms"},
        ],
        constraints=["no personal data in features"],
        stakeholders=[Stakeholder(name="Ana", role="owner", contact="ana@example.com")],
    )


def test_create_get_round_trip(any_workspace: Workspace) -> None:
    ws = any_workspace
    created = _churn(ws)
    got = ws.projects.get("churn")
    assert got == created
    assert got.kpis[1] == KPI(name="latency", target=50.0, direction="minimize", unit="ms")
    assert got.constraints == ["no personal data in features"]
    assert got.stakeholders[0].contact == "ana@example.com"
    assert got.created_at.tzinfo is not None
    assert Project.model_validate_json(got.model_dump_json()) == got


def test_create_duplicate_and_bad_names(any_workspace: Workspace) -> None:
    ws = any_workspace
    ws.projects.create("p1")
    with pytest.raises(AlreadyExists, match="exists already"):
        ws.projects.create("p1")
    for bad in ["", "has space", "slash/name", "-lead", "x" * 200]:
        with pytest.raises(InvalidInput, match="not valid"):
            ws.projects.create(bad)


def test_kpi_direction_is_validated(any_workspace: Workspace) -> None:
    ws = any_workspace
    with pytest.raises(InvalidInput, match=r"KPI #1 .*direction"):
        ws.projects.create("p", kpis=[{"name": "auc", "target": 0.9, "direction": "up"}])
    with pytest.raises(ValidationError):
        KPI(name="auc", target=0.9, direction="up")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="stakeholder #1"):
        ws.projects.create("p", stakeholders=[{"role": "owner"}])
    with pytest.raises(InvalidInput, match="list of strings"):
        ws.projects.create("p", constraints="not a list")
    ws.projects.create("p")
    with pytest.raises(InvalidInput, match="direction"):
        ws.projects.update("p", kpis=[{"name": "auc", "target": 1, "direction": "sideways"}])


def test_get_missing_is_not_found(any_workspace: Workspace) -> None:
    with pytest.raises(NotFound, match="no project 'nope'"):
        any_workspace.projects.get("nope")
    with pytest.raises(NotFound):
        any_workspace.projects.resolve_id("nope")
    with pytest.raises(NotFound):
        any_workspace.projects.update("nope", description="x")
    with pytest.raises(NotFound):
        any_workspace.projects.delete("nope")


def test_list_search_and_pages(any_workspace: Workspace) -> None:
    ws = any_workspace
    for i in range(5):
        ws.projects.create(f"proj-{i}", description="fraud" if i % 2 else "churn")
    page = ws.projects.list(limit=2)
    assert [p.name for p in page.items] == ["proj-0", "proj-1"]
    names = [p.name for p in page.items]
    while page.next_page_token:
        page = ws.projects.list(limit=2, page_token=page.next_page_token)
        names += [p.name for p in page.items]
    assert names == [f"proj-{i}" for i in range(5)]
    assert [p.name for p in ws.projects.list(q="FRAUD").items] == ["proj-1", "proj-3"]
    assert ws.projects.list(q="100%").items == []
    with pytest.raises(InvalidInput, match="page_token"):
        ws.projects.list(page_token="garbage!")
    with pytest.raises(InvalidInput, match="limit"):
        ws.projects.list(limit=0)


def test_update_changes_only_given_fields(any_workspace: Workspace) -> None:
    ws = any_workspace
    before = _churn(ws)
    after = ws.projects.update("churn", objective="Halve churn", constraints=[])
    assert after.objective == "Halve churn"
    assert after.constraints == []
    assert after.description == before.description
    assert after.kpis == before.kpis
    assert after.updated_at >= before.updated_at
    assert ws.projects.get("churn") == after
    [record] = ws.audit.list(action="project.update").items
    assert record.entity_id == "churn"
    assert record.before == {
        "objective": "Cut monthly churn",
        "constraints": ["no personal data in features"],
    }
    assert record.after == {"objective": "Halve churn", "constraints": []}


def test_resolve_id_and_names(any_workspace: Workspace) -> None:
    ws = any_workspace
    project = ws.projects.create("p")
    assert ws.projects.resolve_id("p") == project.id
    assert ws.projects.names([project.id, "unknown"]) == {project.id: "p"}
    assert ws.projects.names([]) == {}


def test_delete_refused_while_linked(any_workspace: Workspace) -> None:
    ws = any_workspace
    project = ws.projects.create("p")
    now = datetime.now(UTC)
    with ws.store.write("test") as tx:
        tx.session.add(
            RegisteredModelRow(
                id=str(ULID()),
                name="m",
                description="",
                project_id=project.id,
                archived=False,
                last_version=0,
                created_at=now,
                updated_at=now,
                created_by="test",
            )
        )
    with pytest.raises(Conflict, match=r"1 model\(s\) and 0 experiment\(s\)"):
        ws.projects.delete("p")
    ws.projects.create("q")
    ws.tracking.create_experiment("e", project="q")
    with pytest.raises(Conflict, match=r"0 model\(s\) and 1 experiment\(s\)"):
        ws.projects.delete("q")
    assert ws.projects.get("q").name == "q"


def test_delete_and_audit_chain(any_workspace: Workspace) -> None:
    ws = any_workspace
    _churn(ws)
    ws.projects.update("churn", description="new")
    ws.projects.update("churn", description="new")  # no change: no audit record
    ws.projects.delete("churn")
    with pytest.raises(NotFound):
        ws.projects.get("churn")
    actions = [r.action for r in ws.audit.list(entity_type="project").items]
    assert actions == ["project.delete", "project.update", "project.create"]
    created = ws.audit.list(action="project.create").items[0]
    assert created.after is not None and created.after["kpis"][0]["direction"] == "maximize"
    assert ws.audit.verify().ok
