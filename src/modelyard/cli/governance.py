"""``modelyard users``, ``tokens`` and ``audit``: who may do what, and what was done."""

from __future__ import annotations

import os
from typing import Any

import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.output import console, ok, record, table
from modelyard.errors import InvalidInput

users = typer.Typer(
    help="Users and their workspace roles (viewer, editor, approver, deployer, admin).",
    no_args_is_help=True,
)
tokens = typer.Typer(help="API tokens (stored hashed; shown once).", no_args_is_help=True)
audit = typer.Typer(help="The hash-chained audit log of every change.", no_args_is_help=True)


@users.command("list")
def list_users(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List users."""
    table(
        client(ctx).identities.list_users(),
        ("name", "role", "disabled", "created_at"),
        as_json=as_json,
        title="users",
    )


@users.command("create")
def create_user(
    ctx: typer.Context,
    name: str,
    role: str = typer.Option(
        "viewer", help="viewer, editor, approver, deployer or admin (docs/governance.md)"
    ),
    as_json: bool = JSON,
) -> None:
    """Create a user."""
    record(client(ctx).identities.create_user(name, role), as_json=as_json)


@users.command("set-role")
def set_role(ctx: typer.Context, name: str, role: str, as_json: bool = JSON) -> None:
    """Change a user's role."""
    record(client(ctx).identities.set_role(name, role), as_json=as_json)


@users.command("disable")
def disable(ctx: typer.Context, name: str) -> None:
    """Disable a user; their tokens stop working."""
    client(ctx).identities.disable_user(name)
    ok(f"disabled {name}")


@tokens.command("create")
def create_token(
    ctx: typer.Context,
    user: str = typer.Option(..., help="whose token"),
    name: str = typer.Option("", help="a label, e.g. ci or laptop"),
    expires_in_days: int = typer.Option(None, help="expire after this many days"),
    endpoint: list[str] = typer.Option(
        [],
        "--endpoint",
        help="limit the token to predicting on this endpoint, and nothing else; repeatable",
    ),
    as_json: bool = JSON,
) -> None:
    """Issue an API token; its secret is printed this once."""
    issued = client(ctx).identities.create_token(
        user, name=name, expires_in_days=expires_in_days, endpoints=endpoint or None
    )
    if as_json:
        record(issued, as_json=True)
        return
    console.print(issued.secret, highlight=False, soft_wrap=True)
    console.print(
        f"token {issued.id} for {user}: store it now, it is not shown again; "
        "use it as MODELYARD_TOKEN",
        style="dim",
        highlight=False,
    )


@tokens.command("list")
def list_tokens(
    ctx: typer.Context,
    user: str = typer.Option(None, help="only this user's"),
    as_json: bool = JSON,
) -> None:
    """List tokens (never their secrets)."""
    table(
        client(ctx).identities.list_tokens(user),
        ("id", "user", "name", "endpoints", "created_at", "expires_at", "revoked"),
        as_json=as_json,
    )


@tokens.command("revoke")
def revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke a token at once."""
    client(ctx).identities.revoke_token(token_id)
    ok(f"revoked {token_id}")


@audit.command("list")
def list_audit(
    ctx: typer.Context,
    entity_type: str = typer.Option(None, help="model, model_version, model_alias, run, user..."),
    entity: str = typer.Option(None, help="e.g. fraud/3 or fraud@champion"),
    actor: str = typer.Option(None, help="who made the change"),
    action: str = typer.Option(None, help="e.g. alias.set"),
    limit: int = typer.Option(50, help="at most this many, newest first"),
    as_json: bool = JSON,
) -> None:
    """Show audit records, newest first."""
    page = client(ctx).audit.list(
        entity_type=entity_type, entity_id=entity, actor=actor, action=action, limit=limit
    )
    table(
        page.items,
        ("seq", "at", "actor", "action", "entity_id", "before", "after"),
        as_json=as_json,
        title="audit log",
    )


@audit.command("verify")
def verify(
    ctx: typer.Context,
    checkpoint: str = typer.Option(
        None,
        "--checkpoint",
        help="also check a signed checkpoint (a file or fsspec URL from `audit checkpoint`): "
        "the chain must still hold its record",
    ),
    as_json: bool = JSON,
) -> None:
    """Check the hash chain; exits 1 and names the first bad record if it was tampered with."""
    c = client(ctx)
    signed = None
    if checkpoint is not None:
        from modelyard.governance.audit import read_checkpoint

        signed = read_checkpoint(checkpoint, _storage_options(c.settings, checkpoint))
    result = c.audit.verify(signed) if signed is not None else c.audit.verify()
    if as_json:
        record(result if hasattr(result, "model_dump") else result.__dict__, as_json=True)
    elif result.ok:
        ok(f"audit chain intact: {result.records} records, head {result.head[:16]}")
    elif result.broken_at is None:
        console.print(f"[red]checkpoint refused[/red]: {result.reason}", highlight=False)
    else:
        console.print(
            f"[red]audit chain broken[/red] at record {result.broken_at}: {result.reason}",
            highlight=False,
        )
    if result.ok and getattr(result, "checkpoint", ""):
        ok(result.checkpoint)
    if not result.ok:
        raise typer.Exit(1)


@audit.command("checkpoint")
def checkpoint(
    ctx: typer.Context,
    output: str = typer.Option(None, "--output", "-o", help="write it to this file"),
    to: str = typer.Option(
        None, "--to", help="write it to an fsspec URL, e.g. s3://bucket/audit/2026-12-07.json"
    ),
) -> None:
    """Sign the chain's end (its newest record) with the signing key; keep it elsewhere
    (another machine, an object store) and check it later with `audit verify --checkpoint`."""
    if output and to:
        raise InvalidInput("give -o FILE or --to URL, not both")
    c = client(ctx)
    signed = c.audit.checkpoint()
    target = output or to
    if target is None:
        from modelyard.cli.output import emit_json

        emit_json(signed)
        return
    from modelyard.governance.audit import write_checkpoint

    write_checkpoint(signed, target, _storage_options(c.settings, target))
    ok(f"checkpoint of record {signed.seq} signed with key {signed.key_id}, written to {target}")


def _storage_options(settings: Any, url: str) -> dict[str, Any]:
    if url.startswith("s3://") and settings.s3_endpoint_url:
        return {"endpoint_url": settings.s3_endpoint_url}
    return {}


approvals = typer.Typer(
    help="Approvals: sign-offs a policy requires (e.g. promotion to champion).",
    no_args_is_help=True,
)


@approvals.command("list")
def list_approvals(
    ctx: typer.Context,
    status: str = typer.Option(None, "--status", help="pending, approved or rejected"),
    as_json: bool = JSON,
) -> None:
    """Approval requests, newest first."""
    found = _approvals(ctx).list(status=status)
    table(
        found,
        ["id", "subject", "status", "requested_by", "decided_by", "note"],
        as_json=as_json,
        title="approvals",
    )


@approvals.command("request")
def request(
    ctx: typer.Context,
    subject: str = typer.Argument(..., help="what to approve, e.g. models:/fraud/4@champion"),
    as_json: bool = JSON,
) -> None:
    """Ask for an approval (the pending one, if there is one already)."""
    found = _approvals(ctx).request(subject)
    if as_json:
        record(found, as_json=True)
        return
    ok(
        f"{found.subject}: approval {found.id} {found.status}, needs {found.required} "
        f"approver(s); an approver runs `modelyard approvals approve {found.id}`"
    )


@approvals.command("approve")
def approve(ctx: typer.Context, approval_id: str, note: str = typer.Option("", "--note")) -> None:
    """Approve a pending request (as yourself; not your own request)."""
    found = _approvals(ctx).approve(approval_id, note=note)
    if found.status == "approved":
        ok(f"{found.subject}: approved by {', '.join(found.approved_by) or found.decided_by}")
    else:
        ok(
            f"{found.subject}: {len(found.approved_by)} of {found.required} approvers so far "
            f"({', '.join(found.approved_by)})"
        )


@approvals.command("reject")
def reject(ctx: typer.Context, approval_id: str, note: str = typer.Option("", "--note")) -> None:
    """Reject a pending request."""
    found = _approvals(ctx).reject(approval_id, note=note)
    ok(f"{found.subject}: rejected by {found.decided_by}")


def _approvals(ctx: typer.Context) -> Any:
    """Over HTTP: as the token's user. In-process: as $USER (so that two people on one
    machine can approve each other's requests)."""
    c = client(ctx)
    if c.workspace is None:
        return c.approvals
    return c.workspace.as_actor(os.environ.get("USER") or c.workspace.actor).approvals
