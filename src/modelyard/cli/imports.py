"""``modelyard import``: move what another registry holds into the workspace."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.context import JSON, client, state
from modelyard.cli.output import console, emit_json, err_console, ok
from modelyard.errors import InvalidInput

if TYPE_CHECKING:
    from modelyard.interop.mlflow_import import ImportReport

app = typer.Typer(
    help="Import experiments, runs and registered models from MLflow.", no_args_is_help=True
)


@app.callback()
def _imports() -> None:
    # A group even with one command: `modelyard import mlflow ...`; others may join it.
    pass


OUTCOME_STYLE = {"imported": "green", "existing": "dim", "skipped": "yellow", "failed": "red"}


@app.command("mlflow")
def mlflow(
    ctx: typer.Context,
    source: str = typer.Option(
        ...,
        "--from",
        help="an MLflow tracking server's URL (http://host:5000; credentials as "
        "http://user:password@host) or a file store directory (./mlruns)",
    ),
    as_json: bool = JSON,
) -> None:
    """Import experiments, runs and registered models from MLflow.

    Experiments, runs (params, every metric point, tags, artifact files), registered models
    (description, tags), their versions (files, description, tags, the run they came from)
    and aliases. Running it again imports only what is new. Prints what was imported,
    already there, skipped or failed, with the reasons; exits 1 if anything failed.
    """
    from modelyard.interop.mlflow_import import import_mlflow
    from modelyard.interop.mlflow_source import open_source

    uri = state(ctx).uri
    if uri and uri.startswith(("http://", "https://")):
        raise InvalidInput(
            "import works on a workspace (a path or a database URL), not through a server; "
            "drop the http:// --uri, or run it where the server's workspace is"
        )
    # the source is checked first: an unreachable one leaves no workspace behind
    mlflow_source = open_source(source)
    try:
        ws = client(ctx).workspace
        assert ws is not None
        live = not as_json and err_console.is_terminal
        with Progress(
            TextColumn("{task.description:<40.40}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not live,
        ) as bar:
            task = bar.add_task(f"reading {mlflow_source.location}", total=None)

            def progress(done: int, total: int, what: str) -> None:
                bar.update(task, description=escape(what), completed=done, total=total)

            report = import_mlflow(ws, mlflow_source, progress=progress)
    finally:
        mlflow_source.close()
    if as_json:
        emit_json(report)
    else:
        _show(report)
    if report.failed:
        where = "their items say why" if as_json else "listed above"
        err_console.print(
            f"[red]error:[/red] {report.failed} item(s) failed to import ({where}); what was "
            "imported is kept: fix the cause and run the import again to add the rest",
            highlight=False,
        )
        raise typer.Exit(1)


def _show(report: ImportReport) -> None:
    summary = Table(title=f"imported from {report.source}")
    summary.add_column("kind")
    for column in ("imported", "already there", "skipped", "failed"):
        summary.add_column(column, justify="right")
    for kind, counts in report.counts.items():
        summary.add_row(
            kind,
            str(counts.imported),
            str(counts.existing),
            str(counts.skipped),
            f"[red]{counts.failed}[/red]" if counts.failed else "0",
        )
    console.print(summary)
    problems = report.problems()
    if not problems:
        return
    listed = Table(title="not imported, or imported with a note")
    listed.add_column("kind")
    listed.add_column("item", no_wrap=True)
    listed.add_column("outcome")
    listed.add_column("reason")
    for item in problems:
        style = OUTCOME_STYLE[item.outcome]
        label = "already there" if item.outcome == "existing" else item.outcome
        listed.add_row(
            item.kind, escape(item.item), f"[{style}]{label}[/{style}]", escape(item.reason)
        )
    console.print(listed)
    if not report.failed:
        ok("nothing failed")
