"""``modelyard keys``: the Ed25519 keys that sign model versions and audit checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.output import ok, record, table
from modelyard.errors import InvalidInput

keys = typer.Typer(
    help="Signing keys: Ed25519 keys that sign model versions and audit checkpoints.",
    no_args_is_help=True,
)

KEY_COLUMNS = ("id", "name", "signs", "created_at", "created_by", "revoked_at")


@keys.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Option("default", "--name", help="a name for the key (unique)"),
    as_json: bool = JSON,
) -> None:
    """Make a key pair: the private key in <home>/keys/NAME.pem (mode 0600, or at
    MODELYARD_SIGNING_KEY), the public key trusted. New versions are signed with it."""
    key = client(ctx).keys.create_key(name)
    if as_json:
        record(key, as_json=True)
        return
    ok(f"key {key.id} ({key.name}) created and trusted; new versions are signed with it")


@keys.command("list")
def list_keys(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List trusted and revoked keys; `signs` marks the one new versions are signed with."""
    table(client(ctx).keys.list_keys(), KEY_COLUMNS, as_json=as_json, title="signing keys")


@keys.command("trust")
def trust(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="a public key in PEM (from `modelyard keys export`)"),
    name: str = typer.Option(..., "--name", help="a name for the key (unique)"),
    as_json: bool = JSON,
) -> None:
    """Trust a public key made elsewhere: versions it signed verify here."""
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {file}: {exc}") from None
    key = client(ctx).keys.trust_key(text, name)
    if as_json:
        record(key, as_json=True)
        return
    ok(f"key {key.id} ({key.name}) trusted")


@keys.command("revoke")
def revoke(ctx: typer.Context, key_id: str) -> None:
    """Stop trusting a key: with MODELYARD_REQUIRE_SIGNED_MODELS, versions it signed are
    refused until re-signed (`modelyard models sign NAME VERSION`)."""
    key = client(ctx).keys.revoke_key(key_id)
    ok(f"key {key.id} ({key.name}) revoked")


@keys.command("export")
def export(ctx: typer.Context, key_id: str) -> None:
    """Print a key's public part (PEM), to trust it elsewhere with `keys trust`."""
    typer.echo(client(ctx).keys.export_key(key_id), nl=False)
