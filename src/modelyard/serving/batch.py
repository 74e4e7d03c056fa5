"""Batch scoring: a file in, the same rows with predictions out, chunk by chunk.

Each chunk's result is written to ``<output>.parts/`` as soon as it is predicted, and the
final file is assembled only when every chunk is there; an interrupted run started again
with the same arguments skips the chunks it already has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from modelyard.errors import InvalidInput
from modelyard.formats import Predictor
from modelyard.serving.validation import validate_inputs

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass
class BatchResult:
    rows: int
    chunks: int
    resumed_chunks: int
    output: Path


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{path.name}: use a .parquet or .csv file")
    return fmt


def _chunks(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    if file_format(path) == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
        return
    # CSV: re-slice the reader's blocks so chunk boundaries do not depend on block size.
    pending: list[pa.RecordBatch] = []
    size = 0
    for block in pacsv.open_csv(path):
        pending.append(block)
        size += block.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield from table.slice(0, chunk_rows).to_batches(max_chunksize=chunk_rows)
            rest = table.slice(chunk_rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield from pa.Table.from_batches(pending).to_batches(max_chunksize=chunk_rows)


def total_rows(path: Path) -> int | None:
    """Rows in the file when known without reading it (Parquet), else None."""
    if file_format(path) == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


def _with_outputs(batch: pa.RecordBatch, outputs: dict[str, np.ndarray]) -> pa.Table:
    table = pa.Table.from_batches([batch])
    for name, values in outputs.items():
        if values.ndim == 1:
            table = table.append_column(f"{name}", pa.array(values))
        else:  # one column per class / component, so CSV can hold it too
            flat = values.reshape(len(values), -1)
            for i in range(flat.shape[1]):
                table = table.append_column(f"{name}_{i}", pa.array(flat[:, i]))
    return table


def score_file(
    predictor: Predictor,
    source: Path,
    output: Path,
    *,
    model: str,
    chunk_rows: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Predict every row of ``source`` (Parquet or CSV) into ``output`` (Parquet or CSV)."""
    if chunk_rows < 1:
        raise InvalidInput("chunk_rows must be at least 1")
    if not source.is_file():
        raise InvalidInput(f"{source} does not exist or is not a file")
    file_format(source)
    out_format = file_format(output)
    parts = output.with_name(output.name + ".parts")
    job = _job_key(source, model, chunk_rows)
    marker = parts / "job.json"
    if parts.exists() and (not marker.exists() or json.loads(marker.read_text()) != job):
        shutil.rmtree(parts)  # parts of another job (other input, model or chunking)
    parts.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(job))
    rows = chunks = resumed = 0
    for index, batch in enumerate(_chunks(source, chunk_rows)):
        part = parts / f"part-{index:06d}.parquet"
        chunks += 1
        rows += batch.num_rows
        if part.exists():
            resumed += 1
        else:
            columns = {
                name: batch.column(name).to_numpy(zero_copy_only=False)
                for name in batch.schema.names
            }
            wanted = {spec.name for spec in predictor.signature.inputs}
            inputs, _ = validate_inputs(
                predictor.signature,
                {k: v for k, v in columns.items() if k in wanted},
                model=model,
                max_rows=max(chunk_rows, 1),
            )
            outputs = predictor.predict(inputs)
            tmp = part.with_suffix(".tmp")
            pq.write_table(_with_outputs(batch, outputs), tmp)
            os.replace(tmp, part)  # a part appears complete or not at all
        if progress:
            progress(batch.num_rows)
    _assemble(sorted(parts.glob("part-*.parquet"))[:chunks], output, out_format)
    shutil.rmtree(parts)
    return BatchResult(rows=rows, chunks=chunks, resumed_chunks=resumed, output=output)


def _job_key(source: Path, model: str, chunk_rows: int) -> dict[str, Any]:
    stat = source.stat()
    ident = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return {
        "source": hashlib.sha256(ident.encode()).hexdigest(),
        "model": model,
        "chunk_rows": chunk_rows,
    }


def _assemble(parts: list[Path], output: Path, out_format: str) -> None:
    tmp = output.with_name(f".{output.name}.tmp")
    if out_format == "parquet":
        writer: pq.ParquetWriter | None = None
        for part in parts:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
        else:
            pq.write_table(pa.table({}), tmp)
    else:
        with open(tmp, "wb") as out:
            for i, part in enumerate(parts):
                pacsv.write_csv(pq.read_table(part), out, pacsv.WriteOptions(include_header=i == 0))
    os.replace(tmp, output)
