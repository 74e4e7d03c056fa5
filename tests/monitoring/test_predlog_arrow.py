"""The prediction log builds its Arrow columns from numpy buffers: the same arrays as
``pa.array``, without importing pandas (which ``pa.array`` does) in a gateway worker."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from modelyard.monitoring.predlog import _bounds, _from_numpy, _repeated

CASES = [
    np.array([1.5, np.nan, -2.0]),
    np.array([1, 2, 3], dtype=np.int16),
    np.array([1, 2, 3], dtype=np.uint8),
    np.array([1.0, 2.0], dtype=np.float16),
    np.array([True, False, True, True, False, False, True, False, True]),
    np.array(["a", "é", "", "z" * 300], dtype=object),
    np.array(["a", None, "c"], dtype=object),
    np.array(["x", "yy"]),  # <U2
    np.arange(12.0).reshape(3, 4)[:, 1],  # not contiguous
    np.array([1.0, 2.0], dtype=">f8"),  # not native: through pa.array (which refuses it)
    np.array([1, "a"], dtype=object),  # mixed: through pa.array (which refuses it too)
    np.array(["2024-01-01"], dtype="datetime64[us]"),
    np.array([], dtype=np.float64),
]


@pytest.mark.parametrize("values", CASES, ids=lambda v: str(v.dtype))
def test_columns_equal_what_pa_array_makes(values: np.ndarray) -> None:
    try:
        expected = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        with pytest.raises(type(exc)):
            _from_numpy(values)
        return
    got = _from_numpy(values)
    got.validate(full=True)
    assert got.type == expected.type and got.null_count == expected.null_count
    assert got.to_string() == expected.to_string()  # (equals() has NaN != NaN)


def test_masks_and_types_equal_pa_array() -> None:
    values = np.array([1.0, np.nan, 3.0, 4.0], dtype=np.float32)
    mask = np.isnan(values)
    got = _from_numpy(values, mask=mask)
    assert got.equals(pa.array(values, pa.float32(), mask=mask)) and got.null_count == 1
    met = np.array([True, False, True])
    missing = np.array([False, False, True])
    assert _from_numpy(met, mask=missing).equals(pa.array(met, pa.bool_(), mask=missing))
    micros = np.array([0, 1_700_000_000_000_000], dtype=np.int64)
    stamp = pa.timestamp("us", tz="UTC")
    assert _from_numpy(micros, stamp).equals(pa.array(micros, pa.int64()).cast(stamp))
    assert _repeated("ép", 3).equals(pa.array(["ép"] * 3, pa.string()))
    assert _repeated("x", 0).equals(pa.array([], pa.string()))


def test_bounds_of_a_sliced_chunked_column() -> None:
    stamp = pa.timestamp("us", tz="UTC")
    column = pa.chunked_array(
        [pa.array([5, 1, 9], pa.int64()).cast(stamp), pa.array([7, 0, 3], pa.int64()).cast(stamp)]
    ).slice(1, 4)  # 1, 9, 7, 0
    low, high = _bounds(column)
    assert (low.microsecond, high.microsecond) == (0, 9)


def test_writing_a_segment_imports_neither_pandas_nor_pyarrow_compute(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = f"""
import sys
import numpy as np
from pathlib import Path
from modelyard.config import Settings
from modelyard.monitoring.predlog import PredictionLog
from modelyard.workspace import Workspace

ws = Workspace.open(Settings(home=Path({str(tmp_path)!r})))
log = PredictionLog(ws)
log.start()
for i in range(30):
    rows = 1 + i % 3
    log.log(
        endpoint="e", model="m", version=1, request_id=f"r{{i}}",
        inputs={{"x": np.arange(rows, dtype=np.float64), "c": np.array(["é"] * rows, object)}},
        outputs={{"p": np.ones((rows, 2))}}, rows=rows, latency_ms=1.0,
        guard=np.zeros(rows, np.float32), caller="t", variant=None if i % 2 else "v",
        deadline_ms=None if i % 2 else 5.0,
    )
log.close()
assert log.stats()["segments"] >= 1
written = [m for m in ("pandas", "pyarrow.compute") if m in sys.modules]
table = log.read("e")  # reading may import them: it is the monitor's business
assert table.num_rows == 60, table.num_rows
assert set(table["in__c"].to_pylist()) == {{"é"}}
assert table["out__p"].to_pylist()[0] == [1.0, 1.0]
assert table["variant"].null_count == 30 and table["deadline_ms"].null_count == 30
assert table["endpoint"].to_pylist() == ["e"] * 60
print(",".join(written), flush=True)
# After pyarrow's dataset reader ran, this interpreter aborts at exit now and then
# ("terminate called without an active exception", also before the log built its columns
# from buffers): leave without the interpreter's teardown.
import os
os._exit(0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
