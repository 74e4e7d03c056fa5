"""``modelyard limits``: rate limits and daily quotas on predictions."""

from __future__ import annotations

import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.output import ok, record, table

limits = typer.Typer(
    help="Rate limits and daily row quotas on predictions, per token and endpoint.",
    no_args_is_help=True,
)


@limits.command("set")
def set_limit(
    ctx: typer.Context,
    endpoint: str = typer.Option(None, help="the endpoint limited (with --token: on it only)"),
    token: str = typer.Option(None, help="the id of the API token limited (`tokens list`)"),
    rate: str = typer.Option(None, help="requests per second: 50, 50/s, 300/m or 1000/h"),
    burst: int = typer.Option(None, help="requests at once before the rate applies"),
    daily: int = typer.Option(None, help="rows predicted per UTC day, across all workers"),
    as_json: bool = JSON,
) -> None:
    """Set the limit of an endpoint, a token, or a token on one endpoint.

    A scope has one limit: setting it again replaces it whole (give every part it keeps).
    """
    found = client(ctx).limits.set(
        endpoint=endpoint, token=token, rate=rate, burst=burst, daily=daily
    )
    record(found, as_json=as_json, fields=("id", "scope", "rate", "burst", "daily"))


@limits.command("list")
def list_limits(
    ctx: typer.Context,
    endpoint: str = typer.Option(None, help="only this endpoint's"),
    token: str = typer.Option(None, help="only this token's"),
    as_json: bool = JSON,
) -> None:
    """List limits, with the rows and requests their scope used today (UTC)."""
    table(
        client(ctx).limits.list(endpoint=endpoint, token=token),
        ("id", "scope", "rate", "burst", "daily", "rows_today", "requests_today"),
        as_json=as_json,
        title="prediction limits (rate: requests/s per gateway worker)",
    )


@limits.command("delete")
def delete_limit(ctx: typer.Context, limit_id: str) -> None:
    """Delete a limit; what its scope used today stays counted."""
    client(ctx).limits.delete(limit_id)
    ok(f"deleted limit {limit_id}")
