"""The model pool: loads, warms, pins and evicts models within a memory budget.

``await pool.get(version, runtime=...)`` returns a :class:`LoadedModel` that is loaded *and
warmed up*. Concurrent callers for the same key (model name, version number, runtime) await
one load (single flight); a load that fails reaches every waiting caller, and the next
``get`` tries again.

Memory budget. ``memory_budget_bytes`` (``MODELYARD_GATEWAY_MEMORY_MB``, per process) bounds
the bytes of the models in the lookup plus those being loaded. A model counts for what its
load took, in this order:

* Reported: a loader that knows better sets an integer ``size_bytes`` (or ``memory_bytes``)
  attribute on the predictor it returns.
* Measured (Linux): the process's memory is read just before the load and again after the
  warm-up (and the timed calls), and the model is the growth. With glibc, the memory is the
  bytes malloc has handed out and not had back (``mallinfo2``, all threads): what every
  runtime keeps its weights in (numpy, ONNX Runtime, XGBoost, LightGBM, PyTorch's CPU
  allocator), counted whether the load reused memory an evicted model freed or took new
  pages. Not the RSS, nor the anonymous resident memory: a load's temporaries (ONNX
  Runtime parsing the graph, say) leave pages resident that the next load reuses, so those
  count what a load touched, nearly twice what it kept for an ONNX forest, and nothing at
  all when it reused freed pages; and the pages of the shared libraries a runtime maps for
  its first model are files, not the model. Not counted: Python's small objects (their
  arenas are not malloc's), so a model made of millions of Python objects is undercounted.
  On a Linux without glibc the anonymous resident memory (``/proc/self/statm``) grows
  instead. With a budget, loads run one at a time, in the pool's load thread and under a
  process-wide lock, so that two loads do not count each other; an evicted model is freed
  in that thread too, so that its release does not cancel out the growth of a load. What
  the rest of the process allocates meanwhile (requests to other models, the prediction
  log) counts towards the model: kilobytes. The first model of a runtime also carries the
  runtime's one-time set-up (ONNX Runtime: about 13 MB) until it is loaded again. Memory a
  model takes later (batches larger than its warm-up's) is not counted.
* Estimated: :data:`SIZE_FACTOR` times the size of the version's files. It is what a first
  load reserves while it runs (a reload reserves its last size), and the size when nothing
  could be measured (not Linux/glibc, or a growth of zero or less: noise).

Without a budget nothing depends on the sizes: loads run in parallel, and a load is measured
only when no other load or release overlapped it.

Eviction: least recently *used*. Every request that enters a model (:meth:`LoadedModel.enter`,
which every path of the gateway goes through, its fast path included) stamps the model's
``used_at`` with the next number of a process-wide count: one attribute store, no
reordering on the hot path. When a load would exceed the budget, the unpinned models used
longest ago are evicted: idle ones first, then busy ones. An evicted model leaves the lookup
at once (new requests load it afresh) but is freed only when its in-flight requests have
finished, so a request in progress always completes. When nothing can be evicted the model
is loaded anyway (an ``over_budget`` event is counted and logged): failing requests is worse
than using more memory than planned.

Memory given back. A freed model keeps only its manifest and signature (an endpoint's
snapshot holds its :class:`LoadedModel` until a request loads it again): its batcher lets
go of the predict function and the predictor is dropped, in the load thread, so that the
runtime's memory (an ONNX Runtime session) is freed then, not whenever the garbage
collector next runs (a :class:`LoadedModel` is in a reference cycle until it is freed), nor
never (the snapshot). glibc keeps freed memory for reuse rather than hand it back;
``malloc_trim(0)`` (:func:`modelyard.monitoring.heap.give_back`) returns what is free to the
OS, in the load thread, at most every :data:`TRIM_SECONDS`. It matters after a burst: a
worker that loaded 53 ONNX forests (5 MB each) through a 10 MB budget at start was ready at
158 MiB RSS with the trim, 180 without. Under a steady rotation it changes little (183-190
MiB either way): the next load reuses what the evicted model freed.

Reloads. A model loaded again reserves its last size and reuses its first load's single-row
call time (the batcher's first estimate) instead of timing three calls; what the loader
itself can skip on a reload is the loader's (the gateway's, see serving/onnx_reloads.py).

Hot swap: ``await pool.retire(key)`` drops a model from the lookup, waits for its in-flight
requests, closes its batcher and frees it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import itertools
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from operator import attrgetter
from typing import Any, NamedTuple

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
"""In-memory size of a loaded model, as a multiple of the size of its files (the estimate)."""

TRIM_SECONDS = 1.0
"""Shortest time between two ``malloc_trim`` calls (a trim after a burst of evictions
waits for the end of the interval)."""

Loader = Callable[[ModelVersion, str], Predictor]

# The recency of a model: a process-wide count of uses (cheaper than a clock on the hot path:
# about 35 ns against 60 ns for time.monotonic; only the order matters).
_tick = itertools.count(1).__next__
_by_use = attrgetter("used_at")


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


class _Refused:
    """``use()`` of a freed model: refuses as :meth:`LoadedModel.enter` does. (Unlike
    :class:`_InFlight` it holds no reference to the model: no reference cycle keeps a
    freed model's remains waiting for the garbage collector.)"""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    async def __aenter__(self) -> LoadedModel:
        raise _unloaded(self._name)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _unloaded(name: str) -> ModelUnloaded:
    return ModelUnloaded(
        f"model {name} was unloaded before the request started; retry it", model=name
    )


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
        size_source: str = "estimated",
    ) -> None:
        self.key = key
        self.version = version
        self.predictor = predictor
        self.batcher = batcher
        self.load_seconds = load_seconds
        self.warm_seconds = warm_seconds
        self.size_bytes = size_bytes
        self.size_source = size_source
        """How ``size_bytes`` was found: "measured", "reported" (by the loader) or
        "estimated" (see the module doc)."""
        self.in_flight = 0
        self.ready = True
        """False once the model has left the pool (evicted or retired)."""
        self.freed = False
        self.loaded_at = time.time()
        self.used_at = _tick()
        """When the model was last used (a request, its load), as a count of uses in this
        process: the eviction order."""
        self.requests = 0
        self.version_label = str(version.version)
        """The version number as the metrics' ``version`` label."""
        self.tag = f"{version.model}/{version.version}".encode()
        """``model/version``: the ``X-Modelyard-Version`` header of its answers."""
        self._use: _InFlight | _Refused = _InFlight(self)
        self._drained: asyncio.Event | None = None

    @property
    def name(self) -> str:
        """``model:version:runtime``."""
        return f"{self.key[0]}:{self.key[1]}:{self.key[2]}"

    @property
    def size_estimated(self) -> bool:
        return self.size_source == "estimated"

    def use(self) -> _InFlight | _Refused:
        """``async with loaded.use():`` while a request runs on this model."""
        return self._use

    def enter(self) -> None:
        """Count one request in flight (:class:`ModelUnloaded` once the model is freed), and
        mark the model used now (the eviction order).

        The synchronous form of ``use()``: call :meth:`exit` in a ``finally``.
        """
        if self.freed:
            raise _unloaded(self.name)
        self.in_flight += 1
        self.used_at = _tick()

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

    def _unload(self) -> list[Any]:
        """Keep only what a freed model still answers for (its manifest and signature: an
        endpoint's snapshot may parse a request against it before loading it again); return
        the predictor, for the caller to drop where it chooses."""
        predictor = self.predictor
        self.predictor = _Unloaded(predictor)
        self._use = _Refused(self.name)  # no cycle left: freed when the last holder lets go
        return [predictor]

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.name}, size_bytes={self.size_bytes}, "
            f"in_flight={self.in_flight}, ready={self.ready})"
        )


