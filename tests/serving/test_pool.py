"""The model pool: single-flight loads, warm-up, LRU eviction, pinning, draining, hot swap.

Loads run in threads; the fake loader and model block on ``threading.Event`` gates so the
tests sequence events instead of measuring time. One test loads a real scikit-learn model.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.formats import load_model, save_model
from modelyard.registry.entities import ModelVersion
from modelyard.serving.pool import SIZE_FACTOR, LoadedModel, ModelPool, ModelUnloaded

FILE_SIZE = 100  # bytes per fake model file: SIZE_FACTOR * 100 bytes once loaded
MODEL_BYTES = FILE_SIZE * SIZE_FACTOR


def make_version(name: str = "churn", number: int = 1, size: int = FILE_SIZE) -> ModelVersion:
    return ModelVersion(
        id=f"{name}-{number}",
        model=name,
        version=number,
        manifest_digest=f"sha256:{name}{number}",
        format="fake",
        signature={},
        manifest={"files": {"model.bin": {"digest": "sha256:x", "size": size}}},
        created_at=datetime.now(UTC),
    )


class FakePredictor:
    """Adds the model's version number to ``x``; optionally blocks in predict on a gate."""

    def __init__(self, version: ModelVersion, journal: list[str]) -> None:
        self.number = version.version
        self.journal = journal
        self.warmed = False
        self.gate: threading.Event | None = None
        self.predicting = threading.Event()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.predicting.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        return {"y": inputs["x"] + self.number}

    def warm_up(self) -> float:
        self.journal.append(f"warm {self.number}")
        self.warmed = True
        return 0.25


