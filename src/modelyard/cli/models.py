"""``modelyard models``: the registry from the terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from modelyard.cli.context import JSON, client
from modelyard.cli.output import ok, record, table
from modelyard.errors import InvalidInput

if TYPE_CHECKING:
    from modelyard.pipelines.variants import VariantReport

app = typer.Typer(
    help="Registered models, versions, aliases, cards and lineage.", no_args_is_help=True
)
alias_app = typer.Typer(
    help="Move, read and delete aliases (champion, challenger...).", no_args_is_help=True
)
app.add_typer(alias_app, name="alias")
variants_app = typer.Typer(
    help="Quantised and distilled variants of a version, measured beside it.",
    no_args_is_help=True,
)
app.add_typer(variants_app, name="variants")

MODEL_COLUMNS = ("name", "latest_version", "aliases", "tags", "project", "updated_at")
VERSION_COLUMNS = ("version", "format", "status", "aliases", "run_id", "created_at", "created_by")


def pairs(items: list[str], sep: str = "=") -> dict[str, str]:
    """``["k=v", ...]`` as a dict; a malformed item is a usage error."""
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key:
            raise InvalidInput(f"{item!r} must look like key{sep}value")
        out[key] = value
    return out


@app.command("list")
def list_models(
    ctx: typer.Context,
    query: str = typer.Option(None, "--query", "-q", help="text in the name or description"),
    tag: list[str] = typer.Option([], help="key=value; repeatable"),
    project: str = typer.Option(None, help="only models of this project"),
    archived: bool = typer.Option(False, "--archived", help="include archived models"),
    limit: int = typer.Option(100, help="at most this many"),
    as_json: bool = JSON,
) -> None:
    """List registered models."""
    page = client(ctx).registry.list_models(
        q=query, tags=pairs(tag), project=project, include_archived=archived, limit=limit
    )
    table(page.items, MODEL_COLUMNS, as_json=as_json, title="models")


@app.command()
def create(
    ctx: typer.Context,
    name: str,
    description: str = typer.Option("", help="what the model predicts"),
    tag: list[str] = typer.Option([], help="key=value; repeatable"),
    project: str = typer.Option(None, help="the project this model serves"),
    as_json: bool = JSON,
) -> None:
    """Register a model name (versions are added with `register`)."""
    model = client(ctx).registry.create_model(
        name, description=description, tags=pairs(tag), project=project
    )
    record(model, as_json=as_json)


@app.command()
def show(ctx: typer.Context, name: str, as_json: bool = JSON) -> None:
    """Show a model (NAME) or a version (models:/NAME/3, models:/NAME@alias)."""
    c = client(ctx)
    if name.startswith("models:/"):
        v = c.registry.resolve(name)
        record(
            v,
            as_json=as_json,
            fields=None
            if as_json
            else (
                "model",
                "version",
                "format",
                "status",
                "aliases",
                "manifest_digest",
                "run_id",
                "datasets",
                "tags",
                "description",
                "source",
                "created_at",
                "created_by",
                "signature",
            ),
        )
    else:
        record(c.registry.get_model(name), as_json=as_json)


@app.command()
def update(
    ctx: typer.Context,
    name: str,
    description: str = typer.Option(None, help="new description"),
    tag: list[str] = typer.Option([], help="key=value to set; repeatable"),
    remove_tag: list[str] = typer.Option([], help="tag key to remove; repeatable"),
    project: str = typer.Option(None, help="link to this project"),
    as_json: bool = JSON,
) -> None:
    """Change a model's description, tags or project."""
    model = client(ctx).registry.update_model(
        name, description=description, tags=pairs(tag), remove_tags=remove_tag, project=project
    )
    record(model, as_json=as_json)


@app.command()
def versions(
    ctx: typer.Context,
    name: str,
    limit: int = typer.Option(100, help="at most this many"),
    as_json: bool = JSON,
) -> None:
    """List a model's versions, newest first."""
    page = client(ctx).registry.list_versions(name, limit=limit)
    table(page.items, VERSION_COLUMNS, as_json=as_json, title=f"{name} versions")