class _Unloaded(Predictor):
    """What a freed model keeps of its predictor: the manifest and the signature."""

    def __init__(self, predictor: Any) -> None:  # a custom loader's may have neither
        for name in ("manifest", "signature"):
            if hasattr(predictor, name):
                setattr(self, name, getattr(predictor, name))

    def predict(self, batch: Any) -> Outputs:
        raise ModelUnloaded("the model was unloaded; load it again")


class _Loaded(NamedTuple):
    """What a load in the pool's thread hands back."""

    predictor: Predictor
    load_seconds: float
    warm_seconds: float
    call_seconds: float
    measured: int | None  # the memory growth over the load (None: nothing to go by)


class ModelPool:
    """Loaded models by (model, version, runtime); see the module doc for the policy."""

    def __init__(
        self,
        load: Loader,
        *,
        memory_budget_bytes: int | None = None,
        batcher_options: dict[str, Any] | None = None,
        measure: bool = True,
    ) -> None:
        """``measure=False``: size models by their estimate (or reported size) only."""
        self._load = load
        self.memory_budget_bytes = memory_budget_bytes
        self.batcher_options = dict(batcher_options or {})
        self.measure = measure
        self._models: dict[Key, LoadedModel] = {}
        self._loading: dict[Key, asyncio.Task[LoadedModel]] = {}
        self._reserved: dict[Key, int] = {}  # sizes reserved for the loads in progress
        self._draining: dict[int, LoadedModel] = {}  # evicted, waiting for in-flight
        self._pinned: set[Key] = set()
        self._background: set[asyncio.Task[None]] = set()
        # Per key, from its last load: its size and its single-row call time (for reloads).
        self._sizes: dict[Key, int] = {}
        self._call_seconds: dict[Key, float] = {}
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._turn = asyncio.Lock()
        self._trim: asyncio.Task[None] | None = None
        self._trimmed_at = -TRIM_SECONDS
        self.events: Counter[str] = Counter()
        """Counts of loads, load_failures, evictions, over_budget, retires, misses, trims."""
        self.loads_by_key: Counter[Key] = Counter()
        """Loads per key (more than one: evicted and loaded again); a retired key leaves."""
        self.peak_loaded_bytes = 0
        """The most bytes of loaded models (the lookup, not reservations) at any time."""

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
            loaded.used_at = _tick()
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
        """The loaded model for ``key``, if it is loaded (no use recorded, no load)."""
        return self._models.get(key)

    async def _load_model(
        self,
        key: Key,
        version: ModelVersion,
        runtime: str,
        batching: dict[str, Any] | None,
    ) -> LoadedModel:
        estimate = estimate_size(version)
        reserve = self._sizes.get(key, estimate)
        # With a budget, loads take turns: a load waiting for its turn reserves nothing yet
        # (room is made for it when it starts), so waiting loads evict nothing in vain.
        turn = self._turn if self.memory_budget_bytes is not None else contextlib.nullcontext()
        try:
            async with turn:
                self._make_room(reserve, key)
                self._reserved[key] = reserve
                loop = asyncio.get_running_loop()
                done = await loop.run_in_executor(
                    self._load_thread(),
                    self._load_and_warm,
                    version,
                    runtime,
                    self._call_seconds.get(key),
                )
            reported = _reported_size(done.predictor)
            if reported is not None:
                size, source = reported, "reported"
            elif done.measured is not None:
                size, source = done.measured, "measured"
            else:
                size, source = estimate, "estimated"
            options = {**self.batcher_options, **(batching or {})}
            options.setdefault("name", f"{key[0]}:{key[1]}:{key[2]}")
            # So that the batcher knows from the first request whether to predict inline.
            options.setdefault("expected_predict_seconds", done.call_seconds)
            batcher = Batcher(_predict_function(done.predictor), **options)
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
            done.predictor,
            batcher,
            load_seconds=done.load_seconds,
            warm_seconds=done.warm_seconds,
            size_bytes=size,
            size_source=source,
        )
        self._models[key] = loaded
        self._sizes[key] = size
        self._call_seconds[key] = done.call_seconds
        self.loads_by_key[key] += 1
        self.events["loads"] += 1
        if size > reserve:  # it took more than was reserved: make room for the rest
            self._make_room(0, key)
        self.peak_loaded_bytes = max(self.peak_loaded_bytes, self.memory_loaded_bytes)
        log.info(
            "loaded model %s in %.3fs, warmed up in %.3fs, %d bytes (%s)",
            loaded.name,
            done.load_seconds,
            done.warm_seconds,
            size,
            source,
        )
        return loaded

    def _load_thread(self) -> concurrent.futures.Executor | None:
        """Where loads (and releases) run: with a budget, the pool's one thread (one at a
        time, and the allocations of every model in one malloc arena, where the next model
        reuses what an evicted one freed); without, the loop's default executor."""
        if self.memory_budget_bytes is None:
            return None
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="modelyard-load"
            )
        return self._thread

    def _load_and_warm(
        self, version: ModelVersion, runtime: str, call_seconds: float | None
    ) -> _Loaded:
        """Runs in a thread: load (download included), then warm up, measuring the memory
        the process gained meanwhile (see the module doc).

        Also returns the CPU seconds of one warm call on a single row in the form the
        gateway passes it (a first cost estimate for the batcher; the warm-up's own calls
        include one-off costs); ``call_seconds``, from an earlier load, spares the timing.
        """
        measure = self.measure
        serial = _WINDOW.serial if self.memory_budget_bytes is not None else None
        with serial or contextlib.nullcontext():
            token = _WINDOW.begin()
            try:
                before = memory_in_use() if measure else None
                start = time.perf_counter()
                predictor = self._load(version, runtime)
                load_seconds = time.perf_counter() - start
                start = time.perf_counter()
                reported = predictor.warm_up()
                measured = time.perf_counter() - start
                warm_seconds = float(reported) if isinstance(reported, int | float) else measured
                if call_seconds is None:
                    call_seconds = _time_call(predictor, warm_seconds)
                after = memory_in_use() if measure else None
            finally:
                alone = _WINDOW.end(token)
        grown = None
        if alone and before is not None and after is not None and after > before:
            grown = after - before
        return _Loaded(predictor, load_seconds, warm_seconds, call_seconds, grown)

    # -- memory -------------------------------------------------------------------------------

    @property
    def memory_loaded_bytes(self) -> int:
        """Bytes of the models in the lookup."""
        return sum(m.size_bytes for m in self._models.values())

    @property
    def memory_reserved_bytes(self) -> int:
        """Bytes reserved for the loads in progress."""
        return sum(self._reserved.values())

    @property
    def memory_used_bytes(self) -> int:
        """What counts against the budget: the models in the lookup plus the loads in
        progress."""
        return self.memory_loaded_bytes + self.memory_reserved_bytes

    @property
    def memory_draining_bytes(self) -> int:
        """Bytes of evicted models still finishing their in-flight requests."""
        return sum(m.size_bytes for m in self._draining.values())

    def _make_room(self, incoming: int, loading: Key) -> None:
        """Evict the least recently used unpinned models until ``incoming`` more bytes fit."""
        budget = self.memory_budget_bytes
        if budget is None:
            return
        excess = self.memory_used_bytes + incoming - budget
        if excess <= 0:
            return
        candidates = sorted(
            (m for key, m in self._models.items() if key not in self._pinned and key != loading),
            key=_by_use,
        )
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
        """Wait for the model's in-flight requests, close its batcher, then let go of its
        predictor in the load thread and give the memory back (see the module doc)."""
        self._draining[id(model)] = model
        try:
            await model.wait_idle()
            model.freed = True  # before the close's await: no request may enter it now
            await model.batcher.close()
        finally:
            self._draining.pop(id(model), None)
            model.freed = True
            held = model._unload()
        await asyncio.get_running_loop().run_in_executor(self._load_thread(), self._release, held)
        if sys.platform.startswith("linux"):  # where there is a malloc_trim to call
            self._schedule_trim()

    def _release(self, held: list[Any]) -> None:
        """Runs in the load thread: drop the last references to a freed model's predictor
        (never during a measured load)."""
        serial = _WINDOW.serial if self.memory_budget_bytes is not None else None
        with serial or contextlib.nullcontext():
            held.clear()
            _WINDOW.disturb()

    def _schedule_trim(self) -> None:
        if self._trim is not None and not self._trim.done():
            return  # one is due: it will see this release too
        delay = self._trimmed_at + TRIM_SECONDS - time.monotonic()
        self._trim = asyncio.get_running_loop().create_task(self._trim_after(delay))

    async def _trim_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._load_thread(), self._give_back)
            self.events["trims"] += 1
        finally:
            self._trimmed_at = time.monotonic()

    def _give_back(self) -> None:
        """Runs in the load thread: ``malloc_trim(0)`` (monitoring/heap.py), between loads."""
        from modelyard.monitoring.heap import give_back

        serial = _WINDOW.serial if self.memory_budget_bytes is not None else None
        with serial or contextlib.nullcontext():
            seconds = give_back()
            _WINDOW.disturb()
        log.debug("giving memory back took %.1f ms", seconds * 1000)

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
        for remembered in (self._sizes, self._call_seconds, self.loads_by_key):
            remembered.pop(key, None)
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
        if self._trim is not None:
            self._trim.cancel()
            await asyncio.gather(self._trim, return_exceptions=True)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    # -- introspection ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def keys(self) -> list[Key]:
        """Loaded keys, least recently used first."""
        return [m.key for m in sorted(self._models.values(), key=_by_use)]

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
                    "size_source": model.size_source,
                    "size_estimated": model.size_estimated,
                    "in_flight": model.in_flight,
                    "requests": model.requests,
                    "loads": self.loads_by_key.get(model.key, 0),
                    "load_seconds": model.load_seconds,
                    "warm_seconds": model.warm_seconds,
                    "loaded_at": model.loaded_at,
                    "used_at": model.used_at,
                    "batcher": model.batcher.stats.as_dict(),
                }
            )
        return rows


