"""``modelyard monitor``: status, drift, performance, alerts, feedback, references, the loop."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.output import console, emit_json, ok, record, table
from modelyard.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Monitoring: drift, feedback, performance, KPIs and alerts of served models.",
    no_args_is_help=True,
)
rules = typer.Typer(help="Alert rules: conditions on an endpoint's windows.", no_args_is_help=True)
app.add_typer(rules, name="rules")
predictions = typer.Typer(
    help="The prediction log: remove one subject's rows.", no_args_is_help=True
)


@predictions.callback()
def _predictions() -> None:
    # A group even with one command: `modelyard predictions forget ...`, not `predictions ...`.
    pass


WINDOW = typer.Option(None, "--window", help="window length in seconds (e.g. 300, 3600, 86400)")
START = typer.Option(None, "--start", help="range start, ISO 8601 UTC (e.g. 2026-11-23T10:00)")
END = typer.Option(None, "--end", help="range end, exclusive, ISO 8601 UTC")
VERSION = typer.Option(None, "--version", help="one model version (default: the busiest)")


def _monitoring(ctx: typer.Context) -> Any:
    return client(ctx).monitoring


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


@app.command("status")
def status(
    ctx: typer.Context,
    endpoint: str = typer.Argument(None, help="one endpoint (default: all)"),
    as_json: bool = JSON,
) -> None:
    """The newest closed window of each endpoint and granularity, open alerts, feedback;
    with deadlines, the share met and the effective accuracy, and each variant's part."""
    found = _monitoring(ctx).status(endpoint)
    if as_json:
        emit_json(found)
        return
    deadlines = any(w.deadline for item in found for w in item.windows)
    rows, variants = [], []
    for item in found:
        for w in item.windows:
            row: dict[str, Any] = {
                "endpoint": item.endpoint,
                "window": f"{w.granularity}s",
                "closed until": w.closed_until,
                "requests": w.requests,
                "error rate": _pct(w.error_rate),
                "p99 ms": _num(w.latency_p99_ms),
                "drift": w.drift_status or "",
                "drifted": w.drifted_features,
            }
            if deadlines:
                d = w.deadline
                row["in time"] = _pct(d.deadline_met_rate) if d else ""
                row["eff. accuracy"] = (
                    f"{_pct(d.effective_accuracy)} ({d.basis})" if d is not None else ""
                )
                for v in d.variants if d is not None else []:
                    variants.append(
                        {
                            "endpoint": item.endpoint,
                            "window": f"{w.granularity}s",
                            "variant": v.variant or "-",
                            # version 0: failed before a version was chosen (shed)
                            "version": f"models:/{v.model}/{v.version}" if v.version else "-",
                            "share": _pct(v.share),
                            "in time": _pct(v.met_rate),
                            "failed": v.failed,
                            "quality": _num(v.quality),
                            "from": v.quality_source or "",
                        }
                    )
            row.update(
                {
                    "open alerts": item.open_alerts,
                    "feedback": item.feedback,
                    "held": item.feedback_pending,
                    "expired": item.feedback_expired + item.feedback_rejected,
                }
            )
            rows.append(row)
    table(rows, list(rows[0]) if rows else ["endpoint"], as_json=False, title="monitoring")
    if variants:
        table(
            variants, list(variants[0]), as_json=False, title="variants (requests with a deadline)"
        )


@app.command("drift")
def drift(
    ctx: typer.Context,
    endpoint: str,
    window: int = WINDOW,
    start: datetime = START,
    end: datetime = END,
    version: int = VERSION,
    html: Path = typer.Option(None, "--html", help="also write the HTML report with plots here"),
    as_json: bool = JSON,
) -> None:
    """Per-feature drift of an endpoint's traffic against the version's reference profile."""
    service = _monitoring(ctx)
    kwargs = {"window": window, "start": start, "end": end, "version": version}
    result = service.drift(endpoint, **kwargs)
    if html is not None:
        html.write_text(service.drift_html(endpoint, **kwargs), encoding="utf-8")
    if as_json:
        emit_json(result)
        return
    report = result.report
    verdict = {True: "DRIFT", False: "no drift", None: "insufficient data"}[report.dataset_drift]
    console.print(
        f"[bold]{endpoint}[/bold] models:/{result.model}/{result.version} "
        f"{result.start:%Y-%m-%d %H:%M}..{result.end:%H:%M} UTC vs {result.reference_source}: "
        f"{verdict} ({report.drifted_features}/{report.checked_features} features, "
        f"{report.current_rows} rows)",
        highlight=False,
    )
    rows = [
        {
            "feature": f.feature,
            "kind": f.kind,
            "method": f.method,
            "statistic": _num(f.statistic),
            "p-value": _num(f.p_value),
            "threshold": _num(f.threshold),
            "status": f.status,
            "missing": _pct(f.current_missing_rate),
            "new categories": f.new_categories[:5],
        }
        for f in report.features
    ]
    table(rows, list(rows[0]) if rows else ["feature"], as_json=False)
    if html is not None:
        ok(f"HTML report written to {html}")


