"""Datasets: versions by content digest, with schema, row count and column profiles.

A version is registered from data (:meth:`TrackingDatasets.log_dataset`: profiled, and kept in
the artifact store if asked) or by reference (:meth:`TrackingDatasets.log_dataset_reference`:
what a client says of data kept elsewhere). Either can be linked to a run as an input.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.page import Page, check_limit, decode_token
from modelyard.store import Tx
from modelyard.store.schema import MAX_BIGINT
from modelyard.store.tables import DatasetRow, RunInputRow, RunRow
from modelyard.tracking.entities import (
    CategoricalProfile,
    ColumnSchema,
    Dataset,
    Histogram,
    NumericProfile,
    Run,
    ValueCount,
)
from modelyard.tracking.rows import TrackingRows, run_entities

if TYPE_CHECKING:
    import pandas as pd

# Dataset names appear in URLs, so they are kept URL-safe.
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
TOP_VALUES = 10
HISTOGRAM_BINS = 10
#: The longest context (``training``, ``evaluation``...) and digest a version takes.
MAX_CONTEXT = 32
MAX_DIGEST = 80


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise InvalidInput(
            f"dataset name {name!r} is not valid; use letters, digits, '.', '_', '-' "
            "starting with a letter or digit"
        )


@dataclass
class _Version:
    """What a new dataset version records."""

    name: str
    digest: str
    source: str
    num_rows: int
    schema: list[ColumnSchema]
    profile: dict[str, Any]
    artifact_digest: str | None


class TrackingDatasets(TrackingRows):
    """The dataset operations of :class:`~modelyard.tracking.service.TrackingService`."""

    def log_dataset(
        self,
        name: str,
        data: pd.DataFrame | str | os.PathLike[str],
        *,
        source: str = "",
        run_id: str | None = None,
        context: str = "training",
        store_data: bool = True,
    ) -> Dataset:
        """Register a dataset version: digest, schema, row count and column profiles.

        ``data`` is a DataFrame or the path of a ``.csv`` or ``.parquet`` file. Content equal
        to an existing version of ``name`` returns that version instead of a new one. With
        ``store_data`` the data is kept in the artifact store (as Parquet) for
        :meth:`load_dataset`. With ``run_id`` the version is recorded as an input of the run.
        """
        _check_name(name)
        if not context or len(context) > MAX_CONTEXT:
            raise InvalidInput("context must be 1-32 characters, e.g. 'training' or 'evaluation'")
        frame, source = _load_frame(data, source)
        digest = _content_digest(frame)
        schema = [ColumnSchema(name=c, dtype=str(t)) for c, t in frame.dtypes.items()]
        profile = {c: p.model_dump(mode="json") for c, p in _profile(frame).items()}
        artifact_digest = self.ws.artifacts.put_bytes(_parquet(frame)) if store_data else None
        version = _Version(name, digest, source, len(frame), schema, profile, artifact_digest)
        with self.store.write(self.ws.actor) as tx:
            return _dataset(self._record_dataset(tx, version, run_id, context))

    def log_dataset_reference(
        self,
        name: str,
        digest: str,
        *,
        source: str = "",
        num_rows: int | None = None,
        schema: Sequence[ColumnSchema] = (),
        run_id: str | None = None,
        context: str = "",
    ) -> Dataset:
        """Register a dataset version by reference: what it is, without its data.

        For data kept elsewhere, described by a client that computed its own ``digest``
        (MLflow's ``log_input``). The same ``name`` and ``digest`` again is the same
        version. ``num_rows`` unknown is recorded as 0; there are no column profiles, and
        :meth:`load_dataset` cannot read it back. ``context`` may be empty (unstated).
        """
        _check_name(name)
        if not isinstance(digest, str) or not 1 <= len(digest) <= MAX_DIGEST:
            raise InvalidInput(f"dataset digest must be 1-{MAX_DIGEST} characters, got {digest!r}")
        if len(context) > MAX_CONTEXT:
            raise InvalidInput(f"context must be at most {MAX_CONTEXT} characters, e.g. 'training'")
        if num_rows is not None and not 0 <= num_rows <= MAX_BIGINT:
            raise InvalidInput(f"num_rows must be a count of rows, got {num_rows}")
        version = _Version(name, digest, source, num_rows or 0, list(schema), {}, None)
        with self.store.write(self.ws.actor) as tx:
            return _dataset(self._record_dataset(tx, version, run_id, context))

    def _record_dataset(
        self, tx: Tx, version: _Version, run_id: str | None, context: str
    ) -> DatasetRow:
        """The row of ``version`` (a new version of its name unless its digest is known),
        linked to ``run_id`` as an input in ``context``."""
        name, digest = version.name, version.digest
        if run_id is not None:
            self._run_row(tx.session, run_id)
        row = tx.session.scalar(
            select(DatasetRow).where(DatasetRow.name == name, DatasetRow.digest == digest)
        )
        if row is None:
            last = tx.session.scalar(
                select(func.max(DatasetRow.version)).where(DatasetRow.name == name)
            )
            row = DatasetRow(
                id=str(ULID()),
                name=name,
                version=(last or 0) + 1,
                digest=digest,
                source=version.source,
                num_rows=version.num_rows,
                schema_=[c.model_dump() for c in version.schema],
                profile=version.profile,
                artifact_digest=version.artifact_digest,
                created_at=datetime.now(UTC),
                created_by=self.ws.actor,
            )
            tx.session.add(row)
            try:
                tx.session.flush()  # before the run input that refers to it
            except IntegrityError:
                raise Conflict(
                    f"another version of dataset {name!r} was registered at the same "
                    "time; log it again"
                ) from None
            tx.record(
                "dataset.create",
                "dataset",
                row.id,
                after={
                    "name": name,
                    "version": row.version,
                    "digest": digest,
                    "num_rows": row.num_rows,
                    "source": version.source,
                    "artifact_digest": version.artifact_digest,
                },
            )
        elif version.artifact_digest and row.artifact_digest is None:
            row.artifact_digest = version.artifact_digest
            tx.record(
                "dataset.store_data",
                "dataset",
                row.id,
                {"artifact_digest": None},
                {"artifact_digest": version.artifact_digest},
            )
        link = (run_id, row.id, context)
        if run_id is not None and tx.session.get(RunInputRow, link) is None:
            tx.session.add(RunInputRow(run_id=run_id, dataset_id=row.id, context=context))
            tx.record(
                "run.log_input",
                "run",
                run_id,
                after={
                    "dataset_id": row.id,
                    "name": name,
                    "version": row.version,
                    "context": context,
                },
            )
        try:
            tx.session.flush()
        except IntegrityError:
            raise Conflict(
                f"run {run_id} was linked to dataset {name!r} at the same time; log it again"
            ) from None
        return row

    def get_dataset(self, name: str, version: int | None = None) -> Dataset:
        """Version ``version`` of dataset ``name``, or its latest version."""
        with self.store.read() as s:
            return _dataset(self._dataset_row(s, name, version))

    def get_dataset_by_id(self, dataset_id: str) -> Dataset:
        with self.store.read() as s:
            row = s.get(DatasetRow, dataset_id)
        if row is None:
            raise NotFound(f"no dataset with id {dataset_id!r}; {_DATASETS_LISTED}")
        return _dataset(row)

    def datasets_by_id(self, dataset_ids: Sequence[str]) -> dict[str, Dataset]:
        """The dataset versions of ``dataset_ids`` (those that exist), in one query."""
        ids = list(dict.fromkeys(dataset_ids))
        if not ids:
            return {}
        with self.store.read() as s:
            rows = s.scalars(select(DatasetRow).where(DatasetRow.id.in_(ids))).all()
        return {r.id: _dataset(r) for r in rows}

    def list_datasets(
        self,
        *,
        name: str | None = None,
        q: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Dataset]:
        """Dataset versions by name, newest version first; ``q`` matches part of the name."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = select(DatasetRow).order_by(DatasetRow.name, DatasetRow.version.desc())
        if name is not None:
            query = query.where(DatasetRow.name == name)
        if q:
            query = query.where(DatasetRow.name.icontains(q, autoescape=True))
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
        return Page.of([_dataset(r) for r in rows[:limit]], offset, limit, more=len(rows) > limit)

    def dataset_runs(
        self, dataset_id: str, *, limit: int = 100, page_token: str | None = None
    ) -> Page[Run]:
        """The runs that logged the dataset version ``dataset_id`` as an input, newest first."""
        offset = decode_token(page_token)
        check_limit(limit)
        query = (
            select(RunRow)
            .where(
                RunRow.id.in_(
                    select(RunInputRow.run_id).where(RunInputRow.dataset_id == dataset_id)
                )
            )
            .order_by(RunRow.start_time.desc(), RunRow.id.desc())
        )
        with self.store.read() as s:
            rows = s.scalars(query.offset(offset).limit(limit + 1)).all()
            items = run_entities(s, rows[:limit])
        return Page.of(items, offset, limit, more=len(rows) > limit)

    def load_dataset(self, name: str, version: int | None = None) -> pd.DataFrame:
        """The data of a dataset version, read back from the artifact store."""
        with self.store.read() as s:
            row = self._dataset_row(s, name, version)
        if row.artifact_digest is None:
            raise NotFound(
                f"dataset {name!r} version {row.version} was logged with store_data=False; "
                "its data is not in the artifact store, log it again with store_data=True"
            )
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.ws.artifacts.get_bytes(row.artifact_digest)))

    @staticmethod
    def _dataset_row(session: Session, name: str, version: int | None) -> DatasetRow:
        query = select(DatasetRow).where(DatasetRow.name == name)
        if version is None:
            query = query.order_by(DatasetRow.version.desc()).limit(1)
        else:
            query = query.where(DatasetRow.version == version)
        row = session.scalar(query)
        if row is None:
            if version is None:
                raise NotFound(f"no dataset {name!r}; {_DATASETS_LISTED}")
            raise NotFound(f"dataset {name!r} has no version {version}; {_DATASETS_LISTED}")
        return row


