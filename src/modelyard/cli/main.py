"""The ``modelyard`` command."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from modelyard.cli.context import state
from modelyard.errors import ModelyardError


class CommandRef(NamedTuple):
    """Where a command lives, and the line the root help shows for it."""

    module: str
    attribute: str  # a Typer (a group of commands) or a function (one command)
    help: str  # the first paragraph of the command's own help (a test keeps them equal)


# Every command, in help order. A module is imported when its command is first needed, so
# `modelyard serve` does not pay for the client, pandas and every other command's imports
# (about 1 s of its cold start), and `modelyard --help` lists the commands from this table
# without importing any of them.
COMMANDS: dict[str, CommandRef] = {
    "server": CommandRef(
        "modelyard.cli.server",
        "server",
        "Start the control-plane API (under /api/v1, OpenAPI at /docs) and the dashboard (/ui).",
    ),
    "serve": CommandRef(
        "modelyard.cli.server",
        "serve",
        "Serve every endpoint (OIP v2, MLflow's /invocations), the API and the dashboard (/ui).",
    ),
    "predict": CommandRef(
        "modelyard.cli.predict",
        "predict",
        "Score every row of a file; interrupted runs resume where they stopped.",
    ),
    "quickstart": CommandRef(
        "modelyard.cli.quickstart",
        "quickstart",
        "Train a small fraud model on generated data, register it and make it champion.",
    ),
    "models": CommandRef(
        "modelyard.cli.models", "app", "Registered models, versions, aliases, cards and lineage."
    ),
    "experiments": CommandRef(
        "modelyard.cli.tracking", "experiments", "Experiments group runs of one modelling effort."
    ),
    "runs": CommandRef(
        "modelyard.cli.tracking", "runs", "Runs: params, metrics, tags, artifacts, status."
    ),
    "datasets": CommandRef(
        "modelyard.cli.tracking", "datasets", "Datasets with content hash, schema and profile."
    ),
    "import": CommandRef(
        "modelyard.cli.imports",
        "app",
        "Import experiments, runs and registered models from MLflow.",
    ),
    "projects": CommandRef(
        "modelyard.cli.projects", "app", "Projects: objective, KPIs, constraints, stakeholders."
    ),
    "endpoints": CommandRef(
        "modelyard.cli.serving", "endpoints", "Endpoints: what the gateway serves, and how."
    ),
    "rollouts": CommandRef(
        "modelyard.cli.rollouts",
        "app",
        "Rollouts: canary steps under analysis; automatic promotion or rollback.",
    ),
    "monitor": CommandRef(
        "modelyard.cli.monitoring",
        "app",
        "Monitoring: drift, feedback, performance, KPIs and alerts of served models.",
    ),
    "predictions": CommandRef(
        "modelyard.cli.monitoring",
        "predictions",
        "The prediction log: remove one subject's rows.",
    ),
    "pipelines": CommandRef(
        "modelyard.cli.pipelines",
        "app",
        "Pipelines: DAGs of typed steps, cached, run locally or on Ray.",
    ),
    "users": CommandRef(
        "modelyard.cli.governance",
        "users",
        "Users and their workspace roles (viewer, editor, approver, deployer, admin).",
    ),
    "roles": CommandRef(
        "modelyard.cli.access",
        "roles",
        "Roles bound to users or groups on the workspace, a project or a model.",
    ),
    "policies": CommandRef(
        "modelyard.cli.access",
        "policies",
        "Alias policies: which aliases are protected and what moving one requires.",
    ),
    "tokens": CommandRef(
        "modelyard.cli.governance", "tokens", "API tokens (stored hashed; shown once)."
    ),
    "audit": CommandRef(
        "modelyard.cli.governance", "audit", "The hash-chained audit log of every change."
    ),
    "keys": CommandRef(
        "modelyard.cli.keys",
        "keys",
        "Signing keys: Ed25519 keys that sign model versions and audit checkpoints.",
    ),
    "approvals": CommandRef(
        "modelyard.cli.governance",
        "approvals",
        "Approvals: sign-offs a policy requires (e.g. promotion to champion).",
    ),
    "limits": CommandRef(
        "modelyard.cli.limits",
        "limits",
        "Rate limits and daily row quotas on predictions, per token and endpoint.",
    ),
}


def load_command(name: str) -> Any:
    """The click command ``name`` of :data:`COMMANDS`, importing its module."""
    ref = COMMANDS[name]
    target = getattr(importlib.import_module(ref.module), ref.attribute)
    if not isinstance(target, typer.Typer):
        single = typer.Typer()
        single.command(name=name)(target)
        target = single
    command = typer.main.get_command(target)
    command.name = name
    return command


class _Commands(MutableMapping[str, Any]):
    """The root group's commands, loaded on first access (click looks them up by name)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._loaded if name not in COMMANDS)

    def __len__(self) -> int:
        return len(set(COMMANDS) | set(self._loaded))

    def listed(self, name: str) -> Any:
        """Command ``name`` as the root help lists it: the loaded command if it is loaded,
        else a stand-in with its name and help line from :data:`COMMANDS`."""
        if name in self._loaded or name not in COMMANDS:
            return self._loaded.get(name)
        return TyperCommand(name, help=COMMANDS[name].help)


class _LazyGroup(TyperGroup):
    """The root group. Running a command (or its ``--help``) imports the command's module;
    listing the commands (the root help, shell completion of a command name) does not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands()
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        commands = self.commands
        if self._listing and isinstance(commands, _Commands):
            return commands.listed(cmd_name)
        return super().get_command(ctx, cmd_name)

    @contextlib.contextmanager
    def _listing_only(self) -> Iterator[None]:
        listing, self._listing = self._listing, True
        try:
            yield
        finally:
            self._listing = listing

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with self._listing_only():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        with self._listing_only():
            return super().shell_complete(ctx, incomplete)


app = typer.Typer(
    name="modelyard",
    cls=_LazyGroup,
    help="Take a trained model to a monitored, governed production endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from modelyard import __version__

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


def main() -> None:
    """Run the CLI; a modelyard error prints one line and exits with its code.

    Usage errors (unknown option, missing argument) are reported by click itself, exit 2.
    """
    try:
        app()
    except ModelyardError as exc:
        _fail(exc.detail, exc.exit_code)
    except Exception as exc:
        from pydantic import ValidationError  # not imported before it is needed (--help)

        if not isinstance(exc, ValidationError) or exc.title != "Settings":
            raise
        # A MODELYARD_* variable with a value its setting refuses (e.g. MODELYARD_PORT=99999).
        problems = "; ".join(
            f"MODELYARD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        _fail(f"invalid setting: {problems}", 2)


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    from modelyard.cli.output import err_console

    # escaped: a message may quote a pattern such as [a-z0-9], not markup
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    sys.exit(code)
