"""Step results by content: hashing code and values, storing outputs, the step cache.

A step's cache key is the sha256 of its code (source text, bytecode and constants, closure
and default values), the hash of each input value, and :data:`CACHE_FORMAT`. Values are
hashed by content: DataFrames by ``pd.util.hash_pandas_object`` plus columns and dtypes,
numpy arrays by dtype, shape and bytes, JSON-able values by canonical JSON, anything else
by its cloudpickle bytes. An upstream output is hashed once, when it is stored, and its
hash travels in its reference, so a downstream key never needs the upstream value.

Outputs go to the artifact store: DataFrames as Parquet, JSON-able values as JSON, numpy
arrays as ``.npy``, anything else (models) as cloudpickle. Loading a cloudpickled output
runs code from the pickle; that is acceptable here because the only writer is the team's
own pipeline code running on the team's own workspace, never a user upload.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import linecache
import re
import types
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from modelyard.store.tables import Base, StepCacheRow

if TYPE_CHECKING:
    from modelyard.artifacts import ArtifactStore
    from modelyard.pipelines.dag import Pipeline
    from modelyard.store import Store, Tx

CACHE_FORMAT = "1"  # bump when hashing or storage changes, so old entries are not reused
INLINE_BYTES = 1024
Ref = dict[str, str]  # {"digest" or "inline", "format", "hash", "type"}


# --- hashing ----------------------------------------------------------------------------

# numpy, pandas and cloudpickle are imported by the functions below that use them, so that
# the commands that only read pipelines and runs do not pay for them (about 0.6 s).


def import_value_libraries() -> None:
    """Import what hashing, storing and loading values uses. A process that forks step
    attempts calls it first, so that every child inherits them instead of importing them."""
    import cloudpickle  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401


def is_jsonable(value: Any) -> bool:
    """Made only of None, bool, int, float, str, lists and str-keyed dicts (round-trips)."""
    if value is None or isinstance(value, bool | int | str):
        return type(value) in (bool, int, str) or value is None
    if isinstance(value, float):
        return type(value) is float
    if type(value) is list:
        return all(is_jsonable(v) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and is_jsonable(v) for k, v in value.items())
    return False


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def value_hash(value: Any) -> str:
    """The content hash of a value (hex sha256), stable across processes and runs."""
    import numpy as np
    import pandas as pd

    h = hashlib.sha256()
    if isinstance(value, pd.DataFrame):
        try:
            rows = pd.util.hash_pandas_object(value, index=True).to_numpy(dtype="<u8")
            h.update(b"dataframe\0")
            h.update(repr([(str(c), str(t)) for c, t in value.dtypes.items()]).encode())
            h.update(repr([str(n) for n in value.index.names]).encode())
            h.update(rows.tobytes())
            return h.hexdigest()
        except TypeError:  # unhashable cells (lists, dicts): fall back to the pickle
            pass
    elif isinstance(value, np.ndarray) and value.dtype != object:
        h.update(f"ndarray\0{value.dtype.str}\0{value.shape}\0".encode())
        h.update(np.ascontiguousarray(value).tobytes())
        return h.hexdigest()
    elif is_jsonable(value):
        h.update(b"json\0")
        h.update(canonical_json(value))
        return h.hexdigest()
    import cloudpickle

    h.update(b"pickle\0")
    h.update(cloudpickle.dumps(value))
    return h.hexdigest()


def _code_bytes(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_bytes(const, h)
        else:
            h.update(repr(const).encode())


def code_hash(fn: Callable[..., Any]) -> str:
    """sha256 of a function's code: source text, bytecode and constants, and the values of
    its defaults and closure cells (two closures of one ``def`` differ by those)."""
    h = hashlib.sha256(f"code\0{CACHE_FORMAT}\0".encode())
    code = getattr(fn, "__code__", None)
    if code is not None:
        linecache.checkcache(code.co_filename)  # the file may have been edited since
    h.update(_source(fn).encode())
    if code is not None:
        _code_bytes(code, h)
    for value in [
        *(getattr(fn, "__defaults__", None) or ()),
        *(getattr(fn, "__kwdefaults__", None) or {}).items(),
        *(c.cell_contents for c in getattr(fn, "__closure__", None) or () if _cell_set(c)),
    ]:
        h.update(_safe_hash(value).encode())
    if code is None:  # a callable object: its class and state
        h.update(_safe_hash(fn).encode())
    return h.hexdigest()


_DEF = re.compile(r"^\s*(async\s+)?def\s")


def _source(fn: Callable[..., Any]) -> str:
    """The function's source without its decorators: ``@step(retries=3)`` changes how a step
    runs, not what it computes. Empty when there is none (a REPL, ``exec``): then the
    bytecode alone identifies it."""
    try:
        lines = inspect.getsource(fn).splitlines(keepends=True)
    except (OSError, TypeError):
        return ""
    start = next((i for i, line in enumerate(lines) if _DEF.match(line)), 0)
    return "".join(lines[start:])


def _cell_set(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
        return True
    except ValueError:
        return False


def _safe_hash(value: Any) -> str:
    if isinstance(value, types.FunctionType):
        return code_hash(value)
    if isinstance(value, types.ModuleType):
        return f"module:{value.__name__}"
    try:
        return value_hash(value)
    except Exception:  # unpicklable (a lock, a connection): its type is all we can say
        return f"type:{type(value).__module__}.{type(value).__qualname__}"


def cache_key(code: str, inputs: Mapping[str, str]) -> str:
    """The cache key of a step from its code hash and ``{argument: input hash}``."""
    h = hashlib.sha256(f"step\0{CACHE_FORMAT}\0{code}\0".encode())
    for arg in sorted(inputs):
        h.update(f"{arg}\0{inputs[arg]}\0".encode())
    return h.hexdigest()


def item_hash(ref_hash: str, key: str | int | None) -> str:
    """The input hash of item ``key`` of a stored value whose hash is ``ref_hash``."""
    if key is None:
        return ref_hash
    return hashlib.sha256(f"item\0{ref_hash}\0{key!r}".encode()).hexdigest()


def definition_hash(p: Pipeline, code_hashes: Mapping[str, str]) -> str:
    """sha256 of the pipeline's structure, its constants and each step's code."""
    from modelyard.pipelines.dag import Output, Param

    h = hashlib.sha256(f"pipeline\0{CACHE_FORMAT}\0{p.name}\0".encode())
    for name in sorted(p.steps):
        node = p.steps[name]
        h.update(f"step\0{name}\0{code_hashes[name]}\0{node.options.stage}\0".encode())
        for arg in sorted(node.inputs):
            value = node.inputs[arg]
            if isinstance(value, Param):
                text = f"param:{value.name}"
            elif isinstance(value, Output):
                text = f"output:{value.step}:{value.key!r}"
            else:
                text = f"value:{_safe_hash(value)}"
            h.update(f"{arg}\0{text}\0".encode())
    return "sha256:" + h.hexdigest()


# --- storing values ---------------------------------------------------------------------


def _type_of(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def store_value(artifacts: ArtifactStore, value: Any) -> Ref:
    """Write one value to the artifact store; return its reference (digest, format, hash).

    JSON values up to :data:`INLINE_BYTES` are kept in the reference itself (``inline``)
    instead of a blob: a trivial output then costs no file write and no read.
    """
    digest_hash = value_hash(value)
    data, fmt = _encode(value)
    ref = {"format": fmt, "hash": digest_hash, "type": _type_of(value)}
    if fmt == "json" and len(data) <= INLINE_BYTES:
        ref["inline"] = data.decode()
    else:
        ref["digest"] = artifacts.put_bytes(data)
    return ref


def _encode(value: Any) -> tuple[bytes, str]:
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        buffer = io.BytesIO()
        try:
            value.to_parquet(buffer, engine="pyarrow")
            return buffer.getvalue(), "parquet"
        except Exception:  # non-string column names, mixed object columns: keep it exact
            pass
    elif isinstance(value, np.ndarray) and value.dtype != object:
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue(), "npy"
    elif is_jsonable(value):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), "json"
    import cloudpickle

    return cloudpickle.dumps(value), "pickle"


def load_value(artifacts: ArtifactStore, ref: Mapping[str, str]) -> Any:
    """The value a reference names (see the module docstring about pickles)."""
    if "inline" in ref:
        return json.loads(ref["inline"])
    data = artifacts.get_bytes(ref["digest"])
    fmt = ref["format"]
    if fmt == "parquet":
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    if fmt == "npy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if fmt == "json":
        return json.loads(data)
    import cloudpickle

    return cloudpickle.loads(data)


def store_outputs(artifacts: ArtifactStore, value: Any) -> dict[str, Any]:
    """Store a step's return value. A dict with string keys or a tuple that is not JSON as a
    whole is stored item by item, so a DataFrame item stays Parquet and a downstream step
    that takes one item loads only that item."""
    if type(value) is dict and not is_jsonable(value) and all(isinstance(k, str) for k in value):
        return {"kind": "dict", "refs": {k: store_value(artifacts, v) for k, v in value.items()}}
    if type(value) is tuple:
        return {
            "kind": "tuple",
            "refs": {str(i): store_value(artifacts, v) for i, v in enumerate(value)},
        }
    return {"kind": "value", "refs": {"value": store_value(artifacts, value)}}


def output_hash(outputs: Mapping[str, Any], key: str | int | None) -> str:
    """The input hash of a stored output, or of its item ``key``."""
    kind, refs = outputs["kind"], outputs["refs"]
    if kind == "value":
        return item_hash(refs["value"]["hash"], key)
    if key is None:
        h = hashlib.sha256(f"{kind}\0".encode())
        for k in refs:
            h.update(f"{k}\0{refs[k]['hash']}\0".encode())
        return h.hexdigest()
    return str(refs[str(key)]["hash"])


def load_output(
    artifacts: ArtifactStore, outputs: Mapping[str, Any], key: str | int | None = None
) -> Any:
    """A step's stored return value, or its item ``key``."""
    kind, refs = outputs["kind"], outputs["refs"]
    if kind == "value":
        value = load_value(artifacts, refs["value"])
        return value if key is None else value[key]
    if key is not None:
        return load_value(artifacts, refs[str(key)])
    if kind == "tuple":
        return tuple(load_value(artifacts, refs[str(i)]) for i in range(len(refs)))
    return {k: load_value(artifacts, r) for k, r in refs.items()}


