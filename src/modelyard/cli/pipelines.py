"""``modelyard pipelines``: run pipelines and look at their runs."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.context import JSON, client
from modelyard.cli.models import pairs
from modelyard.cli.output import console, emit_json, err_console, ok, record, table
from modelyard.errors import InvalidInput

if TYPE_CHECKING:
    from modelyard.pipelines import Pipeline, PipelineRun
    from modelyard.workspace import Workspace

app = typer.Typer(
    help="Pipelines: DAGs of typed steps, cached, run locally or on Ray.", no_args_is_help=True
)

STATUS_STYLE = {
    "succeeded": "green",
    "cached": "cyan",
    "failed": "red",
    "skipped": "yellow",
    "running": "blue",
    "retrying": "magenta",
    "pending": "dim",
}


def _workspace(ctx: typer.Context) -> Workspace:
    ws = client(ctx).workspace
    if ws is None:
        raise InvalidInput(
            "pipelines run on a workspace (a path or a database URL), not through a server; "
            "drop the http:// --uri"
        )
    # `modelyard pipelines run mymodule:pipe` should find mymodule where the user stands,
    # as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return ws


def _params(p: Pipeline, items: list[str]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for key, text in pairs(items).items():
        if isinstance(p.params.get(key), str):
            values[key] = text  # a string parameter stays a string ("007", "true")
            continue
        try:
            values[key] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            values[key] = text
    return values


def _json_object(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidInput(f"{option} must be a JSON object, e.g. '{{\"C\": 0.5}}'") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{option} must be a JSON object")
    return value


@app.command("run")
def run(
    ctx: typer.Context,
    pipeline: str = typer.Argument(
        ..., help="a registered name, package.module:attr, or a .yaml file"
    ),
    param: list[str] = typer.Option([], "--param", "-p", help="name=value; repeatable"),
    executor: str = typer.Option("local", "--executor", "-e", help="local, inprocess or ray"),
    force: bool = typer.Option(False, "--force", help="run every step, even if cached"),
    params_json: str = typer.Option(None, "--params-json", help="params as one JSON object"),
    trigger_json: str = typer.Option(None, "--trigger-json", hidden=True),
    run_id: str = typer.Option(None, "--run-id", hidden=True),  # set by PipelineService.start
    as_json: bool = JSON,
) -> None:
    """Run a pipeline and show its steps; exits non-zero if the run failed."""
    ws = _workspace(ctx)
    p = ws.pipelines.load(pipeline)
    params = {**_json_object(params_json, "--params-json"), **_params(p, param)}
    trigger = _json_object(trigger_json, "--trigger-json") or {"kind": "manual"}
    if trigger.get("by") and trigger.get("role"):  # started over the API: act as its caller
        from modelyard.governance.entities import Identity

        starter = Identity(
            name=trigger["by"], role=trigger["role"], groups=trigger.get("groups") or []
        )
        ws = ws.as_identity(starter)
    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    # Live progress only on a terminal: in a log it would be noise around the result.
    live = not as_json and err_console.is_terminal
    with Progress(*columns, console=err_console, disable=not live) as bar:
        tasks = {
            name: bar.add_task(name, total=1, status="[dim]pending[/dim]", start=False)
            for name in p.order()
        }

        def progress(step: str, status: str, attempt: int) -> None:
            style = STATUS_STYLE.get(status, "white")
            label = f"[{style}]{status}[/{style}]" + (f" (try {attempt})" if attempt > 1 else "")
            task = tasks[step]
            if status == "running":
                bar.start_task(task)
            done = status in ("succeeded", "cached", "failed", "skipped")
            bar.update(task, status=label, completed=1 if done else 0)
            if done:
                bar.stop_task(task)

        result = ws.pipelines.run(
            p,
            params,
            executor=executor,
            force=force,
            trigger=trigger,
            progress=progress,
            run_id=run_id,
        )
    if as_json:
        emit_json(result)
    else:
        _show(result, logs=False)
    if result.status == "failed":
        err_console.print(
            f"[red]error:[/red] pipeline {result.pipeline} run {result.id} failed: {result.error}",
            highlight=False,
        )
        raise typer.Exit(1)


@app.command("show")
def show(
    ctx: typer.Context,
    run_id: str,
    logs: bool = typer.Option(False, "--logs", help="print each step's log"),
    as_json: bool = JSON,
) -> None:
    """Show a run: its DAG with status and timings, and stage totals."""
    result = _workspace(ctx).pipelines.get_run(run_id)
    if as_json:
        emit_json(result)
    else:
        _show(result, logs=logs)


@app.command("runs")
def runs(
    ctx: typer.Context,
    pipeline: str = typer.Option(None, "--pipeline", help="only this pipeline's runs"),
    status: str = typer.Option(None, "--status", help="running, succeeded or failed"),
    limit: int = typer.Option(50, help="at most this many"),
    as_json: bool = JSON,
) -> None:
    """List pipeline runs, newest first."""
    page = _workspace(ctx).pipelines.list_runs(pipeline, status, limit=limit)
    rows = [
        {
            "id": r.id,
            "pipeline": r.pipeline,
            "status": r.status,
            "trigger": r.trigger.get("kind", ""),
            "started_at": r.started_at,
            "total_s": r.summary.get("total_s"),
            "error": r.error,
        }
        for r in page.items
    ]
    if as_json:
        emit_json(page.items)
        return
    table(
        rows,
        ("id", "pipeline", "status", "trigger", "started_at", "total_s", "error"),
        as_json=False,
        title="pipeline runs",
    )


@app.command("list")
def list_pipelines(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List registered pipelines."""
    page = _workspace(ctx).pipelines.list()
    table(
        page.items,
        ("name", "source", "description", "updated_at"),
        as_json=as_json,
        title="pipelines",
    )


