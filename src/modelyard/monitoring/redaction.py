"""Personal input columns: what the prediction log keeps of them, and forgetting a subject.

An endpoint may mark input columns personal (``Endpoint.redact``: column -> action). The
gateway hands the model the real values; the prediction log's writer applies the actions
before a row becomes Parquet, so the segments, and the window profiles built from them,
never hold the original values:

- ``drop``: the column is left out.
- ``hash``: each value becomes the hex HMAC-SHA256 of its text under
  ``MODELYARD_REDACTION_KEY``: equal values stay equal (joins, counts, :func:`forget`), and
  nobody without the key can test a guess. Numbers are hashed as their shortest text
  (``123.0`` as ``123``), so a key given on the command line finds them.
- ``mask``: only the type and a length class stay: a string becomes ``*`` repeated to the
  next power of two of its length (4 to 64), a number its sign times the power of ten of
  its magnitude (``5551234`` -> ``1000000``), a boolean ``False``; missing stays missing.

:func:`forget` removes one subject's rows from an endpoint's log by the value of a key
column, rewriting the segments that hold them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from modelyard.errors import Conflict, InvalidInput

# pyarrow.compute (~0.2 s to import) is imported by forget(), not by a gateway's way to its
# first answer.
if TYPE_CHECKING:
    import pyarrow as pa

    from modelyard.config import Settings
    from modelyard.monitoring.predlog import PredictionLog
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.monitoring.redaction")

__all__ = [
    "ForgetResult",
    "RedactedColumns",
    "Redaction",
    "forget",
    "hash_texts",
    "redaction_key",
]

MIN_KEY_CHARS = 16
#: Distinct values (of each kind: texts, floats, integers) whose digests a Redaction keeps:
#: a column repeats its values (customer ids), and a digest costs more than its lookup.
DIGEST_CACHE = 16_384
_MASK_LENGTHS = (4, 8, 16, 32, 64)


def redaction_key(
    settings: Settings, *, required_for: str | None = None, otherwise: str = ""
) -> bytes | None:
    """``MODELYARD_REDACTION_KEY`` as bytes; with ``required_for`` (what needs it), an
    InvalidInput that says how to set it (and ``otherwise``, what else to do) when unset."""
    secret: Any = settings.redaction_key
    # a SecretStr; a plain str in settings made with model_copy(update=...), which skips validation
    text = str(getattr(secret, "get_secret_value", lambda: secret)() or "")
    if not text:
        if required_for is None:
            return None
        raise InvalidInput(
            f"{required_for} needs MODELYARD_REDACTION_KEY: set it (at least {MIN_KEY_CHARS} "
            "characters, the same for the server and every gateway) and restart the server"
            + (f", {otherwise}" if otherwise else "")
        )
    if len(text) < MIN_KEY_CHARS:
        raise InvalidInput(
            f"MODELYARD_REDACTION_KEY has {len(text)} characters; use at least "
            f"{MIN_KEY_CHARS} (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return text.encode()


def _text(value: Any) -> str | None:
    """The text a value is hashed as: numbers at their shortest (123.0 -> "123")."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    return str(value)


def _float_text(value: float) -> str | None:
    """:func:`_text` of a float."""
    if math.isnan(value):
        return None
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def hash_texts(key: bytes, texts: list[str]) -> list[str]:
    """The hex HMAC-SHA256 of each text under ``key``."""
    return [hmac.new(key, t.encode(), hashlib.sha256).hexdigest() for t in texts]


def _by_unique(values: np.ndarray, convert: Any) -> np.ndarray:
    """``convert`` applied once per distinct value (a column repeats its values: ids, codes);
    missing values (None, NaN) stay None."""
    flat = values.reshape(-1)
    if flat.dtype.kind == "O":
        texts = [_text(v) for v in flat]
        missing = np.fromiter((t is None for t in texts), dtype=bool, count=flat.size)
        keys: np.ndarray = np.array([t or "" for t in texts], dtype=object)
    else:
        keys = flat
        missing = np.isnan(flat) if flat.dtype.kind == "f" else np.zeros(flat.size, dtype=bool)
    uniques, inverse = np.unique(keys, return_inverse=True)
    out = np.asarray(convert(uniques), dtype=object)[inverse.reshape(-1)]
    out[missing] = None
    return out.reshape(values.shape)


