"""The data plane: every endpoint behind the Open Inference Protocol v2 and MLflow's scoring.

The hot routes (``.../infer`` and ``.../invocations``) are answered by :meth:`Gateway.infer`,
not a framework route: at thousands of requests a second on two cores, each layer of
routing, dependency injection and response validation costs a visible share of the budget.
Under ``modelyard serve`` an ordinary prediction request does not even become ASGI (see
:mod:`modelyard.serving.http_protocol`); through ASGI it reaches the same method. Everything
else (health, metadata, ``/metrics``, the control-plane API) goes through Starlette (see
:mod:`modelyard.serving.routes`); what a request is on the wire is :mod:`.wire`'s.

What an endpoint serves is a :class:`Served` snapshot, replaced whole when the registry
changes (an alias moves, an endpoint is edited): the new versions are loaded and warmed
first, the snapshot is swapped in one assignment, and the old models are retired once the
requests already using them have finished. No request ever sees an unready model.

At start (and for an endpoint created later) the models load a few endpoints at a time, and
each endpoint serves as soon as its own are loaded; under ``modelyard serve`` the worker
listens before that (``load_before_serving=False``). A request to an endpoint still loading
waits for its load, at most its timeout, instead of a 404 (:meth:`Gateway._wait_for_load`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import orjson
from cachetools import TTLCache

from modelyard.errors import BadRequest, InvalidInput, ModelyardError, NotFound
from modelyard.formats import Predictor, load_model, read_manifest
from modelyard.governance.limits import Admission, LimitBook, LimitExceeded
from modelyard.monitoring.predlog import PredictionLog
from modelyard.monitoring.redaction import Redaction
from modelyard.registry import ModelVersion
from modelyard.serving import plans
from modelyard.serving.batcher import Overloaded
from modelyard.serving.guard import Guard, Inactive, apply_guard, load_guards
from modelyard.serving.live import LivePublisher
from modelyard.serving.metrics import GatewayMetrics, gateway_families, rollout_families
from modelyard.serving.onnx_reloads import OnnxReloads
from modelyard.serving.plans import Plan, Resolved
from modelyard.serving.pool import LoadedModel, ModelPool
from modelyard.serving.protocols import mlflow as mlflow_protocol
from modelyard.serving.protocols import oip
from modelyard.serving.routes import GatewayRoutes, metrics_response, problem_response
from modelyard.serving.served import Served, sticky_value
from modelyard.serving.switching import (
    DEADLINE_HEADER,
    VARIANT_HEADER,
    DeadlineShed,
    Switched,
    Switcher,
    admit,
    check_deadline,
    deadline_ms,
    qualities,
    switching_families,
)
from modelyard.serving.wire import (
    BAD_REQUEST_ID,
    JSON,
    PROBLEM,
    HotRoute,
    InternalError,
    MethodNotAllowed,
    ModelFailed,
    NotReady,
    Receive,
    Reply,
    Scope,
    Send,
    binary_header_length,
    extra_headers,
    hot_route,
    invocations_content_type,
    new_request_id,
    read_body,
    request_timeout_ms,
    require_json,
    send_reply,
    valid_request_id,
)
from modelyard.workspace import Workspace

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import Router

    from modelyard.governance import Identity, TokenCache
    from modelyard.governance.signing import ModelSignature
    from modelyard.rollouts.entities import Rollout
    from modelyard.serving.entities import Endpoint

log = logging.getLogger("modelyard.gateway")

#: The metric label of every request that names no endpoint the gateway knows: labels taken
#: from URLs as they come would let any client grow ``/metrics`` without bound.
UNKNOWN = "unknown"
MAX_SHADOW_IN_FLIGHT = 64
FULL_SYNC_EVERY = 60  # refreshes skipped as unchanged before one resolves everything anyway
#: How often a guarded endpoint's reference profiles are read again, to pick up one made
#: or replaced since it was loaded (a sync can come twice a second).
GUARD_RECHECK_SECONDS = 5.0
#: How soon an endpoint under a rollout has its predictions readable in the log (the
#: rollout's analysis reads them), instead of the log's usual flush interval.
ROLLOUT_FLUSH_SECONDS = 1.0
#: How often the active rollouts are read again for ``/metrics`` (while an endpoint has one).
ROLLOUT_METRICS_SECONDS = 2.0
#: How long an ended rollout stays on ``/metrics`` (its phase, e.g. ``rolled_back``, at 1).
ENDED_ROLLOUT_SECONDS = 600.0
#: How often a switched endpoint's variant qualities are read again (feedback arrives).
QUALITY_REFRESH_SECONDS = 30.0
#: How many endpoints one worker loads at once. A load runs in a thread (checking the files,
#: building an ONNX Runtime session, warming up), partly without the GIL, so two overlap
#: well; more did not help on 2 cores (200 small ONNX endpoints in one process: 0.54 s at 1,
#: 0.35 s at 2, 0.42 s at 3 to 6; no better with two workers loading side by side), and a
#: worker is one process per core anyway.
LOADS_AT_ONCE = 2
#: Retry-After (seconds) of a request answered 503 because its endpoint is still loading.
LOADING_RETRY_AFTER = 1

#: A request's parsed body: its inputs, row count, OIP request (None: MLflow) and request id.
Parsed = tuple[Mapping[str, Any], int, oip.InferRequest | None, str]


@dataclass(eq=False)
class _Load:
    """One endpoint's plan being loaded by :meth:`Gateway._apply` (``current``: what it
    serves meanwhile, if anything). ``task``: the load, once started."""

    plan: Plan
    current: Served | None
    task: asyncio.Task[None] | None = None


@dataclass
class GatewayState:
    served: dict[str, Served] = field(default_factory=dict)
    not_ready: dict[str, str] = field(default_factory=dict)
    not_ready_models: dict[str, str] = field(default_factory=dict)  # endpoint -> model name
    #: Endpoints that serve nothing yet and whose models are loading: their requests wait.
    loading: dict[str, _Load] = field(default_factory=dict)
    #: The first sync has served every endpoint it found (or said why not): /v2/health/ready.
    synced: bool = False


class StillLoading(NotReady):
    """The endpoint's models are still loading (the gateway has just started, or the endpoint
    is new): retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, *, retry_after: int = LOADING_RETRY_AFTER) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Gateway:
    """An ASGI application serving every endpoint of a workspace."""

    def __init__(
        self,
        ws: Workspace,
        *,
        control_plane: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
        refresh_seconds: float | None = None,
        prediction_log: PredictionLog | None = None,
        memory_budget_bytes: int | None = None,
        load_before_serving: bool = True,
    ) -> None:
        settings = ws.settings
        #: Whether :meth:`start` (the ASGI start-up) returns only once every endpoint's models
        #: are loaded. False (``modelyard serve``): once the gateway knows its endpoints; each
        #: then becomes ready on its own, and a request to one still loading waits for it.
        self.load_before_serving = load_before_serving
        self.ws = ws.as_actor("gateway")
        self.control_plane = control_plane
        self.refresh_seconds = refresh_seconds or settings.gateway_refresh_seconds
        self.max_body = settings.max_request_bytes
        #: With auth on, the tokens this worker has looked up (see :meth:`caller`).
        self.tokens: TokenCache | None = None
        if settings.auth:  # governance reads the metadata store: imported only when needed
            from modelyard.governance import TokenCache
            from modelyard.governance.oidc import OidcVerifier

            self.tokens = TokenCache(
                self.ws.identities,
                settings.token_cache_seconds,
                oidc=OidcVerifier.from_settings(settings),
            )
        #: Rate limits and daily quotas (see governance/limits.py): loaded by :meth:`start`.
        self.limits = LimitBook()
        #: When each guarded endpoint's reference profiles were last looked at.
        self._guards_checked: dict[str, float] = {}
        #: The last load failure logged per endpoint (one line per failure, not per retry).
        self._refusals: dict[str, str] = {}
        self._limits_keeper: asyncio.Task[None] | None = None
        metrics_address = settings.metrics_host_port
        #: The port of ``--metrics-address``: connections to it get ``/metrics`` only.
        self.metrics_port = metrics_address[1] if metrics_address is not None else None
        #: The uvicorn configuration a :class:`~.http_protocol.GatewayHttpProtocol` serves
        #: this gateway with (None: another protocol), for the fast path's gauge.
        self.http_config: Any = None
        self.state = GatewayState()
        self.metrics = GatewayMetrics()
        if memory_budget_bytes is None and settings.gateway_memory_mb is not None:
            memory_budget_bytes = settings.gateway_memory_mb * 1024 * 1024
        self.pool = ModelPool(
            self._load,
            memory_budget_bytes=memory_budget_bytes,
            batcher_options={"max_queue": settings.gateway_max_queue},
        )
        self.log = (
            prediction_log
            if prediction_log is not None
            else PredictionLog(
                ws,
                max_queue_rows=settings.prediction_log_queue_rows,
                segment_rows=settings.prediction_log_segment_rows,
            )
        )
        self._refresher: asyncio.Task[None] | None = None
        self._shadow_in_flight = 0
        # Which process answered: the header tells workers apart (after fork, so per gateway).
        self.worker = str(os.getpid()).encode()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sync_lock = asyncio.Lock()
        self._stamp = -1  # the audit log's newest sequence number at the last sync
        self._cached: Resolved | None = None  # what the plan cache holds, as far as we know
        self._onnx_files: dict[tuple[str, int], str] = {}  # (model, version) -> ONNX file
        self._onnx_reloads = OnnxReloads(
            self.ws.artifacts.get_bytes, settings.cache_dir / "onnx-reload"
        )
        #: Signatures read for the loads of the current sync, by version id (see _load).
        self._signatures: dict[str, ModelSignature] = {}
        #: Set by the first :meth:`sync` (it reads the metadata store and loads what it
        #: serves): at start, or at the first refresh of a start from the plan cache.
        self.settled = threading.Event()
        #: Set once an :meth:`_apply` knows what to load: the endpoints are known.
        self._plans_known = asyncio.Event()
        #: The start-up's sync: done once every endpoint known at start is loaded (or failed).
        self._first: asyncio.Task[None] | None = None
        #: The active rollouts, as last read for ``/metrics`` (see :meth:`_refresh_rollouts`).
        self.rollouts: list[Rollout] = []
        self._rollouts_read = -ROLLOUT_METRICS_SECONDS  # monotonic time of the last read
        self._rollouts_shown_until = 0.0  # (monotonic) keep reading them until then
        self._rollouts_failing = False  # the last read failed (said once, not per refresh)
        #: Per switched endpoint: the switch whose qualities were read last, and when.
        self._qualities_read: dict[str, tuple[Switcher, float]] = {}
        self._qualities: asyncio.Task[None] | None = None
        #: Publishes this worker's recent counters for the dashboard (see serving/live.py).
        self.live: LivePublisher | None = None
        self.metrics.add_collector(partial(gateway_families, self))
        self.metrics.add_collector(lambda: rollout_families(self.rollouts))
        self.metrics.add_collector(lambda: switching_families(self.state.served))

    @cached_property
    def router(self) -> Router:
        """Starlette's router for the routes other than predictions (built on first use:
        Starlette is not needed on the way to a gateway's first answer)."""
        return GatewayRoutes(self).router()

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Load every endpoint's models (:data:`LOADS_AT_ONCE` endpoints at a time), then keep
        following the registry. Without :attr:`load_before_serving`, return as soon as the
        endpoints are known and let the models load in the background.

        With a current plan cache (see serving/plans.py) the models are those of the
        cached plans and the store is first read by the refresher, after the server listens.
        """
        self.log.start()
        cached = await asyncio.to_thread(plans.read, self.ws.settings)
        first = self._first = asyncio.create_task(self._first_sync(cached))
        if self.load_before_serving:
            await first
        else:
            known = asyncio.create_task(self._plans_known.wait())
            await asyncio.wait({first, known}, return_when=asyncio.FIRST_COMPLETED)
            known.cancel()
            if first.done():
                first.result()  # the store could not be read: the start-up fails
            else:
                first.add_done_callback(_log_failure)
        # Before the first answer: a restart must not forget what a daily quota has counted.
        await self.limits.load(self.ws.limits)
        self._limits_keeper = asyncio.create_task(
            self.limits.keep(self.ws.limits, self.ws.settings.limits_flush_seconds)
        )
        self._refresher = asyncio.create_task(self._refresh_forever(verify=cached is not None))
        self.live = LivePublisher.start_for(self)

    async def _first_sync(self, cached: Resolved | None) -> None:
        if cached is None:
            await self.sync()
        else:
            async with self._sync_lock:
                await self._apply(cached)
            self._cached = cached

    async def stop(self) -> None:
        """Stop following the registry, let in-flight requests finish, flush the log."""
        if self._first is not None and not self._first.done():
            self._first.cancel()
            await asyncio.gather(self._first, return_exceptions=True)
        if self._refresher is not None:
            self._refresher.cancel()
        if self._qualities is not None:
            self._qualities.cancel()
        if self.live is not None:
            await self.live.stop()
        await self.pool.close()
        if self._limits_keeper is not None:
            self._limits_keeper.cancel()  # (an exchange under way is finished first)
            await asyncio.gather(self._limits_keeper, return_exceptions=True)
            if self.limits.counting():  # what was answered since the last flush
                await self.limits.sync(self.ws.limits)
        await asyncio.to_thread(self.log.close)

    async def _refresh_forever(self, *, verify: bool = False) -> None:
        # Every change that can move what is served (endpoints, aliases, versions, runtimes)
        # is audited in its own transaction, so an unchanged newest audit record means there
        # is nothing to resolve: one small query instead of every endpoint's resolution. A
        # full sync still runs now and then, and while an endpoint is not ready (to retry);
        # ``verify``: the first one runs at once (plans that came from the cache).
        skipped = FULL_SYNC_EVERY if verify else 0
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                if self.state.not_ready or skipped >= FULL_SYNC_EVERY:
                    skipped = 0
                    await self.sync()
                elif await asyncio.to_thread(self.ws.audit.last_seq) == self._stamp:
                    skipped += 1
                else:
                    await self.sync()
            except Exception:  # a registry hiccup must not stop the gateway
                log.exception("refreshing endpoints failed; serving what was loaded")
            await self._refresh_rollouts()
            if self._qualities is None or self._qualities.done():
                # its own task: a slow feedback query must not hold up following the registry
                self._qualities = asyncio.create_task(self._refresh_qualities())

    async def _refresh_qualities(self) -> None:
        """Read the qualities of each switched endpoint's variants again: at once for a new
        snapshot, then every :data:`QUALITY_REFRESH_SECONDS` (labelled feedback arrives)."""
        now = time.monotonic()
        for name in set(self._qualities_read) - set(self.state.served):
            del self._qualities_read[name]
        for name, served in list(self.state.served.items()):
            switch = served.switch
            if switch is None:
                self._qualities_read.pop(name, None)
                continue
            read = self._qualities_read.get(name)
            if read is not None and read[0] is switch and now - read[1] < QUALITY_REFRESH_SECONDS:
                continue
            self._qualities_read[name] = (switch, now)
            versions = [m.version for m in served.models]
            try:
                found = await asyncio.to_thread(qualities, self.ws, served.endpoint, versions)
            except Exception as exc:  # the ranking it has stays; tried again later
                log.warning("endpoint %s: reading its variants' qualities failed: %r", name, exc)
                continue
            switch.set_qualities(found)

    async def _refresh_rollouts(self) -> None:
        """Read the rollouts again for ``/metrics``: at most every
        :data:`ROLLOUT_METRICS_SECONDS`, and only while a served endpoint has one or had one
        in the last :data:`ENDED_ROLLOUT_SECONDS` (the scrape renders this list; it never
        reads the store). A failed read keeps the last
        list and is logged once until a read succeeds."""
        now = time.monotonic()
        if any(s.endpoint.policy.rollout for s in self.state.served.values()):
            # an ended rollout stays on /metrics a while: long enough to alert on
            self._rollouts_shown_until = now + ENDED_ROLLOUT_SECONDS
        elif now >= self._rollouts_shown_until:
            self.rollouts = []
            return
        if now - self._rollouts_read < ROLLOUT_METRICS_SECONDS:
            return
        self._rollouts_read = now
        try:
            self.rollouts = await asyncio.to_thread(_active_rollouts, self.ws)
        except Exception as exc:
            if not self._rollouts_failing:
                self._rollouts_failing = True
                log.warning("could not read the active rollouts for /metrics: %r", exc)
        else:
            self._rollouts_failing = False

    async def sync(self) -> None:
        """Bring what is served in line with the registry (new, changed, removed endpoints)."""
        async with self._sync_lock:
            resolved = await asyncio.to_thread(plans.resolve, self.ws)
            await self._apply(resolved)
            if resolved != self._cached:
                self._cached = resolved
                await asyncio.to_thread(plans.write, self.ws.settings, resolved)
        self.settled.set()

    async def _apply(self, resolved: Resolved) -> None:
        """Serve ``resolved``: load what is new or changed, retire what is no longer used.

        Endpoints load :data:`LOADS_AT_ONCE` at a time, each ready as soon as its own models
        are. One that serves nothing yet (and has not failed before) is in ``state.loading``
        meanwhile: a request to it waits for its load (see :meth:`_wait_for_load`)
        instead of a 404. One that changed keeps serving what it had until the new plan is
        loaded. Returns once every load has finished.
        """
        state = self.state
        for name, (reason, model) in resolved.errors.items():
            state.not_ready[name] = reason
            state.not_ready_models[name] = model
        wanted = {p.endpoint.name for p in resolved.plans} | set(resolved.errors)
        loads: list[_Load] = []
        for plan in resolved.plans:
            name = plan.endpoint.name
            self._onnx_files.update(plan.onnx_files)
            current = state.served.get(name)
            if current is not None and _same(current, plan):
                due = self._guards_checked.get(name, 0.0) + GUARD_RECHECK_SECONDS
                if current.guards is not None and time.monotonic() >= due:
                    # a reference made or replaced since (a sync may come twice a second)
                    self._guards_checked[name] = time.monotonic()
                    try:
                        await self._refresh_guards(current)
                    except Exception:  # the guards it has stay; the next sync tries again
                        log.exception("endpoint %s: reloading its guard failed", name)
                continue
            load = _Load(plan, current)
            loads.append(load)
            # A request to an endpoint that failed before gets the reason at once, not a wait.
            if current is None and name not in state.not_ready:
                state.loading[name] = load
        self._plans_known.set()
        versions = [v for load in loads for v in _versions(load.plan)]
        try:
            if versions:  # one query for every signature, not one per version
                try:
                    found = await asyncio.to_thread(self.ws.signing.signatures_of, versions)
                    self._signatures.update(found)
                except Exception as exc:  # each load reads its own, and says what fails
                    log.warning("reading the signatures of the versions to load failed: %r", exc)
            await self._load_all(loads)
        finally:  # (cancelled: the gateway stops)
            for load in loads:
                if state.loading.get(load.plan.endpoint.name) is load:
                    del state.loading[load.plan.endpoint.name]
            for version in versions:  # those the pool had loaded already
                self._signatures.pop(version.id, None)
        for name in list(state.served):
            if name not in wanted:
                del state.served[name]
                self.log.set_flush(name, None)
        for name in list(state.not_ready):
            if name not in wanted:
                del state.not_ready[name]
        for name in list(state.not_ready_models):
            if name not in state.not_ready:
                del state.not_ready_models[name]
        in_use = set().union(*(s.keys for s in state.served.values()))
        # A version no endpoint serves any more is checked again if a plan brings it back.
        served = [m for s in state.served.values() for m in (*s.models, s.shadow) if m]
        self._onnx_reloads.retain({m.version.id for m in served})
        for key in set(self.pool.keys()) - in_use:
            self._background(self.pool.retire(key))
        state.synced = True
        self._stamp = resolved.stamp

    async def _load_all(self, loads: list[_Load]) -> None:
        """Run ``loads``, :data:`LOADS_AT_ONCE` at a time in their order; a request may
        start one out of turn (:meth:`_wait_for_load`)."""
        queue = deque(loads)

        async def take_turns() -> None:
            while queue:
                load = queue.popleft()
                if load.task is None:
                    await self._start_load(load)

        await asyncio.gather(*(take_turns() for _ in range(min(LOADS_AT_ONCE, len(loads)))))
        # the loads that requests started out of turn
        await asyncio.gather(*(load.task for load in loads if load.task is not None))

    def _start_load(self, load: _Load) -> asyncio.Task[None]:
        task = load.task = asyncio.create_task(
            self._load_endpoint(load), name=f"endpoint:{load.plan.endpoint.name}"
        )
        return task

    async def _load_endpoint(self, load: _Load) -> None:
        """Load one endpoint's plan and serve it; a failure is said (once per reason) and kept
        in ``state.not_ready`` while the versions it had, if any, keep answering."""
        plan, current = load.plan, load.current
        name = plan.endpoint.name
        state = self.state
        try:
            state.served[name] = await self._serve(plan, current)
            state.not_ready.pop(name, None)
            if self._refusals.pop(name, None) is not None:
                log.info("endpoint %s: loaded its new plan", name)
        except Exception as exc:  # keep serving the old versions
            reason = f"{type(exc).__name__}: {exc}"
            # A refusal of ours (untrusted, missing extra) is one line; anything else
            # is a bug worth its traceback. Said once while the reason stays the same:
            # the load is retried at every refresh.
            if self._refusals.get(name) != reason:
                self._refusals[name] = reason
                log.warning(
                    "endpoint %s: loading failed (retried at each refresh): %s",
                    name,
                    exc,
                    exc_info=not isinstance(exc, ModelyardError),
                )
            if current is not None:  # say what keeps answering meanwhile
                kept = ", ".join(str(m.version.version) for m in current.models)
                reason = f"still serving version {kept}; the new plan was refused: {reason}"
            state.not_ready[name] = reason
            state.not_ready_models[name] = plan.routes[0][0].model
        finally:
            if state.loading.get(name) is load:
                del state.loading[name]

    async def _wait_for_load(self, route: HotRoute, headers: Mapping[bytes, bytes]) -> None:
        """For a request that may name an endpoint still loading: wait for that load (started
        now if its turn has not come), at most the request's timeout or deadline. If the
        endpoint is still loading then, :meth:`served` answers 503 with Retry-After."""
        load = self.state.loading.get(self._target_of(route, headers))
        if load is not None:
            try:
                wait = _wait_seconds(load.plan.endpoint, headers)
            except ModelyardError:  # a malformed header: infer says what to fix
                wait = 0.0
            task = load.task or self._start_load(load)
            if wait > 0:  # (neither cancels the load when the wait ends, nor raises)
                await asyncio.wait((task,), timeout=wait)

    def _target_of(self, route: HotRoute, headers: Mapping[bytes, bytes]) -> str:
        """The endpoint a prediction request names, as far as that can be told without
        checking it ("" when it cannot: :meth:`infer` says why)."""
        if route[0] is not None:
            return route[0]
        chosen = headers.get(b"x-modelyard-endpoint")
        if chosen is not None:
            return chosen.decode("latin-1")
        state = self.state
        known = set(state.served) | set(state.not_ready) | set(state.loading)
        return next(iter(known)) if len(known) == 1 else ""

    async def _serve(self, plan: Plan, current: Served | None) -> Served:
        endpoint = plan.endpoint
        batching = endpoint.batching.model_dump()
        models = []
        for version, _, runtime in plan.routes:
            models.append(await self.pool.get(version, runtime=runtime, batching=batching))
            if endpoint.pinned:
                self.pool.pin(models[-1].key)
        shadow = None
        if plan.shadow is not None:
            shadow = await self.pool.get(plan.shadow[0], runtime=plan.shadow[1], batching=batching)
        cumulative, total = [], 0.0
        for _, weight, _ in plan.routes:
            total += weight
            cumulative.append(total)
        cache = None
        if endpoint.cache.enabled:
            same_cache = current is not None and current.endpoint.cache == endpoint.cache
            cache = (
                current.cache
                if same_cache and current is not None
                else TTLCache(maxsize=endpoint.cache.max_entries, ttl=endpoint.cache.ttl_seconds)
            )
        guards = None
        if endpoint.guard.policy != "off":
            versions = [m.version for m in models]
            guards = await asyncio.to_thread(load_guards, self.ws, versions)
        self.log.set_redaction(
            endpoint.name, Redaction.for_endpoint(endpoint.redact, self.ws.settings)
        )
        # a rollout's analysis reads this endpoint's log: rows within a second, not five
        flush = ROLLOUT_FLUSH_SECONDS if endpoint.policy.rollout else None
        self.log.set_flush(endpoint.name, flush)
        sticky = endpoint.policy.sticky if len(models) > 1 else None
        header = None
        same: tuple[bool, ...] = ()
        switch = None
        if endpoint.policy.variants:
            _same_answers(endpoint, models)
            keys = [(m.version.model, m.version.version) for m in models]
            switch = Switcher.for_endpoint(endpoint, keys, current.switch if current else None)
        if sticky is not None and sticky.header is not None:
            header = sticky.header.lower().encode("ascii")
        elif sticky is not None or switch is not None:
            # compared once here: signatures are large pydantic models
            first = models[0].predictor.signature
            same = tuple(m.predictor.signature == first for m in models)
        return Served(
            endpoint,
            tuple(models),
            tuple(cumulative),
            shadow,
            cache,
            guards,
            sticky,
            header,
            same,
            switch,
        )

    async def _refresh_guards(self, served: Served) -> None:
        """Swap in the guards of versions whose reference profile appeared or changed."""
        assert served.guards is not None
        versions = [m.version for m in served.models]
        fresh = await asyncio.to_thread(load_guards, self.ws, versions)
        if any(_stamp(fresh[k]) != _stamp(g) for k, g in served.guards.items()):
            current = self.state.served.get(served.endpoint.name)
            if current is served:
                self.state.served[served.endpoint.name] = replace(served, guards=fresh)

    def _load(self, version: ModelVersion, runtime: str) -> Predictor:
        if runtime == "onnx":  # loaded (and checked) before, evicted since: onnx_reloads.py
            onnx_file = self._onnx_files.get((version.model, version.version))
            again = self._onnx_reloads.again(version, onnx_file)
            if again is not None:
                return again
        # Checked once per load, never per request: the signature, then each file against
        # its signed digest (governance/signing.py); a refusal keeps the old versions serving.
        record = self._signatures.pop(version.id, None)  # None: read now (a reload)
        native = self.ws.signing.local_copy(version, record)
        if runtime == "onnx":
            if onnx_file is None:
                recorded = self.ws.registry.get_runtime(version.model, version.version, "onnx")
                onnx_file = None if recorded is None else recorded.artifact_digest
            if onnx_file is not None:
                return self._onnx_reloads.first(
                    version,
                    onnx_file,
                    self.ws.artifacts.get_bytes(onnx_file),
                    read_manifest(native),
                )
        return load_model(native, trusted=self.ws.settings.trust_pickled_models)

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if self.metrics_port is not None and _port(scope) == self.metrics_port:
                await self._metrics_only(scope, receive, send)
                return
            route = hot_route(path)
            if route is not None:
                if scope["method"] != "POST":
                    problem = MethodNotAllowed(f"{path} answers POST only, not {scope['method']}")
                    await problem_response(problem, route[0] or "-")(scope, receive, send)
                    return
                reply = await self.infer(route, dict(scope["headers"]), receive=receive)
                if reply is not None:
                    await send_reply(send, reply, self.worker)
                return
            if _is_gateway_path(path) or self.control_plane is None:
                await self._route(scope, receive, send)
                return
            await self.control_plane(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif self.control_plane is not None:
            await self.control_plane(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The routes other than predictions; an unknown path or a wrong method is a
        problem+json answer too (with "app" in the scope, Starlette raises them)."""
        from starlette.exceptions import HTTPException

        scope["app"] = self
        try:
            await self.router(scope, receive, send)
        except HTTPException as exc:
            path, method = scope["path"], scope["method"]
            problem: ModelyardError
            if exc.status_code == 405:
                allowed = (exc.headers or {}).get("Allow", "GET")
                problem = MethodNotAllowed(f"{path} answers {allowed} only, not {method}", allowed)
            else:
                problem = NotFound(
                    f"no route {method} {path}; the gateway serves /v2/models/NAME/infer, "
                    "/endpoints/NAME/invocations, /v2/models/NAME[/config|/ready], /v2/health/*, "
                    "/metrics (see docs/serving.md)"
                )
            await problem_response(problem, None)(scope, receive, send)

    async def _metrics_only(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request to ``--metrics-address``: ``GET /metrics`` without a token, nothing else."""
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            response = metrics_response(self)
        else:
            response = problem_response(
                NotFound(f"this address serves GET /metrics only, not {scope['path']}"), None
            )
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def infer(
        self,
        route: HotRoute,
        headers: Mapping[bytes, bytes],
        body: bytes | None = None,
        *,
        receive: Receive | None = None,
    ) -> Reply | None:
        """Answer one prediction request, whatever carried it (ASGI or :mod:`.http_protocol`).

        The body is given whole, or read from ASGI's ``receive`` once a model is chosen
        (None: the client went away before sending all of it; nobody is left to answer).
        Failures are answered too, as problem+json; this never raises.
        """
        start = time.perf_counter()  # a wait for the endpoint's load counts in its timeout
        if self.state.loading:  # (empty once start-up has loaded every endpoint)
            await self._wait_for_load(route, headers)
        name, protocol, version = route
        given = headers.get(b"x-request-id")
        request_id = given.decode("latin-1") if given else ""
        bad_id = bool(request_id) and not valid_request_id(request_id)
        if bad_id or not request_id:
            request_id = new_request_id()
        served = None
        loaded: LoadedModel | None = None
        switched: Switched | None = None
        label_name = name or "-"
        try:
            if bad_id:
                raise BadRequest(BAD_REQUEST_ID)
            tokens = self.tokens
            caller = None
            if tokens is not None:
                caller = await tokens.identify(headers.get(b"authorization"))
            target = name if name is not None else self._bare_target(headers, caller)
            label_name = target
            if caller is not None:
                caller.require_predict(target)
            served = self.served(target)
            admission = self.limits.admit(target, caller)  # 429 over a rate limit or quota
            parsed = None
            if version is not None:
                loaded = served.by_version(version)
            elif served.switch is not None:
                if body is None:  # the deadline may be in the body (OIP parameters)
                    assert receive is not None
                    body = await read_body(receive, self.max_body, headers)
                    if body is None:
                        self.metrics.errors.inc(label_name, "client_disconnected")
                        return None
                    served = self.served(target)  # it may have been replaced meanwhile
                loaded, parsed, switched = self._switch(
                    served, protocol, headers, body, request_id, start
                )
            elif served.sticky is None:
                loaded = served.pick()
            else:
                if body is None and served.sticky_header is None:  # a field: body first
                    assert receive is not None
                    body = await read_body(receive, self.max_body, headers)
                    if body is None:
                        self.metrics.errors.inc(label_name, "client_disconnected")
                        return None
                    served = self.served(target)  # it may have been replaced meanwhile
                loaded, parsed = self._pick_sticky(served, protocol, headers, body, request_id)
            if loaded is None:
                versions = ", ".join(str(m.version.version) for m in served.models)
                raise NotFound(
                    f"endpoint {label_name!r} does not serve version {version}; "
                    f"it serves {versions}"
                )
            if not loaded.ready:  # evicted to stay within the memory budget: load it again
                loaded = await self._reload(served, loaded)
            # enter() does not suspend, so nothing can retire the model between the pick and
            # this point; from here on a hot swap waits for this request to finish.
            loaded.enter()
            try:
                if body is None:
                    assert receive is not None
                    body = await read_body(receive, self.max_body, headers)
                    if body is None:
                        self.metrics.errors.inc(label_name, "client_disconnected")
                        return None
                payload, tag, request_id, extra = await self._answer(
                    served,
                    loaded,
                    protocol,
                    body,
                    headers,
                    request_id,
                    start,
                    admission,
                    parsed,
                    switched,
                )
            finally:
                loaded.exit()
        except ModelyardError as exc:
            return self._problem(
                exc, label_name, served, loaded, protocol, start, request_id, switched, headers
            )
        except Exception as exc:  # a bug of ours: still a problem+json answer, and logged
            log.exception("endpoint %s: request %s failed", label_name, request_id)
            failure = InternalError(f"the gateway failed to answer: {type(exc).__name__}: {exc}")
            return self._problem(
                failure, label_name, served, loaded, protocol, start, request_id, switched, headers
            )
        self.metrics.observe(
            label_name, loaded.version_label, protocol, 200, time.perf_counter() - start
        )
        return Reply(200, payload, JSON, request_id, loaded.tag, tag, extra)

    async def _reload(self, served: Served, evicted: LoadedModel) -> LoadedModel:
        """Load an evicted model on demand and put it back in its endpoint's snapshot."""
        batching = served.endpoint.batching.model_dump()
        fresh = await self.pool.get(evicted.version, runtime=evicted.key[2], batching=batching)
        current = self.state.served.get(served.endpoint.name)
        if current is not None:  # swap in the reloaded model; others keep their state
            models = tuple(fresh if m.key == fresh.key else m for m in current.models)
            shadow = fresh if current.shadow and current.shadow.key == fresh.key else current.shadow
            self.state.served[served.endpoint.name] = replace(current, models=models, shadow=shadow)
        return fresh

    async def _answer(
        self,
        served: Served,
        loaded: LoadedModel,
        protocol: str,
        body: bytes,
        headers: Mapping[bytes, bytes],
        request_id: str,
        start: float,
        admission: Admission,
        parsed: Parsed | None = None,
        switched: Switched | None = None,
    ) -> tuple[bytes, bytes, str, tuple[tuple[bytes, bytes], ...]]:
        """Decode (unless ``parsed`` already), guard, predict (or hit the cache), encode and
        log one request (``switched``: admitted to a variant by its deadline).

        Returns the response body, the cache header's value, the request id (an OIP
        request may carry its own) and the guard's headers.
        """
        endpoint = served.endpoint
        model = loaded.version.model
        if parsed is None:
            parsed = self._parse(loaded, protocol, body, headers, request_id)
        inputs, rows, request, request_id = parsed
        deadline_at = switched is None and (
            endpoint.policy.slo_ms is not None
            or DEADLINE_HEADER in headers
            or (request is not None and bool(request.parameters))
        )
        scores = None  # each row's novelty, with a guard
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if served.guards is not None:  # before the cache: a rejected row is never answered
            guard = served.guards.get((model, loaded.version.version))
            scores, extra = apply_guard(endpoint.guard, guard, inputs, rows)
        # The cache saves the prediction, not the parsing: every answered request, cached or
        # not, is validated and reaches the prediction log that monitoring reads.
        cache = served.cache
        hit = None
        if cache is not None:
            # a switched answer names its variant: not the same payload as a direct one
            direct = switched is None or switched.position < 0
            key = _cache_key(loaded, protocol, body, not direct)
            hit = cache.get(key)
            self.metrics.cache.inc(endpoint.name, "hit" if hit else "miss")
        if deadline_at:  # a deadline without variants: is the model in time? (a hit is)
            switched = self._deadline(served, loaded, headers, request, rows, start, hit is None)
        if hit is not None:
            payload, outputs = hit
        else:
            timeout_ms = request_timeout_ms(endpoint.timeout_ms, headers)
            outputs = await self._predict(loaded, inputs, rows, timeout_ms)
            if request is not None:
                payload = oip.encode_infer_response(
                    model=endpoint.name,
                    version=loaded.version_label,
                    outputs=outputs,
                    request_id=request.id,
                    requested=request.outputs,
                    parameters=(
                        {"variant": switched.variant, "model": model}
                        if switched is not None and switched.position >= 0
                        else None
                    ),
                )
            else:
                payload = mlflow_protocol.encode_predictions(outputs)
            if cache is not None:
                cache[key] = (payload, outputs)
        admission.charge(rows)  # answered: the rows count against its quotas
        seconds = time.perf_counter() - start
        variant = deadline = None
        if switched is not None:
            deadline = switched.deadline_ms
            if switched.position >= 0 and served.switch is not None:
                variant = switched.variant
                # a cached answer teaches nothing about latency
                error = math.nan if hit else seconds - switched.admitted - switched.predicted
                met = seconds * 1000 <= deadline
                served.switch.observe(switched.position, error, met, switched.predicted)
                extra += ((VARIANT_HEADER, variant.encode()),)
        self.log.log(
            endpoint=endpoint.name,
            model=model,
            version=loaded.version.version,
            request_id=request_id,
            inputs=inputs,
            outputs=outputs,
            rows=rows,
            latency_ms=seconds * 1000,
            guard=scores,
            caller=admission.caller,
            variant=variant,
            deadline_ms=deadline,
        )
        if served.shadow is not None and hit is None:
            self._mirror(served, served.shadow, inputs, rows, request_id)
        if cache is None:
            return payload, b"", request_id, extra
        return payload, (b"hit" if hit else b"miss"), request_id, extra

    @staticmethod
    def _parse(
        loaded: LoadedModel,
        protocol: str,
        body: bytes,
        headers: Mapping[bytes, bytes],
        request_id: str,
    ) -> Parsed:
        """Decode and validate a request body against ``loaded``'s signature."""
        model = loaded.version.model
        signature = loaded.predictor.signature
        if protocol != "v2":
            inputs, rows = mlflow_protocol.parse_invocations(
                body, invocations_content_type(headers, model), signature, model=model
            )
            return inputs, rows, None, request_id
        binary = headers.get(b"inference-header-content-length")
        if binary is None:
            require_json(headers, model)
        request = oip.parse_infer_request(
            body,
            signature,
            model=model,
            header_length=None if binary is None else binary_header_length(binary, model),
        )
        if request.id and not valid_request_id(request.id):
            raise BadRequest(
                f"{model}: 'id' must be at most 128 printable ASCII characters (it comes "
                "back in the X-Request-Id header); leave it out and the gateway makes one"
            )
        return request.inputs, request.rows, request, request.id or request_id

    def _pick_sticky(
        self,
        served: Served,
        protocol: str,
        headers: Mapping[bytes, bytes],
        body: bytes | None,
        request_id: str,
    ) -> tuple[LoadedModel, Parsed | None]:
        """The route a request's sticky key falls on (see :class:`StickyKey`).

        A request without the key (no such header, an empty one, no such input, a
        non-scalar value, or a body that does not parse) gets a random pick. A field's key
        is read from the body parsed with the first route's signature; that parse is kept
        when the chosen version has the same signature, else the body is parsed again.
        """
        sticky = served.sticky
        if sticky is None:  # the endpoint changed while its body was read
            return served.pick(), None
        if served.sticky_header is not None:
            return served.pick(headers.get(served.sticky_header) or None), None
        assert body is not None and sticky.field is not None
        first = served.models[0]
        try:
            parsed = self._parse(first, protocol, body, headers, request_id)
        except ModelyardError:  # the chosen version's own parse says what is wrong
            return served.pick(), None
        route = served.route_of(sticky_value(parsed[0], sticky.field))
        return served.models[route], (parsed if served.same_signature[route] else None)

    @staticmethod
    def _deadline(
        served: Served,
        loaded: LoadedModel,
        headers: Mapping[bytes, bytes],
        request: oip.InferRequest | None,
        rows: int,
        start: float,
        check: bool,
    ) -> Switched | None:
        """A request with a deadline on an endpoint without variants (or one sent to a
        version by number): with ``check``, :class:`DeadlineShed` if ``loaded`` is predicted
        to answer it late (see serving/switching.py)."""
        deadline = deadline_ms(
            served.endpoint.policy.slo_ms,
            headers,
            request.parameters if request is not None else None,
            served.endpoint.name,
        )
        if deadline is None:
            return None
        admitted = time.perf_counter() - start
        if not check:
            return Switched(-1, "", math.nan, deadline, admitted)
        return check_deadline(served, loaded, rows, deadline, admitted)

    def _switch(
        self,
        served: Served,
        protocol: str,
        headers: Mapping[bytes, bytes],
        body: bytes,
        request_id: str,
        start: float,
    ) -> tuple[LoadedModel, Parsed | None, Switched | None]:
        """The variant a request goes to (see serving/switching.py): the best one predicted
        to answer within its deadline. Raises :class:`DeadlineShed` when none is.

        The body is parsed with the first variant's signature (the deadline may be in OIP's
        parameters); the parse is kept when the chosen variant has the same signature.
        """
        first = served.models[0]
        parsed = self._parse(first, protocol, body, headers, request_id)
        request = parsed[2]
        deadline = deadline_ms(
            served.endpoint.policy.slo_ms,
            headers,
            request.parameters if request is not None else None,
            served.endpoint.name,
        )
        if deadline is None or served.switch is None:  # it changed while the body was read
            return served.pick(), parsed if len(served.models) == 1 else None, None
        cached = None
        if served.cache is not None:  # a cached answer (the best variant's) needs no time
            cached = partial(_cached, served.cache, _body_digest(protocol, body, True))
        loaded, switched = admit(served, parsed[1], deadline, time.perf_counter() - start, cached)
        index = served.models.index(loaded)
        same = loaded is first or (bool(served.same_signature) and served.same_signature[index])
        return loaded, parsed if same else None, switched

    async def _predict(
        self, loaded: LoadedModel, inputs: Mapping[str, Any], rows: int, timeout_ms: int
    ) -> dict[str, Any]:
        timeout = timeout_ms / 1000
        start = time.perf_counter()
        try:
            # The batcher sets a timer only if the request has to wait for a batch; a request
            # predicted inline cannot be interrupted, so its duration is checked afterwards.
            outputs = await loaded.batcher.submit(inputs, rows, timeout)
        except TimeoutError:
            raise self._timed_out(loaded, timeout_ms) from None
        except ModelyardError:
            raise
        except Exception as exc:
            model = f"{loaded.version.model} v{loaded.version.version}"
            log.warning("%s failed to predict: %s", model, exc)
            raise ModelFailed(f"{model} failed to predict: {type(exc).__name__}: {exc}") from None
        if time.perf_counter() - start > timeout:
            raise self._timed_out(loaded, timeout_ms)
        return outputs

    @staticmethod
    def _timed_out(loaded: LoadedModel, timeout_ms: int) -> NotReady:
        return NotReady(
            f"{loaded.version.model} v{loaded.version.version} did not answer within "
            f"{timeout_ms} ms; raise the endpoint's timeout_ms or lower the load"
        )

    def _mirror(
        self, served: Served, shadow: LoadedModel, inputs: Mapping[str, Any], rows: int, rid: str
    ) -> None:
        """Send a copy to the shadow version; its answer is logged, never returned."""
        labels = (served.endpoint.name, shadow.version_label)
        if self._shadow_in_flight >= MAX_SHADOW_IN_FLIGHT:
            self.metrics.shadow.inc(*labels, "dropped")
            return
        self._shadow_in_flight += 1

        async def run() -> None:
            start = time.perf_counter()
            try:
                async with shadow.use():
                    outputs = await self._predict(shadow, inputs, rows, served.endpoint.timeout_ms)
                self.log.log(
                    endpoint=served.endpoint.name,
                    model=shadow.version.model,
                    version=shadow.version.version,
                    request_id=rid,
                    inputs=inputs,
                    outputs=outputs,
                    rows=rows,
                    latency_ms=(time.perf_counter() - start) * 1000,
                    shadow=True,
                )
                self.metrics.shadow.inc(*labels, "ok")
            except Exception:
                self.metrics.shadow.inc(*labels, "failed")
            finally:
                self._shadow_in_flight -= 1

        self._background(run())

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bare_target(self, headers: Mapping[bytes, bytes], caller: Identity | None) -> str:
        """The endpoint of MLflow's bare ``/invocations``: the X-Modelyard-Endpoint header, or
        the only endpoint there is. Loaded or not: the answer must not depend on which
        endpoints happen to be loaded. Without either, the answer names the endpoints the
        ``caller`` may predict on (None: auth off, every one)."""
        chosen = headers.get(b"x-modelyard-endpoint")
        if chosen is not None:
            try:
                return chosen.decode("ascii")
            except UnicodeDecodeError:
                raise BadRequest(
                    "X-Modelyard-Endpoint must be an endpoint name (ASCII letters, digits, "
                    "'.', '_', '-')"
                ) from None
        state = self.state
        known = sorted(set(state.served) | set(state.not_ready) | set(state.loading))
        if len(known) == 1:
            return known[0]
        if caller is not None:
            known = [name for name in known if caller.may_predict(name)]
        raise NotFound(
            "/invocations needs an endpoint: POST to /endpoints/NAME/invocations or send the "
            "header X-Modelyard-Endpoint "
            + (f"(endpoints: {', '.join(known)})" if known else "(there are no endpoints yet)")
        )

    async def caller(self, request: Request) -> Identity:
        """Who sent a request to a route other than the predictions' (auth on)."""
        tokens = self.tokens
        assert tokens is not None
        return await tokens.identify(dict(request.scope["headers"]).get(b"authorization"))

    async def allow(self, request: Request, endpoint: str | None) -> None:
        """Refuse a metadata request (auth on) without a token that may predict on
        ``endpoint`` (None: any valid token)."""
        if self.tokens is not None:
            caller = await self.caller(request)
            if endpoint is not None:
                caller.require_predict(endpoint)

    def metric_label(self, name: str | None) -> str:
        """``name`` as a metric label: an endpoint the gateway knows, else ``unknown``."""
        state = self.state
        if name is not None and (
            name in state.served or name in state.not_ready or name in state.loading
        ):
            return name
        return UNKNOWN

    def served(self, name: str) -> Served:
        served = self.state.served
        found = served.get(name)
        if found is None:
            if name in self.state.not_ready:
                raise NotReady(f"endpoint {name!r} is not ready: {self.state.not_ready[name]}")
            if name in self.state.loading:
                raise StillLoading(
                    f"endpoint {name!r} is still loading its models (the gateway has just "
                    f"started, or the endpoint is new); retry in {LOADING_RETRY_AFTER} s, or "
                    f"wait for GET /v2/models/{name}/ready to answer 200"
                )
            raise NotFound(f"no endpoint {name!r}; create it with `modelyard endpoints create`")
        return found

    def _problem(
        self,
        exc: ModelyardError,
        endpoint: str,
        served: Served | None,
        loaded: LoadedModel | None,
        protocol: str,
        start: float,
        request_id: str,
        switched: Switched | None = None,
        headers: Mapping[bytes, bytes] | None = None,
    ) -> Reply:
        """Answer a failed request with problem+json, count it, and log it when its endpoint
        is known (an unknown endpoint's 404 has no log to go to) and the caller was allowed
        to ask (refused tokens are not the endpoint's traffic). A request with a deadline
        (``switched``: admitted to a variant; else the SLO's or the header's) missed it."""
        problem = exc.problem()
        problem["endpoint"] = endpoint
        if protocol == "v2":
            problem["error"] = exc.detail  # the member OIP clients (tritonclient) read
        if loaded is not None:
            problem["model"] = loaded.version.model
            problem["version"] = loaded.version.version
        seconds = time.perf_counter() - start
        reason = exc.title.lower().replace(" ", "_")
        label = self.metric_label(endpoint)
        self.metrics.errors.inc(label, reason)
        if isinstance(exc, Overloaded):
            self.metrics.shed.inc(label, exc.reason)
        version = loaded.version_label if loaded is not None else "-"
        self.metrics.observe(label, version, protocol, exc.status, seconds)
        refused = exc.status in (401, 403, 429)  # a caller's refusal, not the endpoint's
        known = endpoint in self.state.not_ready or endpoint in self.state.loading
        if not refused and (served is not None or known):
            if loaded is not None:
                model, number = loaded.version.model, loaded.version.version
            else:  # no version chosen yet
                model, number = self._model_of(endpoint, served), 0
            deadline, variant = _failed_deadline(exc, served, switched, headers)
            self.log.log_error(
                endpoint=endpoint,
                model=model,
                version=number,
                request_id=request_id,
                status=exc.status,
                latency_ms=seconds * 1000,
                variant=variant,
                deadline_ms=deadline,
            )
        tag = loaded.tag if loaded is not None else b""
        body = orjson.dumps(problem)
        extra = extra_headers(exc)
        if isinstance(exc, LimitExceeded):
            extra += exc.headers
        return Reply(exc.status, body, PROBLEM, request_id, tag, b"", extra)

    def _model_of(self, endpoint: str, served: Served | None) -> str:
        """The model an endpoint serves (its first route's), for a request that failed before
        a version was chosen."""
        if served is not None:
            return served.models[0].version.model
        load = self.state.loading.get(endpoint)
        if load is not None:
            return load.plan.routes[0][0].model
        return self.state.not_ready_models.get(endpoint, "")

    def fast_path_off(self) -> str | None:
        """Why ordinary prediction requests are not answered without ASGI (see
        :mod:`.http_protocol`); None when they are."""
        if self.http_config is None:
            return "the HTTP protocol is not the gateway's (GatewayHttpProtocol)"
        from modelyard.serving.http_protocol import fast_path_off

        return fast_path_off(self.http_config)


def _versions(plan: Plan) -> list[ModelVersion]:
    """The versions a plan serves, its shadow's too."""
    found = [version for version, _, _ in plan.routes]
    if plan.shadow is not None:
        found.append(plan.shadow[0])
    return found


def _wait_seconds(endpoint: Endpoint, headers: Mapping[bytes, bytes]) -> float:
    """How long a request may wait for its endpoint to load: its timeout, or its deadline
    when that is shorter (the SLO's or X-Modelyard-Deadline-Ms)."""
    wait = float(request_timeout_ms(endpoint.timeout_ms, headers))
    deadline = deadline_ms(endpoint.policy.slo_ms, headers, None, endpoint.name)
    if deadline is not None:
        wait = min(wait, deadline)
    return wait / 1000


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Say why the start-up's sync failed (it is not awaited once the gateway listens)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the endpoints failed", exc_info=task.exception())


def _active_rollouts(ws: Workspace) -> list[Rollout]:
    """The running rollouts and those ended in the last :data:`ENDED_ROLLOUT_SECONDS`, each
    with its latest analysis (blocking: reads the store)."""
    return ws.rollouts.recent(ENDED_ROLLOUT_SECONDS)


def _same(current: Served, plan: Plan) -> bool:
    if current.endpoint != plan.endpoint:
        return False
    wanted = [(v.model, v.version, rt) for v, _, rt in plan.routes]
    if [m.key for m in current.models] != wanted:
        return False
    shadow = (
        None
        if plan.shadow is None
        else (plan.shadow[0].model, plan.shadow[0].version, plan.shadow[1])
    )
    return (current.shadow.key if current.shadow else None) == shadow


def _stamp(guard: Guard | Inactive) -> Any:
    return guard.stamp if isinstance(guard, Guard) else guard.reason


def _port(scope: Scope) -> int | None:
    server = scope.get("server")
    return server[1] if server else None


def _is_gateway_path(path: str) -> bool:
    return path.startswith("/v2") or path in ("/metrics", "/ping", "/health")


def _failed_deadline(
    exc: ModelyardError,
    served: Served | None,
    switched: Switched | None,
    headers: Mapping[bytes, bytes] | None,
) -> tuple[float | None, str | None]:
    """The deadline (ms) and variant a failed request is logged with; one admitted to a
    variant counts as a miss of that variant. (A deadline given only in OIP's parameters of
    a request to an endpoint without variants is not known here.)"""
    if isinstance(exc, DeadlineShed):
        return exc.deadline_ms, None
    if exc.status < 500 or served is None:  # the caller's error (monitoring leaves it out)
        return None, None
    if switched is not None:
        if switched.position >= 0 and served.switch is not None:
            served.switch.observe(switched.position, math.nan, False)
            return switched.deadline_ms, switched.variant
        return switched.deadline_ms, None
    if headers is None:
        return None, None
    try:
        return deadline_ms(served.endpoint.policy.slo_ms, headers, None, ""), None
    except BadRequest:
        return None, None


def _cache_key(loaded: LoadedModel, protocol: str, body: bytes, switched: bool) -> bytes:
    return _variant_key(loaded, _body_digest(protocol, body, switched))


def _cached(cache: TTLCache[bytes, Any], digest: bytes, loaded: LoadedModel) -> bool:
    return _variant_key(loaded, digest) in cache


def _body_digest(protocol: str, body: bytes, switched: bool) -> bytes:
    kind = "|s|" if switched else "|"
    return f"|{protocol}{kind}".encode() + hashlib.blake2b(body, digest_size=16).digest()


def _same_answers(endpoint: Endpoint, models: list[LoadedModel]) -> None:
    """Refuse variants that do not take the same inputs and give the same outputs (an alias
    one follows may have moved to another signature since the endpoint was checked): the
    answer to a request would change shape with the load."""
    first = models[0].predictor.signature
    named = f"{endpoint.policy.variants[0].name} ({models[0].tag.decode()})"
    for variant, loaded in zip(endpoint.policy.variants, models, strict=True):
        signature = loaded.predictor.signature
        for what in ("inputs", "outputs"):
            mine = sorted(spec.name for spec in getattr(signature, what))
            theirs = sorted(spec.name for spec in getattr(first, what))
            if mine != theirs:
                raise InvalidInput(
                    f"variant {variant.name} ({loaded.tag.decode()}) has {what} "
                    f"{', '.join(mine) or '(none)'}, variant {named} has "
                    f"{', '.join(theirs) or '(none)'}: the variants of an endpoint answer "
                    "the same requests the same way; point the variant at a version that does"
                )


def _variant_key(loaded: LoadedModel, digest: bytes) -> bytes:
    return str(loaded.key).encode() + digest