@app.command()
def register(
    ctx: typer.Context,
    name: str,
    path: str = typer.Argument(
        ..., help="a model directory saved by modelyard or by MLflow, or models:/OTHER/N"
    ),
    alias: str = typer.Option(None, help="point this alias at the new version"),
    run: str = typer.Option(None, help="the run that produced the model"),
    dataset: list[str] = typer.Option([], help="DATASET_ID or DATASET_ID:role; repeatable"),
    description: str = typer.Option("", help="what changed in this version"),
    tag: list[str] = typer.Option([], help="key=value; repeatable"),
    as_json: bool = JSON,
) -> None:
    """Upload a saved model and register it as the next version of NAME."""
    links = [
        {"dataset_id": d.split(":", 1)[0], "role": d.split(":", 1)[1] if ":" in d else "training"}
        for d in dataset
    ]
    c = client(ctx)
    if path.startswith("models:/"):
        v = c.register_model(
            path,
            name,
            run_id=run,
            datasets=links,
            description=description,
            tags=pairs(tag),
            alias=alias,
        )
    else:
        src = Path(path)
        total = sum(f.stat().st_size for f in src.rglob("*") if f.is_file()) if src.is_dir() else 0
        with Progress(
            TextColumn("uploading {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
            disable=as_json,
        ) as bar:
            task = bar.add_task(src.name, total=total)
            v = c.register_model(
                src,
                name,
                run_id=run,
                datasets=links,
                description=description,
                tags=pairs(tag),
                alias=alias,
                progress=lambda _f, size: bar.advance(task, size),
            )
    if as_json:
        record(v, as_json=True)
    else:
        ok(
            f"registered [bold]{v.model}[/bold] version {v.version} ({v.format})"
            + (f", alias {alias}" if alias else "")
        )


@app.command()
def export(
    ctx: typer.Context,
    uri: str = typer.Argument(..., help="models:/NAME/VERSION or models:/NAME@alias"),
    path: Path = typer.Argument(..., help="a new (or empty) directory to write"),
    format: str = typer.Option("mlflow", "--format", help="the directory's format: mlflow"),
    as_json: bool = JSON,
) -> None:
    """Write a version as an MLflow model directory (mlflow.pyfunc.load_model loads it)."""
    c = client(ctx)
    v = c.registry.resolve(uri)
    out = c.export_model(v, path, format=format)
    if as_json:
        record({"model": v.model, "version": v.version, "path": str(out)}, as_json=True)
    else:
        ok(f"exported {v.model} v{v.version} ({v.format}) to {out} as an MLflow model")


@app.command()
def archive(
    ctx: typer.Context,
    name: str,
    version: int = typer.Option(None, help="archive only this version"),
    restore: bool = typer.Option(False, "--restore", help="undo an archive"),
) -> None:
    """Archive a model or one version (hidden from listings, kept for the record)."""
    c = client(ctx)
    if version is None:
        c.registry.archive_model(name, archived=not restore)
        ok(f"{'restored' if restore else 'archived'} model {name}")
    else:
        c.registry.archive_version(name, version, archived=not restore)
        ok(f"{'restored' if restore else 'archived'} {name} v{version}")


@app.command()
def delete(
    ctx: typer.Context,
    name: str,
    version: int = typer.Option(None, help="delete only this version"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Delete an archived model, or one version no alias points at."""
    what = f"{name} v{version}" if version else f"model {name} and all its versions"
    if not yes and not typer.confirm(f"delete {what}?"):
        raise typer.Exit(1)
    c = client(ctx)
    if version is None:
        c.registry.delete_model(name)
    else:
        c.registry.delete_version(name, version)
    ok(f"deleted {what}")


@app.command()
def retention(
    ctx: typer.Context,
    name: str,
    keep_last: int = typer.Option(..., help="always keep this many newest versions"),
    min_age_days: float = typer.Option(0, help="only delete versions older than this"),
    apply: bool = typer.Option(False, "--apply", help="delete; without it, only report"),
    as_json: bool = JSON,
) -> None:
    """Delete old versions beyond the newest N (aliased versions are always kept)."""
    result = client(ctx).registry.apply_retention(
        name, keep_last=keep_last, min_age_days=min_age_days, dry_run=not apply
    )
    if as_json:
        record(result, as_json=True)
        return
    verb = "deleted" if apply else "would delete"
    ok(
        f"{verb}: {', '.join(map(str, result.deleted)) or 'nothing'}; kept: "
        f"{', '.join(map(str, result.kept))}"
    )


@app.command()
def card(
    ctx: typer.Context,
    uri: str = typer.Argument(..., help="models:/NAME/VERSION or models:/NAME@alias"),
    set_: list[str] = typer.Option([], "--set", help="section=text; repeatable"),
    markdown: bool = typer.Option(True, "--markdown/--raw", help="render as Markdown"),
    as_json: bool = JSON,
) -> None:
    """Show or edit a version's model card."""
    c = client(ctx)
    v = c.registry.resolve(uri)
    if set_:
        result = c.registry.update_card(v.model, v.version, pairs(set_))
    else:
        result = c.registry.get_card(v.model, v.version)
    if as_json or not markdown:
        record(result, as_json=True)
    else:
        from rich.markdown import Markdown

        from modelyard.cli.output import console

        console.print(Markdown(result.to_markdown()))


@app.command()
def lineage(ctx: typer.Context, uri: str, as_json: bool = JSON) -> None:
    """Where a version came from: run, experiment, datasets, params, code version."""
    c = client(ctx)
    v = c.registry.resolve(uri)
    record(c.registry.lineage(v.model, v.version), as_json=as_json)


@app.command()
def runtime(
    ctx: typer.Context,
    uri: str = typer.Argument(..., help="models:/NAME/VERSION or models:/NAME@alias"),
    check: bool = typer.Option(False, "--check", help="run the ONNX comparison now if missing"),
    as_json: bool = JSON,
) -> None:
    """Show whether a version is served by ONNX Runtime, and how its predictions compared."""
    c = client(ctx)
    v = c.registry.resolve(uri)
    recorded = c.registry.get_runtime(v.model, v.version, "onnx")
    if recorded is None and check:
        if c.workspace is None:
            raise InvalidInput("--check converts the model in this process; run it without --uri")
        from modelyard.serving.runtime import check_onnx

        recorded = check_onnx(c.workspace, v)
    if recorded is None:
        ok(f"{v.model} v{v.version}: not checked yet (an endpoint on it, or --check, runs it)")
        return
    if as_json:
        record(recorded, as_json=True)
        return
    report = recorded.report
    ok(
        f"{v.model} v{v.version}: onnx {recorded.status}; {report.get('rows', '?')} rows compared, "
        f"max abs diff {report.get('max_abs_diff', {})}, input {report.get('input_dtype', '?')}"
    )


@app.command()
def sign(ctx: typer.Context, name: str, version: int, as_json: bool = JSON) -> None:
    """Sign version VERSION of NAME with the signing key (again, after a key rotation)."""
    signed = client(ctx).registry.sign_version(name, version)
    if as_json:
        record(signed, as_json=True)
        return
    ok(f"models:/{name}/{version} signed with key {signed.key_id} ({signed.key_name})")


@app.command()
def verify(ctx: typer.Context, name: str, version: int, as_json: bool = JSON) -> None:
    """Check a version's signature and its stored files; exits 1 unless verified."""
    check = client(ctx).registry.verify_version(name, version)
    if as_json:
        record(check, as_json=True)
    elif check.ok:
        when = check.signed_at.isoformat(timespec="seconds") if check.signed_at else "?"
        ok(
            f"models:/{name}/{version}: ok, signed with key {check.key_id} ({check.key_name}) "
            f"by {check.signed_by} at {when}"
        )
    else:
        from modelyard.cli.output import console

        console.print(f"[red]{check.status}[/red]: {check.reason}", highlight=False)
    if not check.ok:
        raise typer.Exit(1)


@app.command("alias-history")
def alias_history(
    ctx: typer.Context,
    name: str,
    alias: str,
    as_of: str = typer.Option(
        None, "--as-of", help="where the alias pointed then: ISO 8601 with a zone (…T10:00Z)"
    ),
    limit: int = typer.Option(100, help="at most this many moves"),
    as_json: bool = JSON,
) -> None:
    """The moves of ALIAS of NAME, newest first: when, from and to which version, who, why."""
    history = client(ctx).registry.alias_history(name, alias, limit, as_of=as_of)
    if as_json:
        record(history, as_json=True)
        return
    uri = f"models:/{name}@{alias}"
    if history.as_of is not None:
        when = _utc(history.as_of)
        last = history.moves[0] if history.moves else None
        if last is None:
            ok(f"at {when}, {uri} did not exist yet")
        elif last.after is None:
            ok(f"at {when}, {uri} pointed nowhere: {last.actor} deleted it at {_utc(last.at)}")
        else:
            why = f": {last.reason}" if last.reason else ""
            ok(
                f"at {when}, {uri} pointed to version {last.after} "
                f"(moved there at {_utc(last.at)} by {last.actor}{why})"
            )
        if not history.moves:
            return
    rows = [
        {
            "at": _utc(m.at),
            "change": f"{'new' if m.before is None else m.before} -> "
            f"{'deleted' if m.after is None else m.after}",
            "by": m.actor,
            "reason": m.reason or "",
            "approvals": ", ".join(m.approvals),
        }
        for m in history.moves
    ]
    until = f" up to {_utc(history.as_of)}" if history.as_of is not None else ""
    table(rows, ("at", "change", "by", "reason", "approvals"), as_json=False, title=uri + until)
    if history.more:
        ok(f"older moves are not shown; raise --limit (now {limit})")


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@alias_app.command("set")
def alias_set(
    ctx: typer.Context,
    name: str,
    alias: str,
    version: int,
    reason: str = typer.Option("", "--reason", help="why; kept in the audit log"),
    as_json: bool = JSON,
) -> None:
    """Point ALIAS of NAME at VERSION (atomic; serving follows).

    A protected alias moves only as its policies allow (`modelyard policies list`)."""
    result = client(ctx).registry.set_alias(name, alias, version, reason=reason)
    if as_json:
        record(result, as_json=True)
    else:
        ok(f"models:/{name}@{alias} -> version {version}")


@alias_app.command("get")
def alias_get(ctx: typer.Context, name: str, alias: str, as_json: bool = JSON) -> None:
    """Show the version ALIAS points at."""
    record(client(ctx).registry.get_alias(name, alias), as_json=as_json)


@alias_app.command("delete")
def alias_delete(
    ctx: typer.Context,
    name: str,
    alias: str,
    reason: str = typer.Option("", "--reason", help="why; kept in the audit log"),
) -> None:
    """Remove ALIAS from NAME (a protected alias: admins of the model only)."""
    client(ctx).registry.delete_alias(name, alias, reason=reason)
    ok(f"deleted alias {alias} of {name}")


@variants_app.command("create")
def variants_create(
    ctx: typer.Context,
    uri: str = typer.Argument(..., help="the parent: models:/NAME/VERSION or models:/NAME@alias"),
    quantize: str = typer.Option(
        None, "--quantize", help="int8: ONNX Runtime's dynamic quantisation (neural networks)"
    ),
    distill: str = typer.Option(
        None,
        "--distill",
        help="tree, logistic or linear: a small model trained on the parent's answers on its "
        "training dataset",
    ),
    name: str = typer.Option(
        None, "--name", help="register under this model (default: the parent's)"
    ),
    target: str = typer.Option(
        None, "--target", help="the holdout's target column, if not the only non-input column"
    ),
    max_depth: int = typer.Option(None, "--max-depth", help="the tree's depth (default 6)"),
    calls: int = typer.Option(200, "--calls", help="predict calls per latency measurement"),
    as_json: bool = JSON,
) -> None:
    """Make a variant of URI and register it as a new version, linked to its parent.

    Exactly one of --quantize or --distill. The variant and the parent are measured side by
    side: quality on the parent's holdout (its test, evaluation or validation dataset; else
    a split of its training dataset, said so) and median latency here for 1 and 64 rows. The
    numbers go to a run in the "variants" experiment. The variant is attached to no endpoint.
    """
    from contextlib import nullcontext

    from rich.progress import MofNCompleteColumn

    from modelyard.cli.output import err_console
    from modelyard.pipelines.variants import check_request

    check_request(quantize, distill, max_depth, calls)
    c = client(ctx)
    options = {
        "quantize": quantize,
        "distill": distill,
        "name": name,
        "target": target,
        "max_depth": max_depth,
        "latency_calls": calls,
    }
    live = not as_json and err_console.is_terminal
    if c.workspace is None:  # the server does the work: nothing to show but that it is busy
        busy = err_console.status("the server is making the variant") if live else nullcontext()
        with busy:
            report = c.registry.create_variant(uri, **options)
    else:
        with Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            console=err_console,
            transient=True,
            disable=not live,
        ) as bar:
            task = bar.add_task("starting", total=1)

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=max(total, 1))

            report = c.registry.create_variant(uri, progress=progress, **options)
    if as_json:
        record(report, as_json=True)
        return
    _show_variant(report)


def _show_variant(report: VariantReport) -> None:
    """The parent and the variant side by side: quality, latency, size; then the notes."""
    from rich.table import Table

    from modelyard.cli.output import console

    v = report.version
    ok(
        f"registered [bold]{v.uri}[/bold] ({v.format}): {report.description}\n"
        f"measured on {report.holdout}, {report.holdout_rows:,} rows; run {report.run_id} "
        f"(experiment variants)"
    )
    names = list(dict.fromkeys(k for m in report.measurements for k in m.metrics))
    t = Table()
    for column in ("", "version", "runtime", *names, "p50 1 row", "p50 64 rows", "size"):
        t.add_column(column, justify="left" if column in ("", "version", "runtime") else "right")
    for m in report.measurements:
        t.add_row(
            m.role,
            m.uri,
            m.runtime,
            *(_number(m.metrics.get(k)) for k in names),
            f"{m.latency_ms_p50_1row:.3f} ms",
            f"{m.latency_ms_p50_64rows:.3f} ms",
            "" if m.size_bytes is None else f"{m.size_bytes:,} B",
        )
    console.print(t)
    for note in report.notes:
        ok(f"note: {note}")
    ok("attached to no endpoint: attach it where its quality and latency fit")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