@app.command("performance")
def performance(
    ctx: typer.Context,
    endpoint: str,
    window: int = WINDOW,
    start: datetime = START,
    end: datetime = END,
    version: int = VERSION,
    slice_by: str = typer.Option(None, "--slice-by", help="an input feature to compare groups by"),
    as_json: bool = JSON,
) -> None:
    """Model performance from ground-truth feedback, per window and version."""
    report = _monitoring(ctx).performance(
        endpoint, window=window, start=start, end=end, version=version, slice_by=slice_by
    )
    if as_json:
        emit_json(report)
        return
    rows = []
    for w in report.windows:
        row: dict[str, Any] = {
            "window": w.window_start,
            "version": w.version,
            "samples": w.samples,
            "status": w.status,
        }
        row.update({k: _num(v) for k, v in w.metrics.items() if not isinstance(v, dict)})
        rows.append(row)
        for s in getattr(w, "slices", []) or []:
            sliced = {"window": "", "version": "", "samples": s.samples, "status": str(s.value)}
            sliced.update({k: _num(v) for k, v in s.metrics.items() if not isinstance(v, dict)})
            rows.append(sliced)
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["window"]
    table(rows, columns, as_json=False, title=f"{endpoint}: {report.task}")


@app.command("operations")
def operations(
    ctx: typer.Context,
    endpoint: str,
    window: int = WINDOW,
    start: datetime = START,
    end: datetime = END,
    version: int = VERSION,
    as_json: bool = JSON,
) -> None:
    """Traffic, error rate and latency percentiles per window, from the prediction log."""
    found = _monitoring(ctx).operations(
        endpoint, window=window, start=start, end=end, version=version
    )
    rows = [
        {
            "window": w.window_start,
            "requests": w.requests,
            "req/s": _num(w.throughput_rps),
            "errors": w.errors,
            "error rate": _pct(w.error_rate),
            "p50 ms": _num(w.latency_p50_ms),
            "p95 ms": _num(w.latency_p95_ms),
            "p99 ms": _num(w.latency_p99_ms),
        }
        for w in found
    ]
    if as_json:
        emit_json(found)
        return
    table(rows, list(rows[0]) if rows else ["window"], as_json=False, title=endpoint)


@app.command("alerts")
def alerts(
    ctx: typer.Context,
    endpoint: str = typer.Option(None, "--endpoint", help="one endpoint"),
    status: str = typer.Option(
        None, "--status", help="open, escalated, resolved, active or acknowledged"
    ),
    as_json: bool = JSON,
) -> None:
    """Alerts, oldest first, with the value that fired them and who acknowledged them."""
    found = _monitoring(ctx).list_alerts(endpoint, status)
    table(
        found,
        [
            "id",
            "rule",
            "endpoint",
            "status",
            "metric",
            "op",
            "threshold",
            "value",
            "opened_at",
            "acknowledged_by",
        ],
        as_json=as_json,
        title="alerts",
    )


@app.command("resolve")
def resolve(
    ctx: typer.Context,
    alert_id: str,
    note: str = typer.Option("", "--note", help="why it is resolved"),
    as_json: bool = JSON,
) -> None:
    """Resolve an open or escalated alert."""
    alert = _monitoring(ctx).resolve_alert(alert_id, note=note)
    if as_json:
        record(alert, as_json=True)
    else:
        ok(f"alert {alert.id} resolved")


@app.command("ack")
def acknowledge(
    ctx: typer.Context,
    alert_id: str,
    note: str = typer.Option("", "--note", help="what you are doing about it"),
    as_json: bool = JSON,
) -> None:
    """Acknowledge an open or escalated alert: you are on it (it stays open, stops escalating)."""
    alert = _monitoring(ctx).acknowledge_alert(alert_id, note=note)
    if as_json:
        record(alert, as_json=True)
    else:
        ok(f"alert {alert.id} acknowledged by {alert.acknowledged_by}")


