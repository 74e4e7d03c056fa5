"""Endpoints: named entry points of the gateway, each routed to registered versions."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.registry.uri import check_model_name, parse_model_uri
from modelyard.serving import plans
from modelyard.serving.entities import (
    MAX_TIMEOUT_MS,
    Batching,
    CacheConfig,
    Endpoint,
    GuardConfig,
    GuardStatus,
    TrafficPolicy,
    VariantStatus,
)
from modelyard.serving.runtime import choose_runtime
from modelyard.store.tables import EndpointRow

if TYPE_CHECKING:
    from modelyard.serving.live import LiveSeries
    from modelyard.store.db import Tx
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.serving")

RUNTIMES = ("auto", "native")


def _same_inputs(
    policy: TrafficPolicy, signatures: Mapping[str, tuple[list[str], list[str]]]
) -> None:
    """Variants answer the same requests the same way: their signatures must have the same
    input and output names (``signatures``: per target, its input and output names)."""
    first = policy.variants[0] if policy.variants else None
    for variant in policy.variants[1:]:
        assert first is not None
        for i, what in enumerate(("inputs", "outputs")):
            mine, theirs = signatures[variant.target][i], signatures[first.target][i]
            if mine != theirs:
                raise InvalidInput(
                    f"policy.variants: {variant.name} ({variant.target}) has {what} "
                    f"{', '.join(mine) or '(none)'}, {first.name} has "
                    f"{', '.join(theirs) or '(none)'}; the variants of an endpoint answer the "
                    "same requests the same way"
                )


def _model(cls: Any, value: Any, field: str) -> Any:
    try:
        return cls.model_validate(value or {}) if not isinstance(value, cls) else value
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in (field, *err["loc"]))
        raise InvalidInput(f"{where}: {err['msg']}") from None


class EndpointService:
    """Create, change and delete endpoints; the gateway reads them to route requests."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = ws.store

    def create(
        self,
        name: str,
        target: str,
        *,
        policy: TrafficPolicy | Mapping[str, Any] | None = None,
        batching: Batching | Mapping[str, Any] | None = None,
        cache: CacheConfig | Mapping[str, Any] | None = None,
        runtime: str = "auto",
        pinned: bool = False,
        timeout_ms: int = 10_000,
        guard: GuardConfig | Mapping[str, Any] | None = None,
        redact: Mapping[str, str] | None = None,
    ) -> Endpoint:
        """Create an endpoint serving ``target`` (every URI it names must resolve now)."""
        check_model_name(name)
        _no_rollout(policy)
        fields = self._checked(target, policy, batching, cache, runtime, timeout_ms, guard, redact)
        now = datetime.now(UTC)
        try:
            with self.store.write(self.ws.actor) as tx:
                if tx.session.scalar(select(EndpointRow.id).where(EndpointRow.name == name)):
                    raise AlreadyExists(f"endpoint {name!r} exists already")
                row = EndpointRow(
                    id=str(ULID()),
                    name=name,
                    pinned=pinned,
                    created_at=now,
                    updated_at=now,
                    created_by=self.ws.actor,
                    **fields,
                )
                tx.session.add(row)
                endpoint = _endpoint(row)
                tx.record(
                    "endpoint.create",
                    "endpoint",
                    name,
                    after=endpoint.model_dump(
                        mode="json", exclude={"id", "created_at", "updated_at"}
                    ),
                )
        except IntegrityError:
            raise AlreadyExists(f"endpoint {name!r} exists already") from None
        self._changed()
        return endpoint

    def get(self, name: str) -> Endpoint:
        with self.store.read() as s:
            return _endpoint(self._row(s, name))

    def list(self) -> list[Endpoint]:
        with self.store.read() as s:
            return [_endpoint(r) for r in s.scalars(select(EndpointRow).order_by(EndpointRow.name))]

    def update(
        self,
        name: str,
        *,
        target: str | None = None,
        policy: TrafficPolicy | Mapping[str, Any] | None = None,
        batching: Batching | Mapping[str, Any] | None = None,
        cache: CacheConfig | Mapping[str, Any] | None = None,
        runtime: str | None = None,
        pinned: bool | None = None,
        timeout_ms: int | None = None,
        guard: GuardConfig | Mapping[str, Any] | None = None,
        redact: Mapping[str, str] | None = None,
    ) -> Endpoint:
        """Change the fields given; the gateway picks the change up within a second.

        ``redact`` replaces the endpoint's redaction whole (``{}``: none).
        """
        current = self.get(name)
        _no_rollout(policy)
        if target is not None or policy is not None:
            _not_under_rollout(name, current.policy.rollout)
        fields = self._checked(
            target or current.target,
            current.policy if policy is None else policy,
            current.batching if batching is None else batching,
            current.cache if cache is None else cache,
            runtime or current.runtime,
            current.timeout_ms if timeout_ms is None else timeout_ms,
            current.guard if guard is None else guard,
            current.redact if redact is None else redact,
            unchanged=current.targets(),
        )
        given = {
            key
            for key, value in {
                "target": target,
                "policy": policy,
                "batching": batching,
                "cache": cache,
                "runtime": runtime,
                "timeout_ms": timeout_ms,
                "guard": guard,
                "redact": redact,
            }.items()
            if value is not None
        }
        with self.store.write(self.ws.actor) as tx:
            # Locked and checked again here: a rollout may have started or ended since the
            # read above, and only the fields given are written (not what was read then).
            row = self._row(tx.session, name, lock=True)
            if given & {"target", "policy"}:
                _not_under_rollout(name, (row.policy or {}).get("rollout"))
            before = _endpoint(row).model_dump(
                mode="json", exclude={"id", "created_at", "updated_at"}
            )
            for key, value in fields.items():
                if key in given:
                    setattr(row, key, value)
            if pinned is not None:
                row.pinned = pinned
            row.updated_at = datetime.now(UTC)
            endpoint = _endpoint(row)
            tx.record(
                "endpoint.update",
                "endpoint",
                name,
                before,
                endpoint.model_dump(mode="json", exclude={"id", "created_at", "updated_at"}),
            )
        self._changed()
        return endpoint

    def guard_status(self, name: str) -> GuardStatus:
        """The endpoint's input guard, and per version it serves whether it is active."""
        from modelyard.serving.guard import guard_status

        return guard_status(self.ws, self.get(name))

    def variant_status(self, name: str) -> builtins.list[VariantStatus]:
        """The endpoint's variants (none: not switched), each with the version its target
        resolves to now and the quality that ranks it (see serving/switching.py)."""
        from modelyard.serving.switching import qualities

        endpoint = self.get(name)
        versions = [self.ws.registry.resolve(v.target) for v in endpoint.policy.variants]
        found = qualities(self.ws, endpoint, versions)
        result = []
        for variant, version in zip(endpoint.policy.variants, versions, strict=True):
            quality, source = found.get(variant.name, (variant.quality, "policy"))
            result.append(
                VariantStatus(
                    name=variant.name,
                    target=variant.target,
                    model=version.model,
                    version=version.version,
                    quality=quality,
                    source=source,
                )
            )
        return result

    def live(self, name: str, seconds: float = 300.0) -> LiveSeries:
        """The endpoint's last ``seconds`` (at most 300) as its gateway workers counted
        them, in 2-second buckets: requests/s, errors/s, latency percentiles, batch size,
        cache hit rate (see serving/live.py)."""
        from modelyard.serving.live import read_live

        self.get(name)  # NotFound names the command that lists them
        return read_live(self.ws, name, seconds)

    def delete(self, name: str) -> None:
        with self.store.write(self.ws.actor) as tx:
            row = self._row(tx.session, name, lock=True)
            running = (row.policy or {}).get("rollout")
            if running is not None:
                raise Conflict(
                    f"endpoint {name!r} is under rollout {running}; `modelyard rollouts abort "
                    f"{name}` first, then delete it"
                )
            tx.session.delete(row)
            tx.record("endpoint.delete", "endpoint", name, {"target": row.target}, None)
        self._changed()

    def set_rollout_policy(
        self,
        tx: Tx,
        name: str,
        policy: TrafficPolicy,
        *,
        target: str | None = None,
        starting_from: str | None = None,
    ) -> bool:
        """Set the endpoint's policy (and ``target``) in ``tx``, for the rollout driving it
        (modelyard.rollouts): its URIs were checked when the rollout started. Call
        :meth:`changed` once ``tx`` has committed. False if the endpoint is gone.

        ``starting_from``: the target the rollout starts from; :class:`Conflict` unless the
        endpoint still serves it alone, with no rollout (checked on the locked row).
        """
        query = select(EndpointRow).where(EndpointRow.name == name).with_for_update()
        row = tx.session.scalar(query)
        if row is None:
            if starting_from is not None:
                raise NotFound(f"no endpoint {name!r}; `modelyard endpoints list` shows them")
            return False
        if starting_from is not None:
            current = TrafficPolicy.model_validate(row.policy or {})
            if row.target != starting_from or current.routes or current.rollout is not None:
                raise Conflict(
                    f"endpoint {name!r} changed while the rollout was starting (now "
                    f"{row.target}, rollout {current.rollout}); look at it and start again"
                )
        before = _endpoint(row).model_dump(mode="json", include={"target", "policy"})
        row.policy = policy.model_dump(mode="json")
        if target is not None:
            row.target = target
        row.updated_at = datetime.now(UTC)
        after = _endpoint(row).model_dump(mode="json", include={"target", "policy"})
        tx.record("endpoint.update", "endpoint", name, before, after)
        return True

    def changed(self) -> None:
        """Refresh the gateway's plan cache after a committed change of the endpoints."""
        self._changed()

    def _changed(self) -> None:
        # The next gateway start serves the new plans without reading the store. Best
        # effort: the change is committed, and a gateway without a current cache reads the
        # store instead.
        try:
            plans.refresh(self.ws)
        except Exception:
            log.warning("could not refresh the gateway's plan cache", exc_info=True)

    def _checked(
        self,
        target: str,
        policy: Any,
        batching: Any,
        cache: Any,
        runtime: str,
        timeout_ms: int,
        guard: Any = None,
        redact: Any = None,
        unchanged: Collection[str] = (),
    ) -> dict[str, Any]:
        """The endpoint's fields as stored; every URI must resolve, and one not in
        ``unchanged`` (what the endpoint already routes to) must be allowed by the alias
        policies (governance/policies.py)."""
        checked_policy = _model(TrafficPolicy, policy, "policy")
        checked_redact = _redaction(redact, self.ws.settings)
        if runtime not in RUNTIMES:
            raise InvalidInput(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
            raise InvalidInput(f"timeout_ms must be between 1 and {MAX_TIMEOUT_MS}")
        variants = [v.target for v in checked_policy.variants]
        uris = [target, *(r.target for r in checked_policy.routes), *variants]
        if checked_policy.shadow:
            uris.append(checked_policy.shadow)
        signatures: dict[str, tuple[list[str], list[str]]] = {}
        for uri in dict.fromkeys(uris):
            parse_model_uri(uri)
            version = self.ws.registry.resolve(uri)  # NotFound names what is missing
            if uri not in unchanged:
                self.ws.policies.check_routing(uri)
            # Settle the runtime now (deploy time), so gateways start without converting.
            choose_runtime(self.ws, runtime, version)
            _check_columns(checked_redact, version)
            if uri in variants:
                signatures[uri] = (
                    sorted(i.get("name", "") for i in version.signature.get("inputs", [])),
                    sorted(o.get("name", "") for o in version.signature.get("outputs", [])),
                )
        _same_inputs(checked_policy, signatures)
        return {
            "target": target,
            "policy": checked_policy.model_dump(mode="json"),
            "batching": _model(Batching, batching, "batching").model_dump(mode="json"),
            "cache": _model(CacheConfig, cache, "cache").model_dump(mode="json"),
            "runtime": runtime,
            "timeout_ms": timeout_ms,
            "guard": _model(GuardConfig, guard, "guard").model_dump(mode="json"),
            "redact": checked_redact,
        }

    @staticmethod
    def _row(s: Session, name: str, *, lock: bool = False) -> EndpointRow:
        query = select(EndpointRow).where(EndpointRow.name == name)
        row = s.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise NotFound(f"no endpoint {name!r}; `modelyard endpoints list` shows them")
        return row


def _not_under_rollout(name: str, running: str | None) -> None:
    if running is not None:
        raise Conflict(
            f"endpoint {name!r} is under rollout {running}: its target and routes change "
            f"only through it; `modelyard rollouts abort {name}` (or promote) first"
        )


def _no_rollout(policy: Any) -> None:
    rollout = (
        policy.rollout
        if isinstance(policy, TrafficPolicy)
        else policy.get("rollout")
        if isinstance(policy, Mapping)
        else None
    )
    if rollout is not None:
        raise InvalidInput(
            "policy.rollout is set by `modelyard rollouts start`, not by hand; leave it out"
        )


def _endpoint(row: EndpointRow) -> Endpoint:
    return Endpoint(
        id=row.id,
        name=row.name,
        target=row.target,
        policy=TrafficPolicy.model_validate(row.policy or {}),
        batching=Batching.model_validate(row.batching or {}),
        cache=CacheConfig.model_validate(row.cache or {}),
        runtime=row.runtime,
        pinned=row.pinned,
        timeout_ms=row.timeout_ms,
        guard=GuardConfig.model_validate(row.guard or {}),
        redact=dict(row.redact or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


REDACT_ACTIONS = ("drop", "hash", "mask")


def _redaction(redact: Any, settings: Any) -> dict[str, str]:
    """A checked ``redact`` field: column -> drop | hash | mask; hashing needs the key."""
    from modelyard.monitoring.redaction import redaction_key

    if redact is None:
        return {}
    if not isinstance(redact, Mapping):
        raise InvalidInput(
            'redact must map input columns to drop, hash or mask, e.g. {"email": "drop"}'
        )
    if len(redact) > 1000:
        raise InvalidInput("redact names more than 1000 columns")
    checked: dict[str, str] = {}
    for column, action in redact.items():
        if not isinstance(column, str) or not 0 < len(column) <= 256:
            raise InvalidInput(f"redact: {column!r} is not a column name (1 to 256 characters)")
        if action not in REDACT_ACTIONS:
            raise InvalidInput(
                f"redact: the action for {column!r} must be drop, hash or mask, not {action!r}"
            )
        checked[column] = action
    hashed = sorted(c for c, a in checked.items() if a == "hash")
    if hashed:
        redaction_key(
            settings,
            required_for=f"hashing {', '.join(hashed)}",
            otherwise="or --mask / --drop those columns instead",
        )
    return checked


def _check_columns(redact: Mapping[str, str], version: Any) -> None:
    """Each redacted column must be an input of ``version`` (a typo would log it raw)."""
    if not redact:
        return
    inputs = [spec.get("name") for spec in (version.signature or {}).get("inputs", [])]
    if not inputs:
        return  # no recorded signature: nothing to check against
    unknown = sorted(set(redact) - set(inputs))
    if unknown:
        raise InvalidInput(
            f"redact: no input {', '.join(map(repr, unknown))} in models:/{version.model}/"
            f"{version.version} (its inputs: {', '.join(map(str, inputs))}); name its columns"
        )