class FakeLoader:
    """Counts loads; ``gate`` holds every load until set; ``fail`` makes the next loads raise."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, int, str]] = []
        self.journal: list[str] = []
        self.gate: threading.Event | None = None
        self.fail = 0
        self.predictors: dict[tuple[str, int], FakePredictor] = {}

    def __call__(self, version: ModelVersion, runtime: str) -> Any:
        self.loads.append((version.model, version.version, runtime))
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.fail:
            self.fail -= 1
            raise OSError(f"download of {version.uri} failed")
        self.journal.append(f"load {version.version}")
        predictor = FakePredictor(version, self.journal)
        self.predictors[(version.model, version.version)] = predictor
        return predictor


def fake_pool(loader: Any, **options: Any) -> ModelPool:
    """A pool that sizes models by their estimate: a fake model takes a few hundred bytes,
    far below what a measurement of the process can tell from noise."""
    return ModelPool(loader, measure=False, **options)


def one_row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[value]])}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def eventually(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (bounded; not a timing assertion)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never held")


async def gated_request(
    pool: ModelPool, loaded: LoadedModel, loader: FakeLoader, value: float
) -> tuple[asyncio.Task[dict[str, np.ndarray]], threading.Event]:
    """Start a request that blocks inside predict; return it and the gate that releases it."""
    predictor = loader.predictors[(loaded.key[0], loaded.key[1])]
    gate = threading.Event()
    predictor.gate = gate
    task = asyncio.create_task(pool.predict(loaded, one_row(value), 1))
    assert await asyncio.to_thread(predictor.predicting.wait, 10)
    return task, gate


def test_concurrent_gets_share_one_load_and_get_a_warm_model() -> None:
    async def main() -> None:
        loader = FakeLoader()
        loader.gate = threading.Event()
        pool = fake_pool(loader)
        version = make_version()
        gets = [asyncio.create_task(pool.get(version)) for _ in range(10)]
        await settle()
        assert not any(g.done() for g in gets)  # nobody gets a model before it is warm
        loader.gate.set()
        models = await asyncio.gather(*gets)
        assert len(loader.loads) == 1
        assert loader.loads == [("churn", 1, "native")]
        assert all(m is models[0] for m in models)
        loaded = models[0]
        assert loader.journal == ["load 1", "warm 1"]  # warmed before anyone got it
        assert loaded.ready and loaded.predictor.warmed  # type: ignore[attr-defined]
        assert loaded.key == ("churn", 1, "native")
        assert loaded.version is version
        assert loaded.warm_seconds == 0.25
        assert loaded.load_seconds >= 0
        assert loaded.size_bytes == MODEL_BYTES
        assert pool.events["loads"] == 1

        again = await pool.get(version)
        assert again is loaded and len(loader.loads) == 1
        other_runtime = await pool.get(version, runtime="onnx")
        assert other_runtime is not loaded and len(loader.loads) == 2

        out = await pool.predict(loaded, one_row(1.0), 1)
        np.testing.assert_array_equal(out["y"], [[2.0]])
        snapshot = {(s["model"], s["version"], s["runtime"]): s for s in pool.snapshot()}
        assert snapshot[("churn", 1, "native")]["batcher"]["requests"] == 1
        assert snapshot[("churn", 1, "native")]["in_flight"] == 0
        await pool.close()

    asyncio.run(main())


def test_use_counts_in_flight_requests() -> None:
    async def main() -> None:
        pool = fake_pool(FakeLoader())
        loaded = await pool.get(make_version())
        async with loaded.use():
            assert loaded.in_flight == 1
            async with loaded.use():
                assert loaded.in_flight == 2
        assert loaded.in_flight == 0
        await pool.close()

    asyncio.run(main())


def test_least_recently_used_model_is_evicted_over_budget() -> None:
    async def main() -> None:
        loader = FakeLoader()
        pool = fake_pool(loader, memory_budget_bytes=2 * MODEL_BYTES)
        a, b, c = (make_version("m", n) for n in (1, 2, 3))
        loaded_a = await pool.get(a)
        loaded_b = await pool.get(b)
        await pool.get(a)  # touch a: b is now the least recently used
        await pool.get(c)
        assert pool.keys() == [("m", 1, "native"), ("m", 3, "native")]
        assert pool.events["evictions"] == 1
        assert not loaded_b.ready and loaded_a.ready
        assert pool.memory_used_bytes == 2 * MODEL_BYTES
        await eventually(lambda: loaded_b.freed)
        assert loaded_b.batcher.closed
        with pytest.raises(ModelUnloaded):
            await pool.predict(loaded_b, one_row(1.0), 1)

        await pool.get(b)  # evicted models load again on demand
        assert len(loader.loads) == 4
        assert pool.keys() == [("m", 3, "native"), ("m", 2, "native")]
        await pool.close()

    asyncio.run(main())


def test_pinned_models_are_never_evicted() -> None:
    async def main() -> None:
        loader = FakeLoader()
        pool = fake_pool(loader, memory_budget_bytes=2 * MODEL_BYTES)
        a, b, c, d = (make_version("m", n) for n in (1, 2, 3, 4))
        pool.pin(("m", 1, "native"))
        await pool.get(a)
        await pool.get(b)
        await pool.get(c)  # a is least recently used but pinned: b goes
        assert pool.keys() == [("m", 1, "native"), ("m", 3, "native")]

        pool.pin(("m", 3, "native"))
        loaded_d = await pool.get(d)  # nothing can be evicted: loaded anyway, over budget
        assert loaded_d.ready
        assert set(pool.keys()) == {("m", 1, "native"), ("m", 3, "native"), ("m", 4, "native")}
        assert pool.events["over_budget"] == 1
        assert pool.events["evictions"] == 1

        pool.unpin(("m", 1, "native"))
        await pool.get(b)  # now a (unpinned, least recently used) and then d can go
        assert ("m", 1, "native") not in pool
        assert ("m", 3, "native") in pool
        assert pool.is_pinned(("m", 3, "native"))
        await pool.close()

    asyncio.run(main())


def test_eviction_waits_for_in_flight_requests() -> None:
    async def main() -> None:
        loader = FakeLoader()
        pool = fake_pool(
            loader,
            memory_budget_bytes=MODEL_BYTES,
            batcher_options={"expected_predict_seconds": 0.05},  # predict in a thread
        )
        old = await pool.get(make_version("m", 1))
        request, gate = await gated_request(pool, old, loader, 10.0)
        assert old.in_flight == 1

        new = await pool.get(make_version("m", 2))  # evicts the busy model
        assert ("m", 1, "native") not in pool and ("m", 2, "native") in pool
        assert not old.ready
        await settle()
        assert not old.freed and not old.batcher.closed  # still serving its request
        assert pool.snapshot()[-1]["state"] == "draining"

        gate.set()
        np.testing.assert_array_equal((await request)["y"], [[11.0]])
        await eventually(lambda: pool.memory_draining_bytes == 0)
        assert old.freed and old.batcher.closed
        np.testing.assert_array_equal((await pool.predict(new, one_row(1.0), 1))["y"], [[3.0]])
        await pool.close()

    asyncio.run(main())


def test_retire_waits_for_in_flight_requests() -> None:
    async def main() -> None:
        loader = FakeLoader()
        pool = fake_pool(loader, batcher_options={"expected_predict_seconds": 0.05})
        loaded = await pool.get(make_version("m", 1))
        request, gate = await gated_request(pool, loaded, loader, 5.0)

        retiring = asyncio.create_task(pool.retire(loaded.key))
        await settle()
        assert loaded.key not in pool  # out of the lookup at once
        assert not retiring.done()  # but not freed under the running request
        assert not loaded.freed and not loaded.batcher.closed

        gate.set()
        np.testing.assert_array_equal((await request)["y"], [[6.0]])
        assert await retiring is True
        assert loaded.freed and loaded.batcher.closed and loaded.in_flight == 0
        assert pool.events["retires"] == 1
        assert await pool.retire(loaded.key) is False

        replacement = await pool.get(make_version("m", 1))  # hot swap: loads afresh
        assert replacement is not loaded and len(loader.loads) == 2
        await pool.close()

    asyncio.run(main())


def test_load_failure_reaches_every_waiter_and_a_later_get_retries() -> None:
    async def main() -> None:
        loader = FakeLoader()
        loader.gate = threading.Event()
        loader.fail = 1
        pool = fake_pool(loader)
        version = make_version()
        gets = [asyncio.create_task(pool.get(version)) for _ in range(3)]
        await settle()
        loader.gate.set()
        outcomes = await asyncio.gather(*gets, return_exceptions=True)
        assert all(isinstance(o, OSError) for o in outcomes), outcomes
        assert len(loader.loads) == 1
        assert pool.events["load_failures"] == 1
        assert len(pool) == 0
        assert pool.memory_used_bytes == 0

        loaded = await pool.get(version)
        assert loaded.ready and len(loader.loads) == 2
        assert pool.events["loads"] == 1
        await pool.close()

    asyncio.run(main())


def test_a_real_sklearn_model_is_served_through_the_pool(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    manifest = save_model(model, tmp_path / "m", input_example=x[:5])
    version = ModelVersion(
        id="v1",
        model="churn",
        version=1,
        manifest_digest="sha256:abc",
        format=manifest.format,
        signature=manifest.signature.model_dump(mode="json"),
        manifest=manifest.model_dump(mode="json"),
        created_at=datetime.now(UTC),
    )

    def load(version: ModelVersion, runtime: str) -> Any:
        return load_model(tmp_path / "m")

    async def main() -> None:
        pool = ModelPool(load, batcher_options={"max_batch_size": 8})
        loaded = await pool.get(version)
        assert loaded.warm_seconds > 0
        assert loaded.size_bytes > 0 and loaded.size_source in ("measured", "estimated")
        results = await asyncio.gather(
            *(pool.predict(loaded, {"input": x[i : i + 1]}, 1) for i in range(40))
        )
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out["predictions"], model.predict(x[i : i + 1]))
            np.testing.assert_allclose(out["probabilities"], model.predict_proba(x[i : i + 1]))
        stats = loaded.batcher.stats
        assert stats.rows == 40
        assert stats.batches < 40  # concurrent requests were batched
        await pool.close()

    asyncio.run(main())


def test_a_used_model_is_not_evicted_before_an_unused_one_loaded_later() -> None:
    """Recency is by request (what the gateway does: ``enter``/``exit`` or ``use``, never
    ``get``), not by load order."""

    async def main() -> None:
        loader = FakeLoader()
        pool = fake_pool(loader, memory_budget_bytes=2 * MODEL_BYTES)
        a, b, c, d = (make_version("m", n) for n in (1, 2, 3, 4))
        loaded_a = await pool.get(a)
        loaded_b = await pool.get(b)  # loaded after a, never used
        loaded_a.enter()  # a request on a, as the gateway's infer makes it
        loaded_a.exit()
        await pool.get(c)
        assert not loaded_b.ready and loaded_a.ready  # b went, though loaded later
        assert pool.keys() == [("m", 1, "native"), ("m", 3, "native")]

        await pool.predict(loaded_a, one_row(1.0), 1)  # the pool's own path counts too
        loaded_c = pool.lookup(("m", 3, "native"))
        assert loaded_c is not None
        await pool.get(d)
        assert not loaded_c.ready and loaded_a.ready
        await pool.close()

    asyncio.run(main())


class Ballast:
    """A predictor holding ``megabytes`` MiB of memory (a real allocation, filled in)."""

    def __init__(self, megabytes: int, size_bytes: int | None = None) -> None:
        self.weights = np.ones(megabytes * 1024 * 1024 // 8)
        if size_bytes is not None:
            self.size_bytes = size_bytes

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * self.weights[0]}

    def warm_up(self) -> float:
        return 0.001


MIB = 1024 * 1024


def test_the_measured_size_replaces_the_estimate_and_drives_eviction() -> None:
    """A model is counted for the memory its load took (32 MiB here, against an estimate
    of 300 bytes from its manifest), so a budget of 80 MiB holds two such models, not
    hundreds; a loader's own ``size_bytes`` wins over both."""

    async def main() -> None:
        made: list[Ballast] = []

        def load(version: ModelVersion, runtime: str) -> Any:
            made.append(Ballast(32, 12_345 if version.version == 9 else None))
            return made[-1]

        pool = ModelPool(load, memory_budget_bytes=80 * MIB)
        first = await pool.get(make_version("m", 1))
        assert first.size_source == "measured"
        # 32 MiB of array, plus whatever else the process allocated meanwhile: at most as
        # much again (a generous bound: the test process does little else during a load)
        assert 32 * MIB <= first.size_bytes <= 64 * MIB
        assert first.size_bytes != MODEL_BYTES
        second = await pool.get(make_version("m", 2))
        assert second.size_source == "measured" and first.ready
        third = await pool.get(make_version("m", 3))  # 3 x 32 MiB > 80 MiB: one goes
        assert not first.ready and second.ready and third.ready
        assert pool.events["evictions"] == 1
        assert pool.memory_loaded_bytes <= 80 * MIB
        assert pool.peak_loaded_bytes <= 80 * MIB

        reported = await pool.get(make_version("m", 9))
        assert reported.size_source == "reported" and reported.size_bytes == 12_345
        await pool.close()

    asyncio.run(main())


def test_a_freed_model_lets_go_of_its_predictor() -> None:
    """An evicted model's memory is freed once it is idle even though something (an
    endpoint's snapshot, in the gateway) still holds its LoadedModel; the signature stays
    for the requests that parse against it; glibc gets its malloc_trim."""

    async def main() -> None:
        import weakref

        loader = FakeLoader()
        pool = fake_pool(loader, memory_budget_bytes=MODEL_BYTES)
        held = await pool.get(make_version("m", 1))  # kept, as a snapshot keeps it
        predictor = weakref.ref(loader.predictors[("m", 1)])
        loader.predictors.clear()
        held.predictor.signature = "the signature"  # type: ignore[attr-defined]
        await pool.get(make_version("m", 2))  # evicts m:1
        await eventually(lambda: held.freed and predictor() is None)
        assert held.predictor.signature == "the signature"
        with pytest.raises(ModelUnloaded):
            held.enter()
        if sys.platform.startswith("linux"):
            await eventually(lambda: pool.events["trims"] >= 1)
        await pool.close()

    asyncio.run(main())