@app.command("feedback")
def feedback(
    ctx: typer.Context,
    endpoint: str,
    file: Path = typer.Option(
        None, "--file", help="CSV, Parquet or JSON lines with request_id, label (and row) columns"
    ),
    request_id: str = typer.Option(None, "--request-id", help="one request's id"),
    label: str = typer.Option(None, "--label", help='its true label (JSON: 1, 0.5, "cat")'),
    row: int = typer.Option(0, "--row", help="row of a multi-row request", min=0),
    as_json: bool = JSON,
) -> None:
    """Send ground-truth labels for logged predictions (by request id)."""
    if (file is None) == (request_id is None):
        raise InvalidInput("give either --file or --request-id with --label")
    if file is not None:
        items = _feedback_file(file)
    else:
        if label is None:
            raise InvalidInput("--request-id needs --label")
        items = [{"request_id": request_id, "row": row, "label": _json_scalar(label)}]
    result = _monitoring(ctx).submit_feedback(endpoint, items)
    if as_json:
        record(result, as_json=True)
        return
    ok(f"{result.stored} label(s) stored ({result.created} new, {result.replaced} replaced)")
    if result.pending:
        ok(
            f"{result.pending} label(s) held until their predictions are logged (the monitor "
            f"joins them; unmatched at {result.held_until:%Y-%m-%d %H:%M:%S} UTC they expire): "
            f"`modelyard monitor feedback-pending {endpoint}` lists them"
        )


@app.command("feedback-pending")
def feedback_pending(
    ctx: typer.Context,
    endpoint: str,
    status: str = typer.Option(
        None, "--status", help="pending, expired or rejected (default: all)"
    ),
    as_json: bool = JSON,
) -> None:
    """Labels held for predictions not logged yet, and those that expired or were rejected."""
    found = _monitoring(ctx).list_held_feedback(endpoint, status)
    table(
        found,
        ["request_id", "row", "label", "status", "received_at", "expires_at", "reason"],
        as_json=as_json,
        title=f"held feedback of {endpoint}",
    )


@app.command("reference")
def reference(
    ctx: typer.Context,
    uri: str,
    data: Path = typer.Option(None, "--data", help="Parquet or CSV file of reference rows"),
    dataset: str = typer.Option(None, "--dataset", help="a registered dataset's name"),
    dataset_version: int = typer.Option(None, "--dataset-version", help="its version"),
    as_json: bool = JSON,
) -> None:
    """Profile reference data (default: the version's training dataset) for drift checks."""
    service = _monitoring(ctx)
    payload: Any = data
    if data is not None and client(ctx).workspace is None:
        payload = _frame(data)  # over HTTP the rows travel as JSON columns
    found = service.set_reference(
        uri, data=payload, dataset=dataset, dataset_version=dataset_version
    )
    if as_json:
        record(found, as_json=True)
    else:
        ok(
            f"reference for models:/{found.model}/{found.version}: {found.rows} rows, "
            f"{len(found.features)} features ({found.source})"
        )


@app.command("config")
def config(
    ctx: typer.Context,
    endpoint: str,
    set_: str = typer.Option(
        None,
        "--set",
        help='JSON settings to store, e.g. \'{"granularities": [300, 3600], "task": '
        '"classification"}\'',
    ),
    as_json: bool = JSON,
) -> None:
    """Show (or with --set, replace) an endpoint's monitoring settings."""
    service = _monitoring(ctx)
    if set_ is not None:
        try:
            body = orjson.loads(set_)
        except orjson.JSONDecodeError:
            raise InvalidInput("--set must be a JSON object") from None
        found = service.configure(endpoint, body)
    else:
        found = service.get_config(endpoint)
    record(found, as_json=as_json)


@app.command("kpis")
def kpis(
    ctx: typer.Context,
    project: str,
    endpoint: str = typer.Option(None, "--endpoint"),
    as_json: bool = JSON,
) -> None:
    """A project's KPIs measured per endpoint window, and their breaches."""
    found = _monitoring(ctx).kpis(project, endpoint=endpoint)
    table(
        found,
        ["kpi", "endpoint", "window", "window_start", "value", "target", "direction", "breached"],
        as_json=as_json,
        title=project,
    )


