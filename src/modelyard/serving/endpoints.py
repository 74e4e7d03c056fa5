"""Endpoints: named entry points of the gateway, each routed to registered versions."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import AlreadyExists, InvalidInput, NotFound
from modelyard.registry.uri import check_model_name, parse_model_uri
from modelyard.serving import plans
from modelyard.serving.entities import (
    MAX_TIMEOUT_MS,
    Batching,
    CacheConfig,
    Endpoint,
    TrafficPolicy,
)
from modelyard.serving.runtime import choose_runtime
from modelyard.store.tables import EndpointRow

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.serving")

RUNTIMES = ("auto", "native")


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
    ) -> Endpoint:
        """Create an endpoint serving ``target`` (every URI it names must resolve now)."""
        check_model_name(name)
        fields = self._checked(target, policy, batching, cache, runtime, timeout_ms)
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
    ) -> Endpoint:
        """Change the fields given; the gateway picks the change up within a second."""
        current = self.get(name)
        fields = self._checked(
            target or current.target,
            current.policy if policy is None else policy,
            current.batching if batching is None else batching,
            current.cache if cache is None else cache,
            runtime or current.runtime,
            current.timeout_ms if timeout_ms is None else timeout_ms,
        )
        with self.store.write(self.ws.actor) as tx:
            row = self._row(tx.session, name)
            before = _endpoint(row).model_dump(
                mode="json", exclude={"id", "created_at", "updated_at"}
            )
            for key, value in fields.items():
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

    def delete(self, name: str) -> None:
        with self.store.write(self.ws.actor) as tx:
            row = self._row(tx.session, name)
            tx.session.delete(row)
            tx.record("endpoint.delete", "endpoint", name, {"target": row.target}, None)
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
    ) -> dict[str, Any]:
        checked_policy = _model(TrafficPolicy, policy, "policy")
        if runtime not in RUNTIMES:
            raise InvalidInput(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
            raise InvalidInput(f"timeout_ms must be between 1 and {MAX_TIMEOUT_MS}")
        uris = [target, *(r.target for r in checked_policy.routes)]
        if checked_policy.shadow:
            uris.append(checked_policy.shadow)
        for uri in uris:
            parse_model_uri(uri)
            version = self.ws.registry.resolve(uri)  # NotFound names what is missing
            # Settle the runtime now (deploy time), so gateways start without converting.
            choose_runtime(self.ws, runtime, version)
        return {
            "target": target,
            "policy": checked_policy.model_dump(mode="json"),
            "batching": _model(Batching, batching, "batching").model_dump(mode="json"),
            "cache": _model(CacheConfig, cache, "cache").model_dump(mode="json"),
            "runtime": runtime,
            "timeout_ms": timeout_ms,
        }

    @staticmethod
    def _row(s: Session, name: str) -> EndpointRow:
        row = s.scalar(select(EndpointRow).where(EndpointRow.name == name))
        if row is None:
            raise NotFound(f"no endpoint {name!r}; `modelyard endpoints list` shows them")
        return row


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
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )
