"""``modelyard projects``: the use cases models serve, with their KPIs."""

from __future__ import annotations

import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.output import ok, record, table
from modelyard.errors import InvalidInput

app = typer.Typer(
    help="Projects: objective, KPIs, constraints, stakeholders.", no_args_is_help=True
)


def parse_kpi(text: str) -> dict[str, object]:
    """``name:target:maximize|minimize[:unit]`` as a KPI."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise InvalidInput(f"KPI {text!r} must look like name:target:maximize|minimize[:unit]")
    try:
        target = float(parts[1])
    except ValueError:
        raise InvalidInput(f"KPI {parts[0]!r} target must be a number, got {parts[1]!r}") from None
    return {
        "name": parts[0],
        "target": target,
        "direction": parts[2],
        "unit": parts[3] if len(parts) == 4 else "",
    }


def parse_stakeholder(text: str) -> dict[str, str]:
    """``name:role[:contact]`` as a stakeholder."""
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise InvalidInput(f"stakeholder {text!r} must look like name:role[:contact]")
    return {"name": parts[0], "role": parts[1], "contact": parts[2] if len(parts) == 3 else ""}


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    objective: str = typer.Option("", help="the business outcome the model serves"),
    description: str = typer.Option("", help="context"),
    kpi: list[str] = typer.Option([], help="name:target:maximize|minimize[:unit]; repeatable"),
    constraint: list[str] = typer.Option([], help="e.g. 'p99 latency < 50 ms'; repeatable"),
    stakeholder: list[str] = typer.Option([], help="name:role[:contact]; repeatable"),
    as_json: bool = JSON,
) -> None:
    """Create a project."""
    project = client(ctx).projects.create(
        name,
        objective=objective,
        description=description,
        kpis=[parse_kpi(k) for k in kpi],
        constraints=constraint,
        stakeholders=[parse_stakeholder(s) for s in stakeholder],
    )
    record(project, as_json=as_json)


@app.command("list")
def list_projects(
    ctx: typer.Context,
    query: str = typer.Option(None, "--query", "-q", help="text to find"),
    as_json: bool = JSON,
) -> None:
    """List projects."""
    table(
        client(ctx).projects.list(q=query).items,
        ("name", "objective", "kpis", "updated_at"),
        as_json=as_json,
        title="projects",
    )


@app.command("show")
def show(ctx: typer.Context, name: str, as_json: bool = JSON) -> None:
    """Show a project."""
    record(client(ctx).projects.get(name), as_json=as_json)


@app.command("update")
def update(
    ctx: typer.Context,
    name: str,
    objective: str = typer.Option(None, help="new objective"),
    description: str = typer.Option(None, help="new description"),
    kpi: list[str] = typer.Option([], help="replace the KPIs; repeatable"),
    as_json: bool = JSON,
) -> None:
    """Change a project's objective, description or KPIs."""
    project = client(ctx).projects.update(
        name,
        objective=objective,
        description=description,
        kpis=[parse_kpi(k) for k in kpi] if kpi else None,
    )
    record(project, as_json=as_json)


@app.command("delete")
def delete(ctx: typer.Context, name: str) -> None:
    """Delete a project no model or experiment links to."""
    client(ctx).projects.delete(name)
    ok(f"deleted project {name}")
