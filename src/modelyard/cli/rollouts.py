"""``modelyard rollouts``: a new version's way into an endpoint's traffic, step by step."""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer
from rich.markup import escape

from modelyard.cli.context import JSON, client
from modelyard.cli.output import console, emit_json, err_console, ok, record, table
from modelyard.errors import InvalidInput

if TYPE_CHECKING:
    from modelyard.client.http_rollouts import Rollouts
    from modelyard.rollouts import Analysis, Rollout, RolloutEvent
    from modelyard.rollouts.service import RolloutPass

app = typer.Typer(
    help="Rollouts: canary steps under analysis; automatic promotion or rollback.\n\n"
    "A rollout moves a share of an endpoint's traffic to a new version step by step, "
    "compares it with the baseline at each step and rolls back when it is worse. "
    "See docs/rollouts.md.",
    no_args_is_help=True,
)

LISTED = ("id", "endpoint", "to", "phase", "step", "weight", "verdict", "started_at")
REF = typer.Argument(..., help="a rollout id, or an endpoint's name (its running or last one)")
COLOURS = {
    "pass": "green",
    "fail": "red",
    "inconclusive": "yellow",
    "succeeded": "green",
    "rolled_back": "red",
    "aborted": "yellow",
    "paused": "yellow",
    "waiting": "yellow",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


# -- the plan ------------------------------------------------------------------------------------


def _seconds(text: str, flag: str) -> float:
    """``30``, ``30s``, ``5m``, ``1h``, ``1d`` as seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidInput(
            f"{flag} {text!r} is not a duration; write seconds (30) or a number with s, m, h "
            "or d (30s, 5m, 1h)"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def _steps(text: str) -> list[float]:
    try:
        return [float(part.strip().removesuffix("%")) for part in text.split(",")]
    except ValueError:
        raise InvalidInput(
            f"--steps {text!r}: write the canary's percentages separated by commas, "
            "e.g. 5,25,50,100"
        ) from None


def _plan_file(path: Path) -> dict[str, Any]:
    import yaml  # YAML holds JSON too

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"--plan {path}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "a syntax error"
        raise InvalidInput(f"--plan {path} is not valid JSON or YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(
            f"--plan {path} must hold a mapping of plan fields, e.g. "
            "{steps: [5, 25, 50, 100], interval_seconds: 30}"
        )
    return data


def _unknown(given: dict[str, Any], known: dict[str, Any], where: str) -> None:
    import difflib

    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean {close[0]}?" if close else f"the fields: {', '.join(known)}"
            raise InvalidInput(f"{where}: unknown field {key!r}; {hint}")


def _checked(plan: dict[str, Any], flags: dict[str, tuple[str, str]], source: Path | None) -> None:
    """Refuse a plan the service would refuse, naming the flag or file entry to fix."""
    from pydantic import ValidationError

    from modelyard.rollouts import RolloutPlan, Thresholds

    where = f"--plan {source}" if source else "the plan"
    _unknown(plan, RolloutPlan.model_fields, where)
    if isinstance(plan.get("thresholds"), dict):
        _unknown(plan["thresholds"], Thresholds.model_fields, f"{where}: thresholds")
    try:
        RolloutPlan.model_validate(plan)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc:  # a rule across fields
            raise InvalidInput(f"{where}: {msg}") from None
        key = ".".join(loc[:2]) if loc[0] == "thresholds" else loc[0]
        if key in flags:
            flag, given = flags[key]
            fields = Thresholds.model_fields if loc[0] == "thresholds" else RolloutPlan.model_fields
            about = fields[loc[-1]].description if loc[-1] in fields else None
            if len(given) > 40:  # a list of thousands of steps need not come back whole
                given = given[:37] + "..."
            named = f"{flag} {given}" if given else flag
            raise InvalidInput(f"{named}: {msg}" + (f" ({about})" if about else "")) from None
        raise InvalidInput(f"{where}: {'.'.join(loc)}: {msg}") from None


def build_plan(
    source: Path | None, options: dict[str, tuple[str, str, Any]]
) -> dict[str, Any] | None:
    """The plan from ``source`` (a JSON or YAML file) with ``options`` over it.

    ``options`` maps a plan field (``thresholds.alpha`` for a threshold) to the flag, the text
    given and the value; None values are left out.
    """
    plan = _plan_file(source) if source is not None else {}
    flags: dict[str, tuple[str, str]] = {}
    for field, (flag, given, value) in options.items():
        if value is None:
            continue
        flags[field] = (flag, given)
        if field.startswith("thresholds."):
            thresholds = plan.setdefault("thresholds", {})
            if isinstance(thresholds, dict):
                thresholds[field.removeprefix("thresholds.")] = value
        else:
            plan[field] = value
    if source is None and not flags:
        return None
    _checked(plan, flags, source)
    return plan


# -- showing a rollout -----------------------------------------------------------------------


def _where(r: Rollout) -> str:
    """Which step the rollout is at, e.g. ``step 2/4 at 25 %``."""
    steps = len(r.plan.steps)
    if r.phase == "shadow":
        return f"shadow: mirroring {r.plan.shadow_requests} requests before step 1/{steps}"
    if r.phase == "canary":
        return f"step {r.step + 1}/{steps} at {r.weight:g} %"
    return f"canary at {r.weight:g} %"


def _paint(text: str, key: str) -> str:
    colour = COLOURS.get(key)
    return f"[{colour}]{escape(text)}[/{colour}]" if colour else escape(text)


def _summary(r: Rollout) -> str:
    phase = r.phase + (" (paused)" if r.paused else "")
    line = f"rollout {r.id} on {r.endpoint}: {_paint(phase, r.phase)}, {escape(_where(r))}"
    if r.reason:
        line += f"; {escape(r.reason)}"
    return line


def _clock(at: datetime, full: bool) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S" if full else "%H:%M:%S")


def show(r: Rollout) -> None:
    """The rollout's header, then its events and analyses in time order."""
    phase = r.phase + (" (paused)" if r.paused else "")
    say = console.print
    say(f"[bold]rollout {r.id}[/bold] on [bold]{escape(r.endpoint)}[/bold]", highlight=False)
    pinned = f" (v{r.baseline_version} at the start)" if r.baseline_version else ""
    say(f"  {escape(r.baseline)}{pinned} -> {escape(r.target)}", highlight=False)
    say(f"  phase: {_paint(phase, r.phase)}, {escape(_where(r))}", highlight=False)
    started = f"  started by {escape(r.started_by)} at {_clock(r.started_at, True)} UTC"
    if r.ended_at is not None:
        started += f", ended at {_clock(r.ended_at, True)} UTC"
    elif not r.paused:
        started += f"; next analysis at {_clock(r.next_analysis_at, True)} UTC"
    say(started, highlight=False)
    if r.reason:
        say(f"  reason: {escape(r.reason)}", highlight=False)
    hidden = r.analysis_count - len(r.analyses)
    if hidden > 0:
        say(f"  ({hidden} older analyses not shown)", highlight=False)
    times = [e.at for e in r.events] + [a.at for a in r.analyses]
    full = len({t.date() for t in times}) > 1
    entries: list[tuple[datetime, int, RolloutEvent | Analysis]] = [
        *((a.at, 0, a) for a in r.analyses),  # an analysis before the step it caused
        *((e.at, 1, e) for e in r.events),
    ]
    for at, kind, entry in sorted(entries, key=lambda item: (item[0], item[1])):
        clock = _clock(at, full)
        if kind == 1:
            event: RolloutEvent = entry  # type: ignore[assignment]
            name = _paint(f"{event.kind:<11}", event.kind)
            detail = f": {escape(event.detail)}" if event.detail else ""
            say(f"  {clock}  {name} {escape(event.by)}{detail}", highlight=False)
            continue
        a: Analysis = entry  # type: ignore[assignment]
        what = "shadow" if a.phase == "shadow" else f"canary {a.weight:g} %"
        if a.early:
            what += ", early error check"
        say(
            f"  {clock}  {'analysis':<11} {escape(what)}: {_paint(a.verdict, a.verdict)} "
            f"(baseline {a.baseline_requests} requests, canary {a.canary_requests})",
            highlight=False,
        )
        for check in a.checks:  # a summary names its check and ends with its verdict
            say(f"  {'':{len(clock)}}  {_paint(check.summary, check.verdict)}", highlight=False)


def _done(r: Rollout, as_json: bool) -> None:
    if as_json:
        record(r, as_json=True)
    else:
        console.print(_summary(r), highlight=False)


def _service(ctx: typer.Context) -> Rollouts:
    return client(ctx).rollouts


# -- commands ------------------------------------------------------------------------------------


@app.command("start")
def start(
    ctx: typer.Context,
    endpoint: str = typer.Argument(..., help="the endpoint whose traffic the rollout drives"),
    to: str = typer.Option(..., "--to", help="the new version: models:/NAME/VERSION"),
    steps: str = typer.Option(None, "--steps", help="canary percentages (default 5,25,50,100)"),
    interval: str = typer.Option(
        None, "--interval", help="between analyses: 30, 30s, 5m (default 30s)"
    ),
    min_requests: int = typer.Option(
        None, "--min-requests", help="canary requests per step (default 50)"
    ),
    shadow: int = typer.Option(
        None, "--shadow", help="mirror N requests first and compare (default 0)"
    ),
    max_failures: int = typer.Option(
        None, "--max-failures", help="failed analyses in a row before rollback (default 1)"
    ),
    max_inconclusive: int = typer.Option(
        None, "--max-inconclusive", help="inconclusive analyses in a row tolerated (default 10)"
    ),
    deadline: str = typer.Option(
        None, "--deadline", help="roll back if not done by then (default 1d)"
    ),
    finish: str = typer.Option(
        None,
        "--finish",
        help="alias: move the alias at the end; endpoint: point only the endpoint at the "
        "version (default: alias if the endpoint follows one)",
    ),
    alias: str = typer.Option(
        None, "--alias", help="the alias to move (default: the one the endpoint follows)"
    ),
    sticky_header: str = typer.Option(
        None, "--sticky-header", help="a user's header value picks their version for good"
    ),
    sticky_field: str = typer.Option(
        None, "--sticky-field", help="... or an input field's value (e.g. user_id)"
    ),
    webhook: list[str] = typer.Option(
        [], "--webhook", help="URL told when the rollout ends; repeatable"
    ),
    early_errors: bool = typer.Option(
        None,
        "--early-errors/--no-early-errors",
        help="roll back between analyses on overwhelming errors (default on)",
    ),
    alpha: float = typer.Option(
        None, "--alpha", help="significance level per check (default 0.001)"
    ),
    error_margin: float = typer.Option(
        None, "--error-margin", help="error rate above the baseline's tolerated (default 0.01)"
    ),
    max_p99_ms: float = typer.Option(None, "--max-p99-ms", help="a ceiling on the canary's p99"),
    plan_file: Path = typer.Option(
        None, "--plan", help="a JSON or YAML file of plan fields; flags override it"
    ),
    as_json: bool = JSON,
) -> None:
    """Start rolling a version out on an endpoint; one rollout per endpoint at a time.

    The canary gets each step's share of traffic in turn; every --interval its errors,
    latency and outputs (and accuracy, once feedback arrives) are compared with the
    baseline's. A failed analysis puts all traffic back on the baseline at once; passing
    every step promotes it.
    """
    if sticky_header is not None and sticky_field is not None:
        raise InvalidInput("--sticky-header and --sticky-field: give one of them")
    sticky: dict[str, str] | None = None
    if sticky_header is not None:
        sticky = {"header": sticky_header}
    elif sticky_field is not None:
        sticky = {"field": sticky_field}
    options: dict[str, tuple[str, str, Any]] = {
        "steps": ("--steps", str(steps), None if steps is None else _steps(steps)),
        "interval_seconds": (
            "--interval",
            str(interval),
            None if interval is None else _seconds(interval, "--interval"),
        ),
        "min_requests": ("--min-requests", str(min_requests), min_requests),
        "shadow_requests": ("--shadow", str(shadow), shadow),
        "max_failures": ("--max-failures", str(max_failures), max_failures),
        "max_inconclusive": ("--max-inconclusive", str(max_inconclusive), max_inconclusive),
        "deadline_seconds": (
            "--deadline",
            str(deadline),
            None if deadline is None else _seconds(deadline, "--deadline"),
        ),
        "finish": ("--finish", str(finish), finish),
        "alias": ("--alias", str(alias), alias),
        "sticky": (
            "--sticky-header" if sticky_header is not None else "--sticky-field",
            str(sticky_header if sticky_header is not None else sticky_field),
            sticky,
        ),
        "webhooks": ("--webhook", " ".join(webhook), webhook or None),
        "early_errors": ("--early-errors", "", early_errors),
        "thresholds.alpha": ("--alpha", str(alpha), alpha),
        "thresholds.error_rate_margin": ("--error-margin", str(error_margin), error_margin),
        "thresholds.max_p99_ms": ("--max-p99-ms", str(max_p99_ms), max_p99_ms),
    }
    plan = build_plan(plan_file, options)
    rollout = _service(ctx).start(endpoint, to, plan)
    if as_json:
        record(rollout, as_json=True)
        return
    r = rollout
    ok(f"started rollout {r.id} on {r.endpoint}: {r.baseline} -> {r.target}")
    ok(f"  {_where(r)}; `modelyard rollouts status {r.endpoint}` follows it")


@app.command("status")
def status(ctx: typer.Context, ref: str = REF, as_json: bool = JSON) -> None:
    """Show a rollout's timeline: its steps, events, and each analysis with its checks."""
    rollout = _service(ctx).get(ref)
    if as_json:
        record(rollout, as_json=True)
    else:
        show(rollout)


@app.command("list")
def list_rollouts(
    ctx: typer.Context,
    endpoint: str = typer.Option(None, "--endpoint", help="only this endpoint's"),
    active: bool = typer.Option(False, "--active", help="only running ones"),
    limit: int = typer.Option(100, "--limit", help="at most this many, newest first"),
    as_json: bool = JSON,
) -> None:
    """List rollouts, newest first."""
    found = _service(ctx).list(endpoint, active=True if active else None, limit=limit)
    if as_json:
        emit_json(found)
        return
    rows = [
        {
            "id": r.id,
            "endpoint": r.endpoint,
            "to": r.target,
            "phase": r.phase + (" (paused)" if r.paused else ""),
            "step": "shadow" if r.step < 0 else f"{r.step + 1}/{len(r.plan.steps)}",
            "weight": f"{r.weight:g} %",
            "verdict": r.analyses[-1].verdict if r.analyses else "",
            "started_at": _clock(r.started_at, True),
        }
        for r in found
    ]
    table(rows, LISTED, as_json=False, title="rollouts")


@app.command("pause")
def pause(
    ctx: typer.Context,
    ref: str = REF,
    reason: str = typer.Option("", "--reason", help="why, for the timeline"),
    as_json: bool = JSON,
) -> None:
    """Hold the weights where they are; no analysis acts until `resume`."""
    _done(_service(ctx).pause(ref, reason), as_json)


@app.command("resume")
def resume(ctx: typer.Context, ref: str = REF, as_json: bool = JSON) -> None:
    """Carry on from the paused step (its analysis window starts again)."""
    _done(_service(ctx).resume(ref), as_json)


@app.command("promote")
def promote(ctx: typer.Context, ref: str = REF, as_json: bool = JSON) -> None:
    """Skip the remaining steps and finish now: move the alias (or the endpoint) to it.

    The alias move is checked like any other: a policy may ask for a role or an approval.
    """
    _done(_service(ctx).promote(ref), as_json)


@app.command("abort")
def abort(
    ctx: typer.Context,
    ref: str = REF,
    reason: str = typer.Option("", "--reason", help="why, for the timeline"),
    as_json: bool = JSON,
) -> None:
    """Send all traffic back to the baseline now; the rollout ends aborted."""
    _done(_service(ctx).abort(ref, reason), as_json)


def _report(result: RolloutPass, *, as_json: bool, quiet: bool) -> None:
    if as_json:
        if not quiet or result.acted or result.errors:
            sys.stdout.write(orjson.dumps(dataclasses.asdict(result)).decode() + "\n")
            sys.stdout.flush()
        return
    if result.skipped and not quiet:
        ok("another process holds the rollouts lease (a server's controller); it acts for now")
    for line in result.acted:
        ok(escape(line))
    for line in result.errors:
        err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
    if not quiet and not result.skipped and not (result.acted or result.errors):
        ok("nothing to do: no running rollout was due")


@app.command("run")
def run(
    ctx: typer.Context,
    watch: bool = typer.Option(False, "--watch", help="a pass every --every seconds, to Ctrl-C"),
    every: float = typer.Option(1.0, "--every", help="seconds between passes", min=0.1),
    as_json: bool = JSON,
) -> None:
    """Run the rollout controller: one pass (analyse what is due, step, finish, roll back).

    For setups with the server's loops off; beside a running controller it does nothing
    (a lease lets one act at a time). Over a server URL the server runs the pass.
    """
    c = client(ctx)
    service = c.rollouts
    try:
        if not watch:
            result = service.run_once()
            _report(result, as_json=as_json, quiet=False)
            if result.errors:
                raise typer.Exit(1)
            return
        told = False
        while True:
            result = service.run_once()
            _report(result, as_json=as_json, quiet=True)
            if result.skipped and not told and not as_json:
                ok("another process holds the rollouts lease (a server's controller); waiting")
            told = told or result.skipped
            time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        if c.workspace is not None:  # in-process: let a server's controller take over at once
            c.workspace.rollouts.release_lease()