@app.command("register")
def register(
    ctx: typer.Context,
    name: str,
    source: str = typer.Argument(..., help="package.module:attr or a .yaml file"),
    description: str = typer.Option("", help="what the pipeline does"),
    as_json: bool = JSON,
) -> None:
    """Register a pipeline by name, so triggers (and `pipelines run NAME`) can run it."""
    reg = _workspace(ctx).pipelines.register(name, source, description=description)
    if as_json:
        record(reg, as_json=True)
    else:
        ok(f"registered pipeline [bold]{reg.name}[/bold] from {reg.source}")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f} s"


def _show(run: PipelineRun, *, logs: bool) -> None:
    style = STATUS_STYLE.get(run.status, "white")
    console.print(
        f"[bold]{run.pipeline}[/bold] run {run.id}: [{style}]{run.status}[/{style}] "
        f"({run.executor}, {run.trigger.get('kind', 'manual')}, started "
        f"{run.started_at.isoformat(timespec='seconds')})",
        highlight=False,
    )
    if run.error:
        console.print(f"[red]{run.error}[/red]", highlight=False)
    depth: dict[str, int] = {}
    for s in run.steps:  # steps come in DAG order: upstream depths are known
        depth[s.name] = 1 + max((depth.get(u, 0) for u in s.upstream), default=-1)
    t = Table(title="steps")
    for column in ("step", "stage", "status", "tries", "after", "duration", "error"):
        t.add_column(column)
    for s in run.steps:
        st = STATUS_STYLE.get(s.status, "white")
        indent = "  " * depth[s.name] + ("└ " if depth[s.name] else "")
        t.add_row(
            indent + s.name,
            s.stage,
            f"[{st}]{s.status}[/{st}]",
            str(s.attempts),
            ", ".join(s.upstream),
            _seconds(s.duration_s),
            (s.error[:80] + "…") if len(s.error) > 80 else s.error,
        )
    console.print(t)
    timings = run.stage_timings
    stages = " + ".join(
        f"{k[:-2]} {timings[k]:.3f}"
        for k in ("ingest_s", "preprocess_s", "train_s", "evaluate_s", "deploy_s")
        if k in timings
    )
    if timings:
        console.print(
            f"latency: {stages} s; total {timings.get('total_s', 0):.3f} s, of which overhead "
            f"{timings.get('overhead_s', 0):.3f} s",
            highlight=False,
        )
    if logs:
        for s in run.steps:
            if s.log:
                console.rule(s.name)
                console.print(s.log, markup=False, highlight=False, end="")


triggers = typer.Typer(
    help="Triggers: start a pipeline on a schedule, a monitoring alert or new data.",
    no_args_is_help=True,
)
app.add_typer(triggers, name="triggers")