@app.command("run")
def run(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="one pass, then exit"),
    interval: float = typer.Option(30.0, "--interval", help="seconds between passes", min=0.1),
    passes: int = typer.Option(None, "--passes", help="stop after this many passes", min=1),
    as_json: bool = JSON,
) -> None:
    """Run the monitor: close windows, check drift, KPIs and alert rules (a separate worker).

    Safe beside the server's own monitor: a lease lets one act at a time.
    """
    from modelyard.monitoring.loop import MonitorLoop

    c = client(ctx)
    if c.workspace is None:
        raise InvalidInput(
            "`monitor run` works on the database directly; run it with MODELYARD_DATABASE_URL "
            "(and MODELYARD_ARTIFACT_ROOT) set instead of --uri http://..."
        )
    service = c.workspace.monitoring
    if once:
        result = service.run_once()
        service.release_lease()
        record(result, as_json=as_json)
        return
    loop = MonitorLoop(service, interval)
    with contextlib.suppress(KeyboardInterrupt):
        loop.run(max_passes=passes)
    if loop.last is not None:
        record(loop.last, as_json=as_json)


@rules.command("create")
def create_rule(
    ctx: typer.Context,
    name: str,
    endpoint: str = typer.Option(..., "--endpoint"),
    kind: str = typer.Option(
        ...,
        "--kind",
        help="drift, performance, kpi, latency, error_rate, volume, extraction, deadline",
    ),
    metric: str = typer.Option(..., "--metric", help="e.g. drift_share, accuracy, latency_p99_ms"),
    op: str = typer.Option(">", "--op", help="one of > >= < <="),
    threshold: float = typer.Option(..., "--threshold"),
    window: int = typer.Option(3600, "--window", help="seconds: a monitored granularity"),
    min_samples: int = typer.Option(30, "--min-samples"),
    escalate_after: int = typer.Option(None, "--escalate-after", help="seconds open"),
    auto_resolve: bool = typer.Option(False, "--auto-resolve"),
    webhook: list[str] = typer.Option([], "--webhook", help="URL to POST events to; repeatable"),
    as_json: bool = JSON,
) -> None:
    """Create an alert rule."""
    rule = _monitoring(ctx).create_rule(
        {
            "name": name,
            "endpoint": endpoint,
            "kind": kind,
            "metric": metric,
            "op": op,
            "threshold": threshold,
            "window": window,
            "min_samples": min_samples,
            "escalate_after": escalate_after,
            "auto_resolve": auto_resolve,
            "webhooks": webhook,
        }
    )
    if as_json:
        record(rule, as_json=True)
    else:
        ok(f"rule {rule.name}: {rule.metric} {rule.op} {rule.threshold} on {rule.endpoint}")


@rules.command("list")
def list_rules(
    ctx: typer.Context, endpoint: str = typer.Option(None, "--endpoint"), as_json: bool = JSON
) -> None:
    """Alert rules."""
    found = _monitoring(ctx).list_rules(endpoint)
    table(
        found,
        ["name", "endpoint", "kind", "metric", "op", "threshold", "window", "enabled"],
        as_json=as_json,
        title="alert rules",
    )


@rules.command("delete")
def delete_rule(ctx: typer.Context, name: str) -> None:
    """Delete an alert rule (and its alerts)."""
    _monitoring(ctx).delete_rule(name)
    ok(f"rule {name} deleted")


def _frame(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.exists():
        raise InvalidInput(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in {".jsonl", ".ndjson"}:
            return pd.read_json(path, lines=True)
    except Exception as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    raise InvalidInput(f"{path.name}: use a .csv, .parquet or .jsonl file")


def _feedback_file(path: Path) -> list[dict[str, Any]]:
    frame = _frame(path)
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{path.name} lacks column(s) {missing}; it needs request_id and label")
    columns = ["request_id", "label"] + (["row"] if "row" in frame.columns else [])
    records: list[dict[str, Any]] = orjson.loads(frame[columns].to_json(orient="records"))
    for item in records:
        item["request_id"] = str(item["request_id"])
    return records


def _json_scalar(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # a bare word is a string label


@predictions.command("forget")
def forget(
    ctx: typer.Context,
    endpoint: str,
    key: str = typer.Option(
        ..., "--key", help="COLUMN=VALUE: the subject's value of an input column"
    ),
    as_json: bool = JSON,
) -> None:
    """Remove every logged row of ENDPOINT whose input COLUMN is VALUE (audited, not the value).

    A hashed column is searched by the value's HMAC. Profiles of windows closed already are
    not recomputed.
    """
    column, sep, value = key.partition("=")
    if not sep or not column:
        raise InvalidInput(f"--key {key!r} must look like COLUMN=VALUE, e.g. customer_id=C123")
    result = _monitoring(ctx).forget(endpoint, column, value)
    if as_json:
        record(result, as_json=True)
    else:
        ok(
            f"removed {result.rows} rows of {result.endpoint} by {result.column} "
            f"({result.segments} segments rewritten)"
        )
