"""The state every command shares: where to work (``--uri``) and the client, made once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # imported when a command first needs it: `modelyard serve` never does
    from modelyard.client import Client

JSON = typer.Option(False, "--json", help="print JSON instead of a table")


@dataclass
class CliState:
    uri: str | None = None
    token: str | None = None
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            from modelyard.client import Client
            from modelyard.config import Settings

            self._client = Client(self.uri, token=self.token, settings=Settings())
        return self._client


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def client(ctx: typer.Context) -> Client:
    return state(ctx).client
