"""The ``modelyard`` command."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
from typer.core import TyperGroup

from modelyard import __version__
from modelyard.cli.context import state
from modelyard.errors import ModelyardError

# Every command, in help order: name -> (module, attribute): a Typer (a group of commands) or
# a function (one command). A module is imported when its command is first needed, so
# `modelyard serve` does not pay for the client, pandas and every other command's imports
# (about 1 s of its cold start).
COMMANDS: dict[str, tuple[str, str]] = {
    "server": ("modelyard.cli.server", "server"),
    "serve": ("modelyard.cli.server", "serve"),
    "predict": ("modelyard.cli.predict", "predict"),
    "quickstart": ("modelyard.cli.quickstart", "quickstart"),
    "models": ("modelyard.cli.models", "app"),
    "experiments": ("modelyard.cli.tracking", "experiments"),
    "runs": ("modelyard.cli.tracking", "runs"),
    "datasets": ("modelyard.cli.tracking", "datasets"),
    "projects": ("modelyard.cli.projects", "app"),
    "endpoints": ("modelyard.cli.serving", "endpoints"),
    "monitor": ("modelyard.cli.monitoring", "app"),
    "pipelines": ("modelyard.cli.pipelines", "app"),
    "users": ("modelyard.cli.governance", "users"),
    "tokens": ("modelyard.cli.governance", "tokens"),
    "audit": ("modelyard.cli.governance", "audit"),
    "approvals": ("modelyard.cli.governance", "approvals"),
}


def load_command(name: str) -> Any:
    """The click command ``name`` of :data:`COMMANDS`, importing its module."""
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
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


class _LazyGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)


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
        from modelyard.cli.output import err_console

        err_console.print(f"[red]error:[/red] {exc.detail}", highlight=False)
        sys.exit(exc.exit_code)
