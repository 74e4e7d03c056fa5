"""The ``modelyard`` command."""

from __future__ import annotations

import sys

import typer

from modelyard import __version__
from modelyard.cli import (
    governance,
    models,
    monitoring,
    pipelines,
    predict,
    projects,
    quickstart,
    server,
    serving,
    tracking,
)
from modelyard.cli.context import state
from modelyard.cli.output import err_console
from modelyard.errors import ModelyardError

app = typer.Typer(
    name="modelyard",
    help="Take a trained model to a monitored, governed production endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelyard {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    uri: str = typer.Option(
        None,
        "--uri",
        envvar="MODELYARD_URI",
        help="server URL (http://...), workspace path or database URL; default ./.modelyard",
    ),
    token: str = typer.Option(None, "--token", envvar="MODELYARD_TOKEN", help="API token"),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version"
    ),
) -> None:
    s = state(ctx)
    s.uri, s.token = uri, token


app.add_typer(models.app, name="models")
app.add_typer(tracking.experiments, name="experiments")
app.add_typer(tracking.runs, name="runs")
app.add_typer(tracking.datasets, name="datasets")
app.add_typer(projects.app, name="projects")
app.add_typer(serving.endpoints, name="endpoints")
app.add_typer(monitoring.app, name="monitor")
app.add_typer(pipelines.app, name="pipelines")
app.add_typer(governance.users, name="users")
app.add_typer(governance.tokens, name="tokens")
app.add_typer(governance.audit, name="audit")
app.add_typer(governance.approvals, name="approvals")
app.command("server")(server.server)
app.command("serve")(serving.serve)
app.command("predict")(predict.predict)
app.command("quickstart")(quickstart.quickstart)


def main() -> None:
    """Run the CLI; a modelyard error prints one line and exits with its code.

    Usage errors (unknown option, missing argument) are reported by click itself, exit 2.
    """
    try:
        app()
    except ModelyardError as exc:
        err_console.print(f"[red]error:[/red] {exc.detail}", highlight=False)
        sys.exit(exc.exit_code)