@triggers.command("create")
def create_trigger(
    ctx: typer.Context,
    name: str,
    pipeline: str = typer.Option(..., "--pipeline", help="a registered pipeline's name"),
    cron: str = typer.Option(None, "--cron", help="a schedule, e.g. '0 3 * * *' (UTC)"),
    alert_endpoint: str = typer.Option(
        None, "--on-alert", help="start on alerts of this endpoint (drift, performance, kpi)"
    ),
    alert_kinds: list[str] = typer.Option([], "--alert-kind", help="repeatable; default all"),
    dataset: str = typer.Option(None, "--on-dataset", help="start on each new version of it"),
    param: list[str] = typer.Option([], "--param", "-p", help="name=value passed to the run"),
    cooldown: int = typer.Option(None, "--cooldown", help="seconds between two runs"),
    as_json: bool = JSON,
) -> None:
    """Create a trigger (exactly one of --cron, --on-alert, --on-dataset)."""
    chosen = [x for x in (cron, alert_endpoint, dataset) if x is not None]
    if len(chosen) != 1:
        raise InvalidInput("give exactly one of --cron, --on-alert ENDPOINT, --on-dataset NAME")
    spec: dict[str, Any] = {"name": name, "pipeline": pipeline, "params": pairs(param)}
    if cron is not None:
        spec.update(kind="schedule", cron=cron)
    elif alert_endpoint is not None:
        spec.update(kind="alert", endpoint=alert_endpoint)
        if alert_kinds:
            spec["alert_kinds"] = alert_kinds
    else:
        spec.update(kind="dataset", dataset=dataset)
    if cooldown is not None:
        spec["cooldown_seconds"] = cooldown
    found = _workspace(ctx).pipelines.triggers.create(spec)
    if as_json:
        record(found, as_json=True)
    else:
        ok(f"trigger {found.name}: {found.kind} -> pipeline {found.pipeline}")


@triggers.command("list")
def list_triggers(
    ctx: typer.Context, pipeline: str = typer.Option(None, "--pipeline"), as_json: bool = JSON
) -> None:
    """Triggers and when they last started a run."""
    found = _workspace(ctx).pipelines.triggers.list(pipeline)
    table(
        found,
        ["name", "pipeline", "kind", "cron", "endpoint", "dataset", "enabled", "last_fired_at"],
        as_json=as_json,
        title="triggers",
    )


@triggers.command("events")
def trigger_events(
    ctx: typer.Context,
    trigger: str = typer.Option(None, "--trigger"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = JSON,
) -> None:
    """What triggers saw, newest first: the run each event started, or why not."""
    found = _workspace(ctx).pipelines.triggers.events(trigger, limit=limit)
    table(
        found,
        ["created_at", "trigger", "event_key", "outcome", "run_id", "detail"],
        as_json=as_json,
        title="trigger events",
    )


@triggers.command("delete")
def delete_trigger(ctx: typer.Context, name: str) -> None:
    """Delete a trigger."""
    _workspace(ctx).pipelines.triggers.delete(name)
    ok(f"trigger {name} deleted")


@triggers.command("poll")
def poll_triggers(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Check every trigger once now (the server does this on its own)."""
    found = _workspace(ctx).pipelines.triggers.poll()
    table(found, ["trigger", "event_key", "outcome", "run_id"], as_json=as_json, title="events")


@app.command("promotions")
def promotions(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = JSON,
) -> None:
    """Candidates checked by quality gates, whether they were promoted, and why."""
    from modelyard.pipelines.gates import list_promotions

    found = list_promotions(_workspace(ctx), model, limit=limit)
    table(
        found,
        ["decided_at", "model", "version", "alias", "previous_version", "promoted"],
        as_json=as_json,
        title="promotions",
    )


@app.command("delivery")
def delivery(
    ctx: typer.Context,
    model: str = typer.Argument(None, help="one model (default: all)"),
    as_json: bool = JSON,
) -> None:
    """Delivery KPIs: velocity, lead time, change failure rate, gate failures."""
    from modelyard.pipelines.delivery import delivery_report

    report = delivery_report(_workspace(ctx), model)
    if as_json:
        emit_json(report)
        return
    rows = [
        {
            "model": m.model,
            "promotions": m.promotions,
            "gate failures": m.gate_failures,
            "velocity /day": m.deployment_velocity_per_day,
            "lead time p50 s": m.lead_time.p50_s if m.lead_time else None,
            "change failure rate": m.change_failure_rate,
            "by trigger": m.by_trigger,
        }
        for m in report.models
    ]
    table(rows, list(rows[0]) if rows else ["model"], as_json=False, title="delivery")


@app.command("maturity")
def maturity(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Grade the setup from manual (0) to continuous training (3), from what the platform saw."""
    from modelyard.pipelines.delivery import maturity_report

    report = maturity_report(_workspace(ctx))
    if as_json:
        emit_json(report)
        return
    console.print(f"[bold]maturity level {report.level}[/bold]: {report.name}", highlight=False)
    table(report.criteria, ["level", "title", "met", "evidence"], as_json=False)
    for step_ in report.next_steps:
        console.print(f"next: {step_}", highlight=False)
