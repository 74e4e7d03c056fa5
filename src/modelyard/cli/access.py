"""`modelyard roles` and `modelyard policies`: scoped roles and alias policies."""

from __future__ import annotations

import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.output import ok, record, table

roles = typer.Typer(
    help="Roles bound to users or groups on the workspace, a project or a model.",
    no_args_is_help=True,
)
policies = typer.Typer(
    help="Alias policies: which aliases are protected and what moving one requires.",
    no_args_is_help=True,
)

SCOPE = typer.Option("workspace", "--scope", help="workspace, project:NAME or model:NAME")


@roles.command("bind")
def bind(
    ctx: typer.Context,
    subject: str = typer.Argument(..., help="user:NAME or group:NAME (a bare NAME is a user)"),
    role: str = typer.Argument(..., help="viewer, editor, approver, deployer or admin"),
    scope: str = SCOPE,
    as_json: bool = JSON,
) -> None:
    """Grant ROLE to SUBJECT on a scope (admins of that scope)."""
    found = client(ctx).access.bind(subject, role, scope)
    if as_json:
        record(found, as_json=True)
    else:
        ok(f"{found.subject} holds {found.role.value} on {found.scope} ({found.id})")


@roles.command("unbind")
def unbind(ctx: typer.Context, binding_id: str) -> None:
    """Take a role binding away (its id is in `modelyard roles list`)."""
    found = client(ctx).access.unbind(binding_id)
    ok(f"{found.subject} no longer holds {found.role.value} on {found.scope}")


@roles.command("list")
def list_bindings(
    ctx: typer.Context,
    subject: str = typer.Option(None, "--subject", help="user:NAME or group:NAME"),
    scope: str = typer.Option(None, "--scope", help="workspace, project:NAME or model:NAME"),
    as_json: bool = JSON,
) -> None:
    """Role bindings (a user's own workspace role is in `modelyard users list`)."""
    found = client(ctx).access.list(subject=subject, scope=scope)
    table(found, ["id", "subject", "role", "scope", "created_by"], as_json=as_json, title="roles")


@policies.command("set")
def set_policy(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the policy's name, shown in every refusal"),
    scope: str = typer.Option(..., "--scope", help="model:NAME or project:NAME"),
    alias: list[str] = typer.Option(
        None, "--alias", help="a protected alias or pattern (repeat); default: champion"
    ),
    role: str = typer.Option("deployer", "--role", help="the role a mover must hold"),
    approvals: int = typer.Option(
        1, "--approvals", min=0, help="approvers other than the mover (0: none)"
    ),
    gates: bool = typer.Option(
        False, "--gates/--no-gates", help="moves only through a promotion whose gates pass"
    ),
    as_json: bool = JSON,
) -> None:
    """Create or replace an alias policy (admins of its scope)."""
    found = client(ctx).policies.set(
        name, scope, aliases=alias or None, role=role, approvals=approvals, gates=gates
    )
    if as_json:
        record(found, as_json=True)
    else:
        aliases = ", ".join(found.aliases)
        ok(f"policy {found.name}: {aliases} on {found.scope} need {found.describe()}")


@policies.command("list")
def list_policies(
    ctx: typer.Context,
    scope: str = typer.Option(None, "--scope", help="model:NAME or project:NAME"),
    as_json: bool = JSON,
) -> None:
    """Alias policies."""
    found = client(ctx).policies.list(scope=scope)
    table(
        found,
        ["name", "scope", "aliases", "role", "approvals", "gates"],
        as_json=as_json,
        title="alias policies",
    )


@policies.command("show")
def show_policy(ctx: typer.Context, name: str, as_json: bool = JSON) -> None:
    """One alias policy."""
    record(client(ctx).policies.get(name), as_json=as_json)


@policies.command("delete")
def delete_policy(ctx: typer.Context, name: str) -> None:
    """Remove an alias policy (admins of its scope); its aliases are no longer protected."""
    client(ctx).policies.delete(name)
    ok(f"deleted policy {name}")