def output_digests(outputs: Mapping[str, Any]) -> list[str]:
    return [r["digest"] for r in outputs.get("refs", {}).values() if "digest" in r]


def numeric_items(value: Any) -> dict[str, float]:
    """The finite-or-not numbers of a ``{name: number}`` dict (metrics a step returned)."""
    if not isinstance(value, dict):
        return {}
    import numpy as np

    found = {}
    for k, v in value.items():
        if (
            isinstance(k, str)
            and isinstance(v, int | float | np.number)
            and not isinstance(v, bool)
        ):
            found[k] = float(v)
    return found


# --- the cache table --------------------------------------------------------------------


class StepCache:
    """``cache key -> stored outputs`` in the metadata store."""

    def __init__(self, store: Store, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The stored outputs of ``key``, if every blob they name is still in the store."""
        with self.store.read() as s:
            outputs = s.scalar(select(StepCacheRow.outputs).where(StepCacheRow.cache_key == key))
        if outputs is None:
            return None
        if not all(self.artifacts.exists(d) for d in output_digests(outputs)):
            return None  # blobs collected since: run the step again
        return dict(outputs)

    def save(
        self, key: str, pipeline: str, step: str, outputs: dict[str, Any], *, tx: Tx | None = None
    ) -> None:
        """Keep (or replace) the outputs of ``key``, in ``tx`` or a transaction of its own;
        concurrent writers of one key are fine (an upsert, not a check then an insert)."""
        row = {
            "cache_key": key,
            "pipeline": pipeline,
            "step": step,
            "outputs": outputs,
            "created_at": datetime.now(UTC),
        }
        # Cache entries are derived data, not changes of state anyone acts on: not audited.
        if tx is not None:
            tx.session.execute(_upsert(self.store.is_sqlite), [row])
            return
        with self.store.write("pipelines") as own:
            own.session.execute(_upsert(self.store.is_sqlite), [row])


@functools.cache
def _upsert(is_sqlite: bool) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE, built once: values go in as parameters, so the
    statement's compiled form is reused (building it with values costs milliseconds)."""
    table = Base.metadata.tables[StepCacheRow.__tablename__]
    dialect: Any = sqlite if is_sqlite else postgresql
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=["cache_key"],
        set_={"outputs": stmt.excluded.outputs, "created_at": stmt.excluded.created_at},
    )