# -- measuring memory ---------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _mallinfo2() -> Any:
    """glibc's ``mallinfo2`` (glibc 2.33 and later), or None (not Linux, another C
    library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.argtypes = []
    mallinfo2.restype = _MallInfo2
    return mallinfo2


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def memory_in_use() -> int | None:
    """The memory this process uses, as a load is measured by (see the module doc): with
    glibc, the bytes malloc has handed out and not had back (every thread's); on another
    Linux, the anonymous resident bytes; elsewhere None."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is not None:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)  # in use: arena chunks + mmapped chunks
    try:
        with open("/proc/self/statm", "rb") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE_BYTES  # resident - file-backed
    except (OSError, IndexError, ValueError):
        return None


class _LoadWindow:
    """Which loads may be measured: those that ran alone (process-wide, since several pools
    may load at once), nothing released meanwhile."""

    def __init__(self) -> None:
        self.serial = threading.Lock()
        """Held by the loads (and releases) of pools with a budget: one at a time."""
        self._lock = threading.Lock()
        self._running = 0
        self._epoch = 0

    def begin(self) -> int | None:
        with self._lock:
            self._running += 1
            self._epoch += 1
            return self._epoch if self._running == 1 else None

    def end(self, token: int | None) -> bool:
        """Whether the load that began with ``token`` ran alone."""
        with self._lock:
            self._running -= 1
            alone = token is not None and self._epoch == token
            self._epoch += 1
            return alone

    def disturb(self) -> None:
        """Memory was freed: a load running now cannot be measured."""
        with self._lock:
            self._epoch += 1


_WINDOW = _LoadWindow()


def _time_call(predictor: Predictor, warm_seconds: float) -> float:
    """The best CPU time of three single-row calls in the form the gateway passes them."""
    signature = getattr(predictor, "signature", None)
    names = None if signature is None else table_columns(signature)
    if names is None:
        return warm_seconds / 3
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
    return best


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