class Redaction:
    """One endpoint's actions on its personal input columns, ready for the log's writer.

    Without a key, hashed columns are dropped instead (and said once in the log): the
    server refuses to configure hashing without one, so that only happens to a gateway
    started without the key the server has. The digests of the last ``DIGEST_CACHE``
    distinct values of each kind are kept (with the values, in this process's memory only):
    a value seen again costs a dictionary lookup, not a text and an HMAC.
    """

    def __init__(self, actions: Mapping[str, str], key: bytes | None) -> None:
        self.actions = dict(actions)
        self.key = key
        if key is None and "hash" in self.actions.values():
            log.warning(
                "MODELYARD_REDACTION_KEY is not set in this process: columns %s are dropped "
                "from the prediction log instead of hashed",
                sorted(c for c, a in self.actions.items() if a == "hash"),
            )
        # What becomes of the columns of a matrix with these names (see _MatrixPlan).
        self._plans: dict[tuple[str, ...], _MatrixPlan | None] = {}
        self._last: tuple[Any, _MatrixPlan | None] = (None, None)
        if key is not None:
            keyed = hmac.new(key, digestmod=hashlib.sha256)

            def digest(text: str) -> str:  # hash_texts of one text, from the keyed state
                h = keyed.copy()
                h.update(text.encode())
                return h.hexdigest()

            def of_float(value: float) -> str:  # never NaN: the caller keeps those missing
                return digest(_float_text(value) or "")

            def of_int(value: int) -> str:
                return digest(str(value))

            cached = functools.lru_cache(maxsize=DIGEST_CACHE)
            # One cache per kind: equal values of different kinds can have different texts
            # (True and 1, 2.0**53 and 2**53).
            self._digest_text: Callable[[str], str] = cached(digest)
            self._digest_float: Callable[[float], str] = cached(of_float)
            self._digest_int: Callable[[int], str] = cached(of_int)

    @classmethod
    def for_endpoint(cls, actions: Mapping[str, str], settings: Settings) -> Redaction | None:
        """The redaction of an endpoint's ``redact`` field (None: nothing to redact)."""
        if not actions:
            return None
        try:
            key = redaction_key(settings)
        except InvalidInput as exc:  # a key too short: hashed columns are dropped instead
            log.warning("%s", exc)
            key = None
        return cls(actions, key)

    def apply(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """``inputs`` as the log keeps them (the caller's mapping is not changed)."""
        matrix = getattr(inputs, "matrix", None)
        names = getattr(inputs, "names", None)
        if matrix is not None and names is not None:  # the gateway's validated numbers
            return self._apply_matrix(inputs, names, matrix)
        touched = [name for name in self.actions if name in inputs]
        if not touched:
            return inputs
        out = dict(inputs)
        for name in touched:
            action = self.actions[name]
            if action == "drop" or (action == "hash" and self.key is None):
                del out[name]
            elif action == "hash":
                out[name] = self.hash(np.asarray(out[name]))
            else:
                out[name] = mask(np.asarray(out[name]))
        return out

    def _apply_matrix(
        self, inputs: Mapping[str, Any], names: tuple[str, ...], matrix: np.ndarray
    ) -> Mapping[str, Any]:
        """:meth:`apply` of columns that are the rows of one matrix: the numbers that stay
        (kept or masked) stay one matrix, so the log's writer still joins them at once."""
        last = self._last
        if names is last[0]:  # the same signature as the last request
            plan = last[1]
        else:
            if names not in self._plans:
                if len(self._plans) >= 64:
                    self._plans.clear()
                self._plans[names] = self._matrix_plan(names)
            plan = self._plans[names]
            self._last = (names, plan)
        if plan is None:
            return inputs
        kept = matrix[plan.rows]  # a copy: the values hashed or dropped are not in it
        for i in plan.masked:
            kept[i] = mask(kept[i])
        extra = {name: self.hash(matrix[row]) for name, row in plan.hashed}
        return RedactedColumns(plan.names, kept, extra, plan.order)

    def _matrix_plan(self, names: tuple[str, ...]) -> _MatrixPlan | None:
        if not any(name in self.actions for name in names):
            return None
        rows: list[int] = []
        masked: list[int] = []
        hashed: list[tuple[str, int]] = []
        order: list[str] = []
        for row, name in enumerate(names):
            action = self.actions.get(name)
            if action == "drop" or (action == "hash" and self.key is None):
                continue
            order.append(name)
            if action == "hash":
                hashed.append((name, row))
                continue
            if action == "mask":
                masked.append(len(rows))
            rows.append(row)
        return _MatrixPlan(
            rows=np.array(rows, dtype=np.intp),
            names=tuple(names[row] for row in rows),
            masked=masked,
            hashed=hashed,
            order=tuple(order),
        )

    def hash(self, values: np.ndarray) -> np.ndarray:
        """Each value's hex HMAC-SHA256 (of its text, see :func:`_text`); missing values
        (None, NaN) stay None. An object array of ``values``' shape."""
        assert self.key is not None
        flat = values.reshape(-1)
        kind = flat.dtype.kind
        items = flat.tolist()  # Python objects, as .item() makes them
        digests: list[str | None]
        if kind == "f":
            of_float = self._digest_float
            digests = [None if v != v else of_float(v) for v in items]  # v != v: NaN
        elif kind in "iu":
            digests = list(map(self._digest_int, items))
        elif kind == "U":
            digests = list(map(self._digest_text, items))
        elif kind == "O":  # as _text makes them; None (or NaN) is missing
            of_text = self._digest_text
            texts = [v if type(v) is str else _text(v) for v in items]
            digests = [None if t is None else of_text(t) for t in texts]
        else:  # booleans, bytes, dates...: never missing (a NaT is hashed as "None")
            of_text = self._digest_text
            digests = [of_text("None" if v is None else _text(v) or "") for v in items]
        out = np.empty(len(digests), dtype=object)
        out[:] = digests
        return out.reshape(values.shape)


@dataclass(frozen=True)
class _MatrixPlan:
    """What a redaction does to the columns of a matrix with one set of names."""

    rows: np.ndarray  # the matrix rows that stay numbers (kept or masked), in order
    names: tuple[str, ...]  # their names
    masked: list[int]  # which of them are masked (positions in rows)
    hashed: list[tuple[str, int]]  # (name, matrix row) of each hashed column
    order: tuple[str, ...]  # every column the log keeps, in the request's order


class RedactedColumns(Mapping[str, np.ndarray]):
    """A matrix of columns after :meth:`Redaction.apply`: the numbers that stay as one
    (k, n) ``matrix`` (``names`` gives its rows, as in a ``Columns``), the hashed columns
    in ``extra``; ``order`` is every column, in the request's order."""

    __slots__ = ("_positions", "extra", "matrix", "names", "order")

    def __init__(
        self,
        names: tuple[str, ...],
        matrix: np.ndarray,
        extra: dict[str, np.ndarray],
        order: tuple[str, ...],
    ) -> None:
        self.names = names
        self.matrix = matrix
        self.extra = extra
        self.order = order
        self._positions: dict[str, int] | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        found = self.extra.get(name)
        if found is not None:
            return found
        if self._positions is None:
            self._positions = {n: i for i, n in enumerate(self.names)}
        return self.matrix[self._positions[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)

    def __contains__(self, name: object) -> bool:
        return name in self.extra or name in self.names

    def __repr__(self) -> str:
        return f"RedactedColumns({list(self.order)!r}, rows={self.matrix.shape[1]})"


def mask(values: np.ndarray) -> np.ndarray:
    """Values reduced to their type and length class (see the module documentation)."""
    kind = values.dtype.kind
    if kind == "b":
        return np.zeros(values.shape, dtype=bool)
    if kind in "iuf":
        x = values.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            power = np.where(x != 0, 10.0 ** np.floor(np.log10(np.abs(x))), 0.0)
        masked = np.where(np.isfinite(x), np.sign(x) * power, x)
        return masked.astype(values.dtype) if kind in "iu" else masked

    def convert(uniques: np.ndarray) -> list[str]:
        return ["*" * _mask_length(len(_text(u) or "")) for u in uniques]

    return _by_unique(values, convert)


def _mask_length(n: int) -> int:
    if n == 0:
        return 0
    for size in _MASK_LENGTHS:
        if n <= size:
            return size
    return _MASK_LENGTHS[-1]


# -- forgetting a subject ---------------------------------------------------------------------


class ForgetResult(BaseModel):
    """What :func:`forget` removed from an endpoint's prediction log."""

    endpoint: str
    column: str
    rows: int
    segments: int
    hashed: bool  # the value was also looked for as its HMAC (the column is, or was, hashed)


def forget(
    ws: Workspace, plog: PredictionLog, endpoint: str, column: str, value: str
) -> ForgetResult:
    """Remove every logged row of ``endpoint`` whose input ``column`` is ``value`` (or its
    HMAC, when a key is set), segment by segment; write one audit record.

    Each affected segment is written anew (the rows kept) and its index row updated in one
    transaction with the audit record; the old segments' blobs are deleted after it commits.
    A crash before the commit leaves the log as it was (and a new blob nobody points to).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from modelyard.monitoring.predlog import INPUT_PREFIX, segment_bytes
    from modelyard.store.tables import PredictionSegmentRow

    action = ws.endpoints.get(endpoint).redact.get(column)
    if action == "mask":
        raise InvalidInput(
            f"{column!r} is masked in {endpoint}'s prediction log: masked values cannot tell "
            "one subject from another; forget by a column that is kept or hashed"
        )
    key = redaction_key(
        ws.settings,
        required_for=f"finding the rows of hashed column {column!r}" if action == "hash" else None,
    )
    # A kept text column holds the value as sent: only it matches ("007" is not "7"). A
    # hashed column holds the HMAC of the value's text, and a number was hashed as its
    # shortest text: both forms are looked for among the digests (which no id can equal).
    texts = {value}
    number = _number(value)
    hashed = key is not None
    if key is not None:  # the column may be hashed now, or may have been once
        forms = {value} | ({_text(number) or value} if number is not None else set())
        texts |= set(hash_texts(key, sorted(forms)))
    name = INPUT_PREFIX + column
    changes: list[tuple[str, str, tuple[str, int, datetime, datetime] | None]] = []
    removed = 0
    try:
        for segment in plog.segments(endpoint):
            data = ws.artifacts.get_bytes(segment.digest)
            source = pa.BufferReader(data)
            if name not in pq.read_schema(source).names:
                continue
            keys = pq.read_table(pa.BufferReader(data), columns=[name])[name]
            match = _matches(keys, texts, number)
            count = int(pc.sum(match).as_py() or 0)
            if count == 0:
                continue
            table = pq.read_table(pa.BufferReader(data))
            kept = table.filter(pc.invert(match))
            removed += count
            if kept.num_rows == 0:
                changes.append((segment.id, segment.digest, None))
                continue
            bounds = pc.min_max(kept["at"]).as_py()
            digest = ws.artifacts.put_bytes(segment_bytes(kept))
            changes.append((segment.id, segment.digest, (digest, kept.num_rows, *bounds.values())))
        with ws.store.write(ws.actor) as tx:
            for segment_id, old, new in changes:
                row = tx.session.get(PredictionSegmentRow, segment_id, with_for_update=True)
                if row is None or row.digest != old:
                    raise Conflict(
                        f"{endpoint}'s prediction log changed while its rows were searched "
                        "(another forget at the same time?); run the same forget again"
                    )
                if new is None:
                    tx.session.delete(row)
                else:
                    row.digest, row.rows, row.start_at, row.end_at = new
            tx.record(
                "predictions.forget",
                "endpoint",
                endpoint,
                None,
                {"column": column, "rows": removed, "segments": len(changes), "hashed": hashed},
            )
    except BaseException:
        for _, _, new in changes:  # written for nothing: the log still points to the old ones
            if new is not None:
                _delete_unreferenced(ws, new[0])
        raise
    for _, old, _ in changes:
        _delete_unreferenced(ws, old)
    log.info("forgot %d rows of endpoint %s by %s", removed, endpoint, column)
    return ForgetResult(
        endpoint=endpoint, column=column, rows=removed, segments=len(changes), hashed=hashed
    )


def _delete_unreferenced(ws: Workspace, digest: str) -> None:
    """Delete a segment's blob unless a segment row still points to it."""
    from sqlalchemy import func, select

    from modelyard.store.tables import PredictionSegmentRow

    with ws.store.read() as session:
        users = session.scalar(
            select(func.count())
            .select_from(PredictionSegmentRow)
            .where(PredictionSegmentRow.digest == digest)
        )
    if not users:
        try:
            ws.artifacts.delete(digest)
        except OSError:
            log.warning("could not delete the old prediction segment %s", digest, exc_info=True)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _matches(keys: pa.ChunkedArray, texts: set[str], number: float | None) -> pa.ChunkedArray:
    """Which logged values of the key column are the subject's (nulls never are)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = keys.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        found = pc.is_in(keys, value_set=pa.array(sorted(texts), pa.string()))
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        if number is None:
            return pa.chunked_array([pa.array(np.zeros(len(keys), dtype=bool))])
        found = pc.equal(pc.cast(keys, pa.float64()), pa.scalar(number, pa.float64()))
    elif pa.types.is_boolean(kind):
        wanted = {t.lower() for t in texts}
        found = pc.is_in(
            pc.utf8_lower(pc.cast(keys, pa.string())),
            value_set=pa.array(sorted(wanted), pa.string()),
        )
    else:
        raise InvalidInput(
            f"the key column's values are {kind} in the prediction log; forget by a column of "
            "single strings or numbers"
        )
    return pc.fill_null(found, False)
