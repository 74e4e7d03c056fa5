"""The model pool: loads, warms, pins and evicts models within a memory budget.

``await pool.get(version, runtime=...)`` returns a :class:`LoadedModel` that is loaded *and
warmed up*. Concurrent callers for the same key (model name, version number, runtime) await
one load (single flight); a load that fails reaches every waiting caller, and the next
``get`` tries again.

Memory. A model's size is estimated before loading as the sum of its files' sizes
(``manifest["files"][*]["size"]``) times :data:`SIZE_FACTOR` (3): a deserialised model
takes more memory than its files (Python objects for sklearn trees, ONNX Runtime keeping the
serialised and the optimised graph plus its arena). A loader that knows better reports it as
an integer ``size_bytes`` (or ``memory_bytes``) attribute on the predictor it returns. When
a new model would exceed ``memory_budget_bytes``, the least recently used unpinned models
are evicted: idle ones first, then busy ones. An evicted model leaves the lookup at once
(new requests load afresh) but is freed only when its in-flight requests have finished, so
a request in progress always completes. When nothing can be evicted the model is loaded
anyway (an ``over_budget`` event is counted and logged): failing requests is worse than
using more memory than planned.

Hot swap: ``await pool.retire(key)`` drops a model from the lookup, waits for its in-flight
requests, closes its batcher and frees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from modelyard.errors import ModelyardError
from modelyard.formats.base import Predictor
from modelyard.registry.entities import ModelVersion
from modelyard.serving.batcher import Batcher, Inputs, Outputs
from modelyard.serving.validation import Columns, table_columns

log = logging.getLogger("modelyard.serving")

Key = tuple[str, int, str]
"""(model name, version number, runtime)."""

SIZE_FACTOR = 3
"""In-memory size of a loaded model, as a multiple of the size of its files."""

Loader = Callable[[ModelVersion, str], Predictor]


class ModelUnloaded(ModelyardError):
    """The model was evicted or retired before the request started; get it again."""

    status = 503
    title = "Model unavailable"


class _InFlight:
    """``async with loaded.use():`` — counts one in-flight request (allocation free)."""

    __slots__ = ("_model",)

    def __init__(self, model: LoadedModel) -> None:
        self._model = model

    async def __aenter__(self) -> LoadedModel:
        model = self._model
        model.enter()
        return model

    async def __aexit__(self, *exc_info: object) -> None:
        self._model.exit()


class LoadedModel:
    """A loaded, warmed-up model and its batcher, as handed out by :class:`ModelPool`."""

    def __init__(
        self,
        key: Key,
        version: ModelVersion,
        predictor: Predictor,
        batcher: Batcher,
        *,
        load_seconds: float,
        warm_seconds: float,
        size_bytes: int,
        estimated: bool,
    ) -> None:
        self.key = key
        self.version = version
        self.predictor = predictor
        self.batcher = batcher
        self.load_seconds = load_seconds
        self.warm_seconds = warm_seconds
        self.size_bytes = size_bytes
        self.size_estimated = estimated
        self.in_flight = 0
        self.ready = True
        """False once the model has left the pool (evicted or retired)."""
        self.freed = False
        self.loaded_at = time.time()
        self.last_used = self.loaded_at
        self.requests = 0
        self.version_label = str(version.version)
        """The version number as the metrics' ``version`` label."""
        self.tag = f"{version.model}/{version.version}".encode()
        """``model/version``: the ``X-Modelyard-Version`` header of its answers."""
        self._use = _InFlight(self)
        self._drained: asyncio.Event | None = None

    @property
    def name(self) -> str:
        """``model:version:runtime``."""
        return f"{self.key[0]}:{self.key[1]}:{self.key[2]}"

    def use(self) -> _InFlight:
        """``async with loaded.use():`` while a request runs on this model."""
        return self._use

    def enter(self) -> None:
        """Count one request in flight (:class:`ModelUnloaded` once the model is freed).

        The synchronous form of ``use()``: call :meth:`exit` in a ``finally``.
        """
        if self.freed:
            raise ModelUnloaded(
                f"model {self.name} was unloaded before the request started; retry it",
                model=self.name,
            )
        self.in_flight += 1

    def exit(self) -> None:
        """The request counted by :meth:`enter` has finished."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._drained is not None:
            self._drained.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        while self.in_flight:
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.name}, size_bytes={self.size_bytes}, "
            f"in_flight={self.in_flight}, ready={self.ready})"
        )


class ModelPool:
    """Loaded models by (model, version, runtime); see the module doc for the policy."""

    def __init__(
        self,
        load: Loader,
        *,
        memory_budget_bytes: int | None = None,
        batcher_options: dict[str, Any] | None = None,
    ) -> None:
        self._load = load
        self.memory_budget_bytes = memory_budget_bytes
        self.batcher_options = dict(batcher_options or {})
        self._models: OrderedDict[Key, LoadedModel] = OrderedDict()  # LRU first
        self._loading: dict[Key, asyncio.Task[LoadedModel]] = {}
        self._reserved: dict[Key, int] = {}  # estimates of the loads in progress
        self._draining: dict[int, LoadedModel] = {}  # evicted, waiting for in-flight
        self._pinned: set[Key] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.events: Counter[str] = Counter()
        """Counts of loads, load_failures, evictions, over_budget, retires and misses."""

    # -- lookup and loading -------------------------------------------------------------------

    async def get(
        self,
        version: ModelVersion,
        *,
        runtime: str = "native",
        batching: dict[str, Any] | None = None,
    ) -> LoadedModel:
        """The loaded, warmed-up model for ``version`` on ``runtime``; loads it if needed.

        ``batching`` overrides the pool's batcher options for this model when it is loaded.
        """
        key: Key = (version.model, version.version, runtime)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            loaded.last_used = time.time()
            return loaded
        self.events["misses"] += 1
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._load_model(key, version, runtime, batching), name=f"load:{key}"
            )
            task.add_done_callback(_retrieve)
            self._loading[key] = task
        # Shielded: a caller that gives up must not cancel the load others are waiting for.
        return await asyncio.shield(task)

    def lookup(self, key: Key) -> LoadedModel | None:
        """The loaded model for ``key``, if it is loaded (no LRU touch, no load)."""
        return self._models.get(key)

    async def _load_model(
        self,
        key: Key,
        version: ModelVersion,
        runtime: str,
        batching: dict[str, Any] | None,
    ) -> LoadedModel:
        estimate = estimate_size(version)
        try:
            self._make_room(estimate, key)
            self._reserved[key] = estimate
            loop = asyncio.get_running_loop()
            predictor, load_seconds, warm_seconds, call_seconds = await loop.run_in_executor(
                None, self._load_and_warm, version, runtime
            )
            reported = _reported_size(predictor)
            size = reported if reported is not None else estimate
            options = {**self.batcher_options, **(batching or {})}
            options.setdefault("name", f"{key[0]}:{key[1]}:{key[2]}")
            # So that the batcher knows from the first request whether to predict inline.
            options.setdefault("expected_predict_seconds", call_seconds)
            batcher = Batcher(_predict_function(predictor), **options)
        except BaseException as exc:
            self.events["load_failures"] += 1
            log.debug("loading model %s:%s (%s) failed: %s", key[0], key[1], runtime, exc)
            raise
        finally:
            self._reserved.pop(key, None)
            self._loading.pop(key, None)
        loaded = LoadedModel(
            key,
            version,
            predictor,
            batcher,
            load_seconds=load_seconds,
            warm_seconds=warm_seconds,
            size_bytes=size,
            estimated=reported is None,
        )
        self._models[key] = loaded
        self.events["loads"] += 1
        if size > estimate:  # the loader knows better: make room for the difference too
            self._make_room(0, key)
        log.info(
            "loaded model %s in %.3fs, warmed up in %.3fs, ~%d bytes",
            loaded.name,
            load_seconds,
            warm_seconds,
            size,
        )
        return loaded

    def _load_and_warm(
        self, version: ModelVersion, runtime: str
    ) -> tuple[Predictor, float, float, float]:
        """Runs in a thread: load (download included), then warm up.

        Returns the predictor, the load and warm-up seconds, and the CPU seconds of one
        warm call on a single row in the form the gateway passes it (a first cost estimate
        for the batcher; the warm-up's own calls include one-off costs).
        """
        start = time.perf_counter()
        predictor = self._load(version, runtime)
        load_seconds = time.perf_counter() - start
        start = time.perf_counter()
        reported = predictor.warm_up()
        measured = time.perf_counter() - start
        warm_seconds = float(reported) if isinstance(reported, int | float) else measured
        signature = getattr(predictor, "signature", None)
        names = None if signature is None else table_columns(signature)
        if names is None:
            return predictor, load_seconds, warm_seconds, warm_seconds / 3
        predict = _predict_function(predictor)
        row = Columns(names, np.zeros((len(names), 1)))
        best = float("inf")
        try:
            for _ in range(3):
                cpu = time.thread_time()
                predict(row)
                best = min(best, time.thread_time() - cpu)
        except Exception:  # a model may refuse zeros; the warm-up's estimate will do
            best = warm_seconds / 3
        return predictor, load_seconds, warm_seconds, best

    # -- memory -------------------------------------------------------------------------------

    @property
    def memory_used_bytes(self) -> int:
        """Bytes of the models in the lookup plus the loads in progress (estimates)."""
        return sum(m.size_bytes for m in self._models.values()) + sum(self._reserved.values())

    @property
    def memory_draining_bytes(self) -> int:
        """Bytes of evicted models still finishing their in-flight requests."""
        return sum(m.size_bytes for m in self._draining.values())

    def _make_room(self, incoming: int, loading: Key) -> None:
        """Evict LRU unpinned models until ``incoming`` more bytes fit in the budget."""
        budget = self.memory_budget_bytes
        if budget is None:
            return
        excess = self.memory_used_bytes + incoming - budget
        if excess <= 0:
            return
        candidates = [
            model
            for key, model in self._models.items()
            if key not in self._pinned and key != loading
        ]
        # Idle models first (freed at once), then busy ones (freed when their requests end).
        for busy in (False, True):
            for model in candidates:
                if excess <= 0:
                    break
                if (model.in_flight > 0) is busy and model.key in self._models:
                    self._evict(model)
                    excess -= model.size_bytes
        if excess > 0:
            self.events["over_budget"] += 1
            log.warning(
                "model %s:%s does not fit the memory budget of %d bytes (over by ~%d bytes) "
                "and nothing more can be evicted (pinned or loading); loading it anyway",
                loading[0],
                loading[1],
                budget,
                excess,
            )

    def _evict(self, model: LoadedModel) -> None:
        del self._models[model.key]
        model.ready = False
        self.events["evictions"] += 1
        log.info("evicting model %s (in flight: %d)", model.name, model.in_flight)
        self._spawn(self._free(model))

    async def _free(self, model: LoadedModel) -> None:
        """Wait for the model's in-flight requests, then close its batcher and let it go."""
        self._draining[id(model)] = model
        try:
            await model.wait_idle()
            await model.batcher.close()
        finally:
            self._draining.pop(id(model), None)
            model.freed = True

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- pinning, hot swap, prediction --------------------------------------------------------

    def pin(self, key: Key) -> None:
        """Never evict ``key`` (it may be pinned before it is loaded)."""
        self._pinned.add(key)

    def unpin(self, key: Key) -> None:
        self._pinned.discard(key)

    def is_pinned(self, key: Key) -> bool:
        return key in self._pinned

    async def retire(self, key: Key) -> bool:
        """Drop ``key`` from the lookup, wait for its in-flight requests, close and free it.

        A load in progress for ``key`` is awaited first. Returns whether a model was retired.
        """
        task = self._loading.get(key)
        if task is not None:
            try:
                await asyncio.shield(task)
            except Exception:
                return False
        model = self._models.pop(key, None)
        if model is None:
            return False
        model.ready = False
        self.events["retires"] += 1
        await self._free(model)
        log.info("retired model %s", model.name)
        return True

    async def predict(self, loaded: LoadedModel, inputs: Inputs, rows: int) -> Outputs:
        """Run ``inputs`` through the model's batcher while counting the request in flight."""
        loaded.requests += 1
        async with loaded.use():
            return await loaded.batcher.submit(inputs, rows)

    async def close(self) -> None:
        """Retire every model (waiting for their in-flight requests)."""
        for task in list(self._loading.values()):
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        for key in list(self._models):
            await self.retire(key)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- introspection ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def keys(self) -> list[Key]:
        """Loaded keys, least recently used first."""
        return list(self._models)

    def snapshot(self) -> list[dict[str, Any]]:
        """The loaded (and draining) models with their stats, for /metrics and the API."""
        rows = []
        for model, state in [(m, "ready") for m in self._models.values()] + [
            (m, "draining") for m in self._draining.values()
        ]:
            rows.append(
                {
                    "model": model.key[0],
                    "version": model.key[1],
                    "runtime": model.key[2],
                    "state": state,
                    "ready": model.ready,
                    "pinned": model.key in self._pinned,
                    "size_bytes": model.size_bytes,
                    "size_estimated": model.size_estimated,
                    "in_flight": model.in_flight,
                    "requests": model.requests,
                    "load_seconds": model.load_seconds,
                    "warm_seconds": model.warm_seconds,
                    "loaded_at": model.loaded_at,
                    "last_used": model.last_used,
                    "batcher": model.batcher.stats.as_dict(),
                }
            )
        return rows


def estimate_size(version: ModelVersion) -> int:
    """SIZE_FACTOR times the total size of the version's files (0 when the manifest has none)."""
    files = version.manifest.get("files") or {}
    entries = files.values() if isinstance(files, dict) else files
    total = 0
    for entry in entries:
        size = entry.get("size", 0) if isinstance(entry, dict) else getattr(entry, "size", 0)
        total += int(size or 0)
    return total * SIZE_FACTOR


def _reported_size(predictor: Predictor) -> int | None:
    for attribute in ("size_bytes", "memory_bytes"):
        value = getattr(predictor, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _predict_function(predictor: Predictor) -> Callable[[Inputs], Outputs]:
    """``predictor.predict``; for an ONNX Runtime predictor that takes the signature's columns
    as one 2-D array, a function that hands it validated :class:`Columns` as that array
    instead of a dict it would stack again (other inputs go through unchanged)."""
    onnx = sys.modules.get("modelyard.formats.onnx_runtime")
    if onnx is None or not isinstance(predictor, onnx.OnnxPredictor):  # (not imported: not one)
        return predictor.predict
    names = table_columns(predictor.signature)
    if predictor.mode != "matrix" or names is None or tuple(predictor.columns) != names:
        return predictor.predict
    predict = predictor.predict
    predict_matrix = predictor.predict_matrix
    dtype = predictor.dtype

    def predict_table(inputs: Inputs) -> Outputs:
        if type(inputs) is Columns:
            return predict_matrix(np.ascontiguousarray(inputs.matrix.T, dtype=dtype))
        return predict(inputs)

    return predict_table


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a load's exception as retrieved: the callers re-raise it, or nobody waited."""
    if not task.cancelled():
        task.exception()


__all__ = [
    "SIZE_FACTOR",
    "Key",
    "LoadedModel",
    "ModelPool",
    "ModelUnloaded",
    "estimate_size",
]
