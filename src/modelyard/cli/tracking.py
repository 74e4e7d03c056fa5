"""``modelyard experiments``, ``runs`` and ``datasets``: tracking from the terminal."""

from __future__ import annotations

from pathlib import Path

import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.models import pairs
from modelyard.cli.output import ok, record, table

experiments = typer.Typer(
    help="Experiments group runs of one modelling effort.", no_args_is_help=True
)
runs = typer.Typer(help="Runs: params, metrics, tags, artifacts, status.", no_args_is_help=True)
datasets = typer.Typer(help="Datasets with content hash, schema and profile.", no_args_is_help=True)

RUN_COLUMNS = ("id", "name", "status", "start_time", "params", "metrics")


@experiments.command("list")
def list_experiments(
    ctx: typer.Context,
    query: str = typer.Option(None, "--query", "-q", help="text in the name"),
    project: str = typer.Option(None, help="only this project's"),
    as_json: bool = JSON,
) -> None:
    """List experiments."""
    page = client(ctx).tracking.list_experiments(q=query, project=project)
    table(page.items, ("id", "name", "project", "created_at"), as_json=as_json, title="experiments")


@experiments.command("create")
def create_experiment(
    ctx: typer.Context,
    name: str,
    description: str = typer.Option("", help="what is being tried"),
    project: str = typer.Option(None, help="the project it serves"),
    as_json: bool = JSON,
) -> None:
    """Create an experiment."""
    exp = client(ctx).tracking.create_experiment(name, description=description, project=project)
    record(exp, as_json=as_json)


@runs.command("list")
def list_runs(
    ctx: typer.Context,
    experiment: str,
    filter: str = typer.Option(
        "", "--filter", help="e.g. \"metrics.rmse < 0.5 and params.alpha = '0.1'\""
    ),
    order_by: list[str] = typer.Option([], help="e.g. 'metrics.rmse asc'; repeatable"),
    limit: int = typer.Option(100, help="at most this many"),
    as_json: bool = JSON,
) -> None:
    """Search an experiment's runs."""
    page = client(ctx).tracking.search_runs(
        experiment, filter_string=filter, order_by=order_by or None, limit=limit
    )
    table(page.items, RUN_COLUMNS, as_json=as_json, title=f"runs of {experiment}")


@runs.command("show")
def show_run(ctx: typer.Context, run_id: str, as_json: bool = JSON) -> None:
    """Show a run with its params, latest metrics, tags, inputs and artifacts."""
    record(client(ctx).tracking.get_run(run_id), as_json=as_json)


@runs.command("start")
def start_run(
    ctx: typer.Context,
    experiment: str,
    name: str = typer.Option("", help="a label for the run"),
    param: list[str] = typer.Option([], help="key=value; repeatable"),
    tag: list[str] = typer.Option([], help="key=value; repeatable"),
    as_json: bool = JSON,
) -> None:
    """Start a run (prints its id)."""
    run = client(ctx).tracking.start_run(
        experiment, name=name, params=pairs(param), tags=pairs(tag)
    )
    if as_json:
        record(run, as_json=True)
    else:
        ok(run.id)


@runs.command("log")
def log(
    ctx: typer.Context,
    run_id: str,
    metric: list[str] = typer.Option([], help="key=value; repeatable"),
    param: list[str] = typer.Option([], help="key=value; repeatable"),
    tag: list[str] = typer.Option([], help="key=value; repeatable"),
    step: int = typer.Option(0, help="step of the metrics"),
) -> None:
    """Log metrics, params or tags to a run."""
    from modelyard.errors import InvalidInput

    c = client(ctx)
    if param:
        c.tracking.log_params(run_id, pairs(param))
    if tag:
        c.tracking.set_tags(run_id, pairs(tag))
    if metric:
        values = {}
        for key, text in pairs(metric).items():
            try:
                values[key] = float(text)
            except ValueError:
                raise InvalidInput(f"metric {key} must be a number, got {text!r}") from None
        c.tracking.log_metrics(run_id, values, step=step)
    ok(f"logged {len(metric)} metric(s), {len(param)} param(s), {len(tag)} tag(s)")


@runs.command("end")
def end_run(
    ctx: typer.Context,
    run_id: str,
    status: str = typer.Option("finished", help="finished, failed or killed"),
) -> None:
    """End a run."""
    run = client(ctx).tracking.end_run(run_id, status)
    ok(f"run {run.id} {run.status}")


@runs.command("compare")
def compare(ctx: typer.Context, run_ids: list[str], as_json: bool = JSON) -> None:
    """Params and metrics of several runs side by side."""
    result = client(ctx).tracking.compare_runs(run_ids)
    if as_json:
        record(result, as_json=True)
        return
    rows = [{"name": f"params.{k}", **v} for k, v in result.params.items()]
    rows += [{"name": f"metrics.{k}", **v} for k, v in result.metrics.items()]
    table(
        rows,
        ("name", *result.run_ids),
        as_json=False,
        title=f"differing params: {', '.join(result.differing_params) or 'none'}",
    )


@runs.command("history")
def history(ctx: typer.Context, run_id: str, key: str, as_json: bool = JSON) -> None:
    """A metric's values over steps."""
    table(
        client(ctx).tracking.get_metric_history(run_id, key),
        ("step", "value", "timestamp"),
        as_json=as_json,
        title=key,
    )


@datasets.command("log")
def log_dataset(
    ctx: typer.Context,
    name: str,
    path: Path = typer.Argument(..., help="a .csv or .parquet file", exists=True, dir_okay=False),
    source: str = typer.Option("", help="where the data came from"),
    run: str = typer.Option(None, help="link to this run as an input"),
    context: str = typer.Option("training", help="training, validation, test..."),
    as_json: bool = JSON,
) -> None:
    """Register a dataset: content hash, schema, row count and per-column profile."""
    ds = client(ctx).tracking.log_dataset(
        name, path, source=source or str(path), run_id=run, context=context
    )
    if as_json:
        record(ds, as_json=True)
    else:
        ok(
            f"dataset {ds.name} v{ds.version}: {ds.num_rows} rows, {len(ds.schema_)} columns, "
            f"{ds.digest[:19]}"
        )


@datasets.command("list")
def list_datasets(
    ctx: typer.Context,
    name: str = typer.Option(None, help="only versions of this dataset"),
    as_json: bool = JSON,
) -> None:
    """List datasets."""
    page = client(ctx).tracking.list_datasets(name=name)
    table(
        page.items,
        ("id", "name", "version", "num_rows", "digest", "created_at"),
        as_json=as_json,
        title="datasets",
    )


@datasets.command("show")
def show_dataset(
    ctx: typer.Context,
    name: str,
    version: int = typer.Option(None, help="default: latest"),
    as_json: bool = JSON,
) -> None:
    """Show a dataset's schema and profile."""
    ds = client(ctx).tracking.get_dataset(name, version)
    if as_json:
        record(ds, as_json=True)
        return
    ok(f"{ds.name} v{ds.version}: {ds.num_rows} rows, digest {ds.digest}")
    rows = []
    for col in ds.schema_:
        p = ds.profile[col.name].model_dump()
        summary = (
            f"mean {p['mean']:.4g}, std {p['std']:.4g}, min {p['min']:.4g}, max {p['max']:.4g}"
            if p["kind"] == "numeric" and p.get("mean") is not None
            else f"{p.get('distinct', '')} distinct"
        )
        rows.append(
            {"column": col.name, "dtype": col.dtype, "missing": p["missing"], "summary": summary}
        )
    table(rows, ("column", "dtype", "missing", "summary"), as_json=False)
