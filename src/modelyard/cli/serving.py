"""``modelyard endpoints``: what the gateway serves, and how."""

from __future__ import annotations

from typing import Any

import orjson
import typer

from modelyard.cli.context import JSON, client
from modelyard.cli.output import ok, record, table
from modelyard.errors import InvalidInput
from modelyard.serving.entities import TrafficPolicy

endpoints = typer.Typer(help="Endpoints: what the gateway serves, and how.", no_args_is_help=True)


def _json_option(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidInput(
            f"{what} must be a JSON object, e.g. '{{\"max_batch_size\": 32}}'"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _policy(
    split: list[str],
    shadow: str | None,
    variants: list[str] = [],  # noqa: B006 (typer's option values: never mutated)
    slo_ms: float | None = None,
    qualities: list[str] = [],  # noqa: B006
    quality_metric: str | None = None,
    current: TrafficPolicy | None = None,
) -> dict[str, Any] | None:
    """The policy the options ask for (None: no option given). On update (``current``),
    the options given change the current policy and keep the rest of it."""
    switching = bool(variants or qualities or quality_metric) or slo_ms is not None
    if not (split or shadow is not None or switching):
        return None
    if split and switching:
        raise InvalidInput(
            "--split routes by weight, --variant/--slo-ms/--quality/--quality-metric by "
            "deadline: give one or the other"
        )
    policy = current.model_dump(mode="json", exclude={"rollout"}) if current else {}
    if split:
        if policy.get("variants"):
            raise InvalidInput(
                "the endpoint switches between variants: `--clear-policy` first, then --split"
            )
        policy["routes"] = _routes(split)
    if shadow is not None:
        policy["shadow"] = shadow
    if variants:
        policy["variants"] = _variants(variants)
    if qualities:
        _set_qualities(policy.get("variants") or [], qualities)
    if slo_ms is not None:
        policy["slo_ms"] = slo_ms
    if quality_metric:
        policy["quality_metric"] = quality_metric
    return policy


def _serves(policy: TrafficPolicy, target: str) -> str:
    if not policy.variants:
        return target
    variants = ", ".join(f"{v.name}={v.target}" for v in policy.variants)
    return f"the variant that answers within {policy.slo_ms:g} ms of {variants}"


def _routes(split: list[str]) -> list[dict[str, Any]]:
    routes = []
    for item in split:
        target, sep, weight = item.rpartition("=")
        if not sep:
            raise InvalidInput(f"--split {item!r} must look like models:/NAME/VERSION=WEIGHT")
        try:
            routes.append({"target": target, "weight": float(weight)})
        except ValueError:
            raise InvalidInput(f"--split weight {weight!r} must be a number") from None
    return routes


def _variants(variants: list[str]) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in variants:
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise InvalidInput(f"--variant {item!r} must look like NAME=models:/MODEL@ALIAS")
        if name in found:
            raise InvalidInput(f"--variant {name} is given twice: variant names must be unique")
        found[name] = {"name": name, "target": target}
    return list(found.values())


def _set_qualities(variants: list[dict[str, Any]], qualities: list[str]) -> None:
    by_name = {v["name"]: v for v in variants}
    for item in qualities:
        name, _, value = item.partition("=")
        if name not in by_name:
            raise InvalidInput(
                f"--quality {item!r} must look like NAME=0.93, NAME one of the variants "
                f"({', '.join(by_name) or 'none given'})"
            )
        try:
            by_name[name]["quality"] = float(value)
        except ValueError:
            raise InvalidInput(f"--quality {item!r}: {value!r} is not a number") from None


VARIANT = typer.Option(
    [],
    "--variant",
    help="NAME=models:/MODEL@ALIAS; repeatable: each request goes to the most accurate "
    "variant predicted to answer within its deadline (needs --slo-ms)",
)
SLO_MS = typer.Option(None, "--slo-ms", help="each request's deadline in ms (switching)")
QUALITY = typer.Option(
    [],
    "--quality",
    help="NAME=0.93: a variant's quality (higher is better); without it, from feedback or "
    "the version's run",
)
QUALITY_METRIC = typer.Option(
    None, "--quality-metric", help="the metric that ranks variants [accuracy]"
)


@endpoints.command("create")
def create(
    ctx: typer.Context,
    name: str,
    model: str = typer.Option(
        None,
        "--model",
        help="models:/NAME@ALIAS (follows the alias) or /N (with --variant: the first variant's)",
    ),
    split: list[str] = typer.Option([], help="models:/NAME/N=WEIGHT; repeatable (A/B, canary)"),
    shadow: str = typer.Option(None, help="a models:/ URI that gets a copy of every request"),
    variant: list[str] = VARIANT,
    slo_ms: float = SLO_MS,
    quality: list[str] = QUALITY,
    quality_metric: str = QUALITY_METRIC,
    batching: str = typer.Option(None, help='JSON, e.g. {"max_batch_size": 32, "max_wait_ms": 2}'),
    cache: str = typer.Option(None, help='JSON, e.g. {"enabled": true, "ttl_seconds": 60}'),
    runtime: str = typer.Option("auto", help="auto (ONNX Runtime when identical) or native"),
    pin: bool = typer.Option(False, "--pin", help="keep the model loaded at all times"),
    timeout_ms: int = typer.Option(10_000, help="per-request timeout"),
    as_json: bool = JSON,
) -> None:
    """Create an endpoint; the gateway starts serving it within a second.

    With --variant (twice or more) and --slo-ms, each request goes to the most accurate
    variant predicted to answer within its deadline (docs/switching.md)."""
    policy = _policy(split, shadow, variant, slo_ms, quality, quality_metric)
    if model is None:
        if not variant:
            raise InvalidInput("name the model to serve: --model models:/NAME@ALIAS")
        model = policy["variants"][0]["target"] if policy else ""
    endpoint = _service(ctx).create(
        name,
        model,
        policy=policy,
        batching=_json_option(batching, "--batching"),
        cache=_json_option(cache, "--cache"),
        runtime=runtime,
        pinned=pin,
        timeout_ms=timeout_ms,
    )
    if as_json:
        record(endpoint, as_json=True)
    else:
        ok(f"endpoint {endpoint.name} -> {_serves(endpoint.policy, endpoint.target)}")


@endpoints.command("update")
def update(
    ctx: typer.Context,
    name: str,
    model: str = typer.Option(None, "--model", help="new target URI"),
    split: list[str] = typer.Option([], help="models:/NAME/N=WEIGHT; repeatable"),
    shadow: str = typer.Option(None, help="shadow target URI"),
    batching: str = typer.Option(None, help="JSON batching settings"),
    cache: str = typer.Option(None, help="JSON cache settings"),
    variant: list[str] = VARIANT,
    slo_ms: float = SLO_MS,
    quality: list[str] = QUALITY,
    quality_metric: str = QUALITY_METRIC,
    clear_policy: bool = typer.Option(
        False, "--clear-policy", help="remove the split, shadow and variants: serve --model alone"
    ),
    runtime: str = typer.Option(None, help="auto or native"),
    pin: bool = typer.Option(None, "--pin/--no-pin", help="keep the model loaded at all times"),
    timeout_ms: int = typer.Option(None, help="per-request timeout"),
    as_json: bool = JSON,
) -> None:
    """Change an endpoint (hot swap: no request fails)."""
    if clear_policy and (split or shadow or variant):
        raise InvalidInput("--clear-policy cannot be combined with --split, --shadow or --variant")
    service = _service(ctx)
    if clear_policy:
        policy: dict[str, Any] | None = {"routes": [], "shadow": None}
    else:
        current = (
            service.get(name).policy
            if (split or shadow or variant or slo_ms or quality or quality_metric)
            else None
        )
        policy = _policy(split, shadow, variant, slo_ms, quality, quality_metric, current)
    endpoint = service.update(
        name,
        target=model,
        policy=policy,
        batching=_json_option(batching, "--batching"),
        cache=_json_option(cache, "--cache"),
        runtime=runtime,
        pinned=pin,
        timeout_ms=timeout_ms,
    )
    record(endpoint, as_json=as_json)


@endpoints.command("list")
def list_endpoints(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List endpoints."""
    table(
        _service(ctx).list(),
        ("name", "target", "policy", "runtime", "pinned", "updated_at"),
        as_json=as_json,
        title="endpoints",
    )


@endpoints.command("show")
def show(ctx: typer.Context, name: str, as_json: bool = JSON) -> None:
    """Show an endpoint."""
    record(_service(ctx).get(name), as_json=as_json)


@endpoints.command("variants")
def variants(ctx: typer.Context, name: str, as_json: bool = JSON) -> None:
    """The endpoint's variants: the version each resolves to and the quality that ranks it
    (policy, feedback or run; docs/switching.md)."""
    found = _service(ctx).variant_status(name)
    if not found and not as_json:
        ok(f"endpoint {name} has no variants: it is not switched by deadline")
        return
    table(
        found,
        ("name", "target", "model", "version", "quality", "source"),
        as_json=as_json,
        title=f"variants of {name}",
    )


@endpoints.command("guard")
def guard(
    ctx: typer.Context,
    name: str,
    policy: str = typer.Option(
        None,
        "--policy",
        help="log (score to the prediction log), flag (+ response header) "
        "or reject (422, nothing predicted)",
    ),
    threshold: float = typer.Option(
        None, "--threshold", help="rows scoring at least this (0 to 1] are flagged [0.5]"
    ),
    off: bool = typer.Option(False, "--off", help="turn the guard off"),
    as_json: bool = JSON,
) -> None:
    """Score each request's rows against the training data; without options, show the guard.

    Shows per served version whether the guard is active (a version without a reference
    profile is not guarded).
    """
    service = _service(ctx)
    if off and (policy is not None or threshold is not None):
        raise InvalidInput("--off cannot be combined with --policy or --threshold")
    if off:
        service.update(name, guard={"policy": "off"})
    elif policy is not None or threshold is not None:
        current = service.get(name).guard
        service.update(
            name,
            guard={
                "policy": policy or (current.policy if current.policy != "off" else "log"),
                "threshold": current.threshold if threshold is None else threshold,
            },
        )
    status = service.guard_status(name)
    if as_json:
        record(status, as_json=True)
        return
    ok(f"guard of {status.endpoint}: {status.policy} (threshold {status.threshold:g})")
    for v in status.versions:
        state = "active" if v.active else v.reason
        ok(f"  models:/{v.model}/{v.version}: {state}")


@endpoints.command("redact")
def redact(
    ctx: typer.Context,
    name: str,
    drop: list[str] = typer.Option([], "--drop", help="input column left out of the log"),
    hash_: list[str] = typer.Option(
        [], "--hash", help="input column logged as its HMAC-SHA256 (MODELYARD_REDACTION_KEY)"
    ),
    mask: list[str] = typer.Option([], "--mask", help="input column logged as a length class"),
    keep: list[str] = typer.Option([], "--keep", help="input column logged as it is again"),
    clear: bool = typer.Option(False, "--clear", help="log every column as it is"),
    as_json: bool = JSON,
) -> None:
    """Mark input columns personal: dropped, hashed or masked before the prediction log.

    Adds to the endpoint's redaction (--keep and --clear remove); the model still gets the
    real values. Repeat an option for several columns.
    """
    service = _service(ctx)
    changes = {c: "drop" for c in drop} | {c: "hash" for c in hash_} | {c: "mask" for c in mask}
    named = [*drop, *hash_, *mask, *keep]
    twice = sorted({c for c in named if named.count(c) > 1})
    if twice:
        raise InvalidInput(f"{', '.join(twice)}: name each column in one option only")
    current = {} if clear else dict(service.get(name).redact)
    for column in keep:
        current.pop(column, None)
    endpoint = service.update(name, redact=current | changes)
    if as_json:
        record(endpoint.redact, as_json=True)
        return
    listed = ", ".join(f"{c}: {a}" for c, a in sorted(endpoint.redact.items()))
    ok(f"redaction of {endpoint.name}: {listed or 'none'}")


@endpoints.command("delete")
def delete(ctx: typer.Context, name: str) -> None:
    """Delete an endpoint; the gateway stops serving it."""
    _service(ctx).delete(name)
    ok(f"deleted endpoint {name}")


def _service(ctx: typer.Context) -> Any:
    return client(ctx).endpoints