def _dataset(row: DatasetRow) -> Dataset:
    return Dataset.model_validate(
        {
            "id": row.id,
            "name": row.name,
            "version": row.version,
            "digest": row.digest,
            "source": row.source,
            "num_rows": row.num_rows,
            "schema": row.schema_,
            "profile": row.profile,
            "artifact_digest": row.artifact_digest,
            "created_at": row.created_at,
            "created_by": row.created_by,
        }
    )


def _load_frame(data: Any, source: str) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise InvalidInput(f"no file at {str(path)!r}; give a DataFrame or a .csv/.parquet")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise InvalidInput(f"cannot read {path.name!r}; give a .csv or .parquet file")
        source = source or str(path)
    else:
        raise InvalidInput(
            f"cannot log a {type(data).__name__} as a dataset; give a DataFrame or a file path"
        )
    # Column names become strings (Parquet requires it) and the index is dropped: a dataset
    # is its columns, so a reordered or renumbered index is the same data.
    frame = frame.rename(columns=str).reset_index(drop=True)
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise InvalidInput(f"column names must be unique; rename {', '.join(duplicated)}")
    return frame, source


def _content_digest(frame: pd.DataFrame) -> str:
    """sha256 of the schema and of pandas' per-row hashes (``hash_pandas_object``).

    Chosen over hashing Parquet bytes because the Parquet writer embeds its own and the
    pandas version in the file, so equal data would hash differently after an upgrade;
    the row hashes depend only on the values, their order, and the column dtypes.
    """
    import pandas as pd

    h = hashlib.sha256()
    h.update(orjson.dumps([[name, str(dtype)] for name, dtype in frame.dtypes.items()]))
    try:
        rows = pd.util.hash_pandas_object(frame, index=False)
    except TypeError as exc:
        raise InvalidInput(
            f"the dataset has values that cannot be hashed ({exc}); use scalar columns"
        ) from None
    h.update(rows.to_numpy(dtype="<u8").tobytes())
    return "sha256:" + h.hexdigest()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _profile(frame: pd.DataFrame) -> dict[str, NumericProfile | CategoricalProfile]:
    """Per-column statistics. Numeric statistics cover the finite values; ``std`` is the
    sample standard deviation (ddof=1, pandas' convention); quantiles interpolate linearly
    (numpy's default)."""
    import numpy as np
    import pandas as pd

    profiles: dict[str, NumericProfile | CategoricalProfile] = {}
    for name in frame.columns:
        column = frame[name]
        missing = int(column.isna().sum())
        count = len(column) - missing
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.dropna().to_numpy(dtype="float64")
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                profiles[name] = NumericProfile(count=count, missing=missing)
                continue
            p25, p50, p75 = np.percentile(finite, [25, 50, 75])
            counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
            profiles[name] = NumericProfile(
                count=count,
                missing=missing,
                mean=_finite(np.mean(finite)),
                std=_finite(np.std(finite, ddof=1)) if finite.size > 1 else None,
                min=_finite(np.min(finite)),
                p25=_finite(p25),
                p50=_finite(p50),
                p75=_finite(p75),
                max=_finite(np.max(finite)),
                histogram=Histogram(counts=counts.tolist(), edges=edges.tolist()),
            )
        else:
            counts_by_value = column.value_counts(dropna=True)
            profiles[name] = CategoricalProfile(
                count=count,
                missing=missing,
                distinct=int(column.nunique(dropna=True)),
                top=[
                    ValueCount(value=str(v), count=int(c))
                    for v, c in counts_by_value.head(TOP_VALUES).items()
                ],
            )
    return profiles


_DATASETS_LISTED = "`modelyard datasets list` shows the logged datasets"
