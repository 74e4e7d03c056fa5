"""Data profiles: small, mergeable, JSON-serialisable summaries of feature distributions.

A :class:`Profile` summarises a batch of rows per feature, so that drift can be judged without
the raw data: a reference profile made from training data travels with a model version (to an
edge device too), and window profiles made from the prediction log combine by :meth:`merge`.

Numbers (:class:`NumericProfile`) keep exact counts (finite, missing, infinite), min, max, mean
and the sum of squared deviations (merged with Chan's formula), plus a :class:`Digest`: a
merging t-digest of about 200 centroids (``compression=400``; 3 KB), each the exact mean and
count of a run of sorted values. Frequent values stay exact, and so does a digest of at most 200
distinct values. Categories (:class:`CategoricalProfile`) keep exact counts of their stringified
values, at most 1000 distinct: the least frequent beyond that are summed in ``other``.

Why a t-digest and not a KLL sketch (Apache DataSketches, k=200, was the first choice): drift
verdicts hinge on the normed Wasserstein distance (threshold 0.1), and KLL's random compaction
moved it by 0.02-0.08 between two samples of one unchanged distribution (1M rows, lognormal
worst), while centroids, being exact means, keep it within 1e-3. Building it is one
``np.sort`` (about 20 ms per million values, half of KLL's update) and it is smaller.

Every feature of a profile covers all of its rows: a batch without a column counts as missing
rows for that feature, so ``count + missing + infinite`` (numbers) or ``total + missing``
(categories) always equals :attr:`Profile.rows`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.errors import InvalidInput

__all__ = [
    "DEFAULT_COMPRESSION",
    "FORMAT_VERSION",
    "MAX_CATEGORIES",
    "CategoricalProfile",
    "Digest",
    "FeatureKind",
    "FeatureProfile",
    "NumericProfile",
    "Profile",
]

FORMAT_VERSION: Final = 1
DEFAULT_COMPRESSION: Final = 400  # t-digest compression: at most ~200 centroids per feature
MIN_COMPRESSION: Final = 20
MAX_COMPRESSION: Final = 20_000
MAX_CATEGORIES: Final = 1000  # distinct values kept per categorical feature

FeatureKind = Literal["numeric", "categorical"]
_KINDS: Final = ("numeric", "categorical")
_FLOAT_MAX: Final = sys.float_info.max


def _finite(x: float) -> float:
    """``x`` clipped to the finite range: moments of values near 1e308 overflow, JSON has no inf."""
    if math.isnan(x):
        return 0.0
    return min(max(x, -_FLOAT_MAX), _FLOAT_MAX)


def _k_boundaries(compression: int) -> npt.NDArray[np.float64]:
    """Cluster boundaries in rank space: equal steps of the t-digest k1 scale function.

    k1(q) = compression / (2 pi) * asin(2q - 1): steps are narrow near ranks 0 and 1, so the
    tails (where Wasserstein distances and extreme quantiles live) get small clusters.
    """
    j = np.arange(-(compression // 4), compression // 4 + 1)
    return np.asarray((1.0 + np.sin(2.0 * np.pi * j / compression)) / 2.0)


@dataclass(eq=False)
class Digest:
    """A merging t-digest (Dunning & Ertl, 2019) built with numpy: sorted centroids.

    Each centroid is the exact mean and count of a run of consecutive sorted values;
    ``atoms`` marks centroids whose values are all equal (discrete values stay exact, and
    so does any digest of at most ``compression / 2`` values). Clusters are cut at equal steps
    of the k1 scale function, never inside a run of equal values, and re-cut the same way
    when digests merge, so a digest holds about ``compression / 2`` centroids whatever the
    number of values.
    """

    means: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    atoms: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=bool))
    compression: int = DEFAULT_COMPRESSION

    @classmethod
    def from_sorted(cls, x: npt.NDArray[np.float64], compression: int) -> Digest:
        """The digest of sorted finite values (one pass of ``np.add.reduceat``)."""
        n = x.size
        if n == 0:
            return cls(compression=compression)
        new_run = x[1:] != x[:-1]
        if n <= compression // 2 or np.count_nonzero(new_run) < compression // 2:
            # Few (distinct) values: a centroid per value, so the digest is exact.
            starts = np.concatenate([[0], np.flatnonzero(new_run) + 1])
        else:
            starts = np.floor(_k_boundaries(compression)[:-1] * n).astype(np.int64)
            starts = np.unique(starts[starts < n])
        # Snap each cut to the start of its run of equal values: runs are never split.
        starts = np.unique(np.searchsorted(x, x[starts], side="left"))
        ends = np.append(starts[1:], n)
        counts = (ends - starts).astype(np.float64)
        first, last = x[starts], x[ends - 1]
        with np.errstate(over="ignore", invalid="ignore"):
            means = np.add.reduceat(x, starts) / counts
        atoms = first == last
        # Rounding must not move a mean out of its run (nor an atom off its value).
        means = np.where(atoms, first, np.clip(np.nan_to_num(means), first, last))
        return cls(means, counts, atoms, compression)

    def merge(self, other: Digest) -> Digest:
        compression = min(self.compression, other.compression)
        means = np.concatenate([self.means, other.means])
        order = np.argsort(means, kind="stable")
        return _compress(
            means[order],
            np.concatenate([self.weights, other.weights])[order],
            np.concatenate([self.atoms, other.atoms])[order],
            compression,
        )

    def copy(self) -> Digest:
        return Digest(self.means.copy(), self.weights.copy(), self.atoms.copy(), self.compression)


def _groups(breaks: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """Start index of each group, from a flag per element "a new group starts here"."""
    breaks[0] = True
    return np.flatnonzero(breaks)


def _reduce(
    m: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    a: npt.NDArray[np.bool_],
    starts: npt.NDArray[np.intp],
    compression: int,
) -> Digest:
    weights = np.add.reduceat(w, starts)
    with np.errstate(over="ignore", invalid="ignore"):
        means = np.add.reduceat(w * m, starts) / weights
    lo, hi = np.minimum.reduceat(m, starts), np.maximum.reduceat(m, starts)
    atoms = np.logical_and.reduceat(a, starts) & (lo == hi)
    means = np.where(atoms, lo, np.clip(np.nan_to_num(means), lo, hi))
    return Digest(means, weights, atoms, compression)


def _compress(
    m: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    a: npt.NDArray[np.bool_],
    compression: int,
) -> Digest:
    """Merge sorted centroids: equal atoms always, then clusters per k1 step if too many."""
    if m.size == 0:
        return Digest(compression=compression)
    same_atom = np.zeros(m.size, dtype=bool)
    same_atom[1:] = (m[1:] == m[:-1]) & a[1:] & a[:-1]
    if same_atom.any():
        merged = _reduce(m, w, a, _groups(~same_atom), compression)
        m, w, a = merged.means, merged.weights, merged.atoms
    if m.size <= compression // 2:
        return Digest(m, w, a, compression)
    total = float(w.sum())
    q_mid = (np.cumsum(w) - w / 2) / total
    step = np.floor(compression / (2 * np.pi) * np.arcsin(np.clip(2 * q_mid - 1, -1, 1)))
    # An atom heavier than a cluster's share stays alone: a frequent value keeps its mass.
    heavy = a & (w * (compression // 2) >= total)
    breaks = np.zeros(m.size, dtype=bool)
    breaks[1:] = (step[1:] != step[:-1]) | heavy[1:] | heavy[:-1]
    return _reduce(m, w, a, _groups(breaks), compression)


@dataclass(eq=False)
class NumericProfile:
    """Distribution of a numeric feature: exact moments and counts, a t-digest.

    ``count`` finite values, ``missing`` None/NaN, ``infinite`` +/-inf (counted, never used in
    statistics). ``mean`` and ``m2`` (sum of squared deviations from the mean) cover the finite
    values; ``min``/``max`` are None while ``count`` is 0.
    """

    kind: ClassVar[FeatureKind] = "numeric"

    count: int = 0
    missing: int = 0
    infinite: int = 0
    min: float | None = None
    max: float | None = None
    mean: float = 0.0
    m2: float = 0.0
    digest: Digest = field(default_factory=Digest)

    @property
    def rows(self) -> int:
        return self.count + self.missing + self.infinite

    @property
    def variance(self) -> float:
        """Population variance (ddof=0, numpy's default) of the finite values; 0 when empty."""
        return self.m2 / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0) of the finite values."""
        return math.sqrt(self.variance)

    @property
    def exact(self) -> bool:
        """True when the digest holds every value exactly (as values with multiplicities)."""
        return bool(self.digest.atoms.all())

    def add(self, values: npt.NDArray[np.float64]) -> None:
        """Add a 1-D float64 batch (NaN = missing, +/-inf = infinite)."""
        n = int(values.size)
        if n == 0:
            return
        owned = not values.flags.c_contiguous  # a DataFrame's column may be strided: copy once
        x = np.ascontiguousarray(values, dtype=np.float64)
        finite = np.isfinite(x)
        n_finite = int(np.count_nonzero(finite))
        if n_finite < n:
            n_nan = int(np.count_nonzero(np.isnan(x)))
            self.missing += n_nan
            self.infinite += n - n_finite - n_nan
            x, owned = x[finite], True
        if n_finite == 0:
            return
        # The digest needs sorted values; sort a copy, never the caller's array.
        if owned:
            x.sort()
        else:
            x = np.sort(x)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = float(x.mean())
            dev = x - mean
            m2 = float(dev @ dev)
        self._add_moments(n_finite, _finite(mean), _finite(m2), float(x[0]), float(x[-1]))
        batch = Digest.from_sorted(x, self.digest.compression)
        self.digest = batch if self.digest.means.size == 0 else self.digest.merge(batch)

    def add_missing(self, n: int) -> None:
        self.missing += n

    def _add_moments(self, n: int, mean: float, m2: float, lo: float, hi: float) -> None:
        # Chan et al.: combine (count, mean, M2) of two disjoint sets exactly.
        total = self.count + n
        delta = mean - self.mean
        with np.errstate(over="ignore", invalid="ignore"):
            self.mean = _finite(self.mean + delta * (n / total))
            self.m2 = _finite(self.m2 + m2 + delta * delta * (self.count * n / total))
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self.count = total

    def copy(self) -> NumericProfile:
        out = copy.copy(self)
        out.digest = self.digest.copy()
        return out

    def merge(self, other: NumericProfile) -> NumericProfile:
        """A new profile of both inputs' rows (the digest keeps the smaller compression)."""
        out = NumericProfile(
            missing=self.missing + other.missing,
            infinite=self.infinite + other.infinite,
            digest=self.digest.merge(other.digest),
        )
        for part in (self, other):
            if part.count:
                assert part.min is not None and part.max is not None
                out._add_moments(part.count, part.mean, part.m2, part.min, part.max)
        return out

    def weighted_values(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The centroids' means (sorted) and counts: a weighted sample standing for the values.

        Exactly the values (with multiplicities) when :attr:`exact`; statistics computed on it
        with scipy's weighted functions approximate those of the raw values.
        """
        return self.digest.means, self.digest.weights

    def cdf_knots(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The CDF as a polyline (x, F): a jump at each atom, a centroid's mass centred on its
        mean otherwise, from (min, 0) to (max, 1). Empty without values."""
        if self.count == 0:
            return np.empty(0), np.empty(0)
        d = self.digest
        total = float(d.weights.sum())
        before = (np.cumsum(d.weights) - d.weights) / total
        reps = 1 + d.atoms.astype(np.intp)
        first = np.cumsum(reps) - reps
        xk = np.repeat(d.means, reps)
        fk = np.empty(xk.size)
        fk[first] = np.where(d.atoms, before, before + d.weights / (2 * total))
        fk[first[d.atoms] + 1] = before[d.atoms] + d.weights[d.atoms] / total
        assert self.min is not None and self.max is not None
        return (np.concatenate([[self.min], xk, [self.max]]), np.concatenate([[0.0], fk, [1.0]]))

    def cdf(
        self, points: Sequence[float] | npt.ArrayLike, *, inclusive: bool = True
    ) -> npt.NDArray[np.float64]:
        """Share of finite values <= each point (< with ``inclusive=False``); NaN when empty."""
        pts = np.asarray(points, dtype=np.float64).ravel()
        if self.count == 0:
            return np.full(pts.shape, np.nan)
        xk, fk = self.cdf_knots()
        i = np.searchsorted(xk, pts, side="right" if inclusive else "left")
        inside = (i > 0) & (i < xk.size)
        j = np.clip(i, 1, xk.size - 1)
        x0, x1, f0, f1 = xk[j - 1], xk[j], fk[j - 1], fk[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(x1 > x0, (pts - x0) / (x1 - x0), 1.0)
        out = np.where(i >= xk.size, 1.0, 0.0)
        return np.where(inside, f0 + (f1 - f0) * np.clip(frac, 0.0, 1.0), out)

    def quantiles(self, qs: Sequence[float] | npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Values at ranks ``qs`` (smallest x with cdf(x) >= q; exact for exact digests)."""
        ranks = np.clip(np.asarray(qs, dtype=np.float64).ravel(), 0.0, 1.0)
        if self.count == 0:
            return np.full(ranks.shape, np.nan)
        xk, fk = self.cdf_knots()
        # 1e-12: a rank that is k/n up to rounding selects the k-th value, not the next one.
        j = np.clip(np.searchsorted(fk, ranks - 1e-12, side="left"), 1, xk.size - 1)
        x0, x1, f0, f1 = xk[j - 1], xk[j], fk[j - 1], fk[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(f1 > f0, (ranks - f0) / (f1 - f0), 1.0)
        return np.asarray(x0 + (x1 - x0) * np.clip(frac, 0.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        d = self.digest
        return {
            "kind": "numeric",
            "count": self.count,
            "missing": self.missing,
            "infinite": self.infinite,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "m2": self.m2,
            "compression": d.compression,
            "means": _b64(d.means.astype("<f8").tobytes()),
            "weights": _b64(d.weights.astype("<f8").tobytes()),
            "atoms": _b64(np.packbits(d.atoms).tobytes()),
        }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(eq=False)
class CategoricalProfile:
    """Counts of a categorical feature's values, stringified (``True``, ``3``, ``a``).

    At most :data:`MAX_CATEGORIES` distinct values are kept (the most frequent); the others'
    rows are summed in ``other``. ``missing`` counts None/NaN.
    """

    kind: ClassVar[FeatureKind] = "categorical"

    counts: dict[str, int] = field(default_factory=dict)
    other: int = 0
    missing: int = 0

    @property
    def total(self) -> int:
        """Non-missing values."""
        return sum(self.counts.values()) + self.other

    @property
    def rows(self) -> int:
        return self.total + self.missing

    def frequencies(self) -> dict[str, float]:
        """Each kept category's share of the non-missing values (``other`` not included)."""
        total = self.total
        return {k: v / total for k, v in self.counts.items()} if total else {}

    def add_counts(self, counts: Mapping[str, int], missing: int) -> None:
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.missing += missing
        self._cap()

    def add_missing(self, n: int) -> None:
        self.missing += n

    def _cap(self) -> None:
        if len(self.counts) <= MAX_CATEGORIES:
            return
        # Most frequent first, ties by name, so the result does not depend on arrival order.
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.counts = dict(ranked[:MAX_CATEGORIES])
        self.other += sum(n for _, n in ranked[MAX_CATEGORIES:])

    def copy(self) -> CategoricalProfile:
        return CategoricalProfile(counts=dict(self.counts), other=self.other, missing=self.missing)

    def merge(self, other: CategoricalProfile) -> CategoricalProfile:
        out = self.copy()
        out.other += other.other
        out.add_counts(other.counts, other.missing)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "counts": dict(self.counts),
            "other": self.other,
            "missing": self.missing,
        }


FeatureProfile = NumericProfile | CategoricalProfile


# --- input columns ------------------------------------------------------------------------

_Column: TypeAlias = np.ndarray | pd.Series | pa.Array | pa.ChunkedArray


def _columns(columns: Any) -> tuple[list[tuple[str, _Column]], int]:
    """(name, 1-D column) pairs and their common length, from any accepted container."""
    if isinstance(columns, pd.DataFrame):
        if not columns.columns.is_unique:
            raise InvalidInput("the DataFrame has duplicate column names")
        pairs: list[tuple[Any, Any]] = [(c, columns[c]) for c in columns.columns]
    elif isinstance(columns, pa.Table | pa.RecordBatch):
        pairs = list(zip(columns.column_names, columns.columns, strict=True))
    elif isinstance(columns, Mapping):
        pairs = list(columns.items())
    else:
        raise InvalidInput(
            f"columns must be a mapping of name to 1-D array or a DataFrame, "
            f"not {type(columns).__name__}"
        )
    out: list[tuple[str, _Column]] = []
    lengths: set[int] = set()
    for name, values in pairs:
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"column names must be non-empty strings, not {name!r}")
        if not isinstance(values, np.ndarray | pd.Series | pa.Array | pa.ChunkedArray):
            if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
                raise InvalidInput(f"column {name!r} must be a 1-D array or list of values")
            values = np.asarray(values) if len(values) else np.empty(0, dtype=object)
        if isinstance(values, np.ndarray) and values.ndim != 1:
            raise InvalidInput(f"column {name!r} must be 1-D, not of shape {values.shape}")
        out.append((name, values))
        lengths.add(len(values))
    if len(lengths) > 1:
        raise InvalidInput(f"columns have different lengths: {sorted(lengths)}")
    return out, lengths.pop() if lengths else 0


_NUMERIC_INFERRED: Final = frozenset({"integer", "floating", "mixed-integer-float", "decimal"})


def _infer_kind(name: str, values: _Column) -> FeatureKind:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        t = values.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return "numeric"
        if (
            pa.types.is_boolean(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_dictionary(t)
            or pa.types.is_null(t)
        ):
            return "categorical"
        raise InvalidInput(f"column {name!r} has unsupported type {t}: use numbers or strings")
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        return "numeric"
    if isinstance(dtype, np.dtype) and dtype.kind in "bUS":
        return "categorical"
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        # Lists with None become object arrays: look at the values, not the container.
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        return "numeric" if inferred in _NUMERIC_INFERRED else "categorical"
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):  # pandas nullable Int64/Float64
        return "numeric"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        return "categorical"
    raise InvalidInput(
        f"column {name!r} has unsupported dtype {dtype}: convert it to numbers or strings"
    )


def _as_float(name: str, values: _Column) -> npt.NDArray[np.float64]:
    try:
        if isinstance(values, pa.Array | pa.ChunkedArray):
            return np.asarray(
                pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
            )
        if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
            return values.astype(np.float64, copy=False)
        series = values if isinstance(values, pd.Series) else pd.Series(values, copy=False)
        if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biuf":
            return series.to_numpy(dtype=np.float64, copy=False)
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInput(f"column {name!r} is declared numeric but holds non-numbers: {e}") from e


def _category_key(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value.item() if isinstance(value, np.generic) else value)


def _value_counts(values: _Column) -> tuple[dict[str, int], int]:
    """Counts per stringified value and the number of missing values."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        series = values.to_pandas()
    else:
        series = values if isinstance(values, pd.Series) else pd.Series(values, copy=False)
    vc = series.value_counts(dropna=True, sort=False)
    counts: dict[str, int] = {}
    for value, n in zip(vc.index.tolist(), vc.to_numpy().tolist(), strict=True):
        key = _category_key(value)  # 1 and "1" share a key: counts add up
        counts[key] = counts.get(key, 0) + int(n)
    return counts, len(series) - int(vc.sum())


# --- the profile --------------------------------------------------------------------------


@dataclass(eq=False)
class Profile:
    """Per-feature profiles of ``rows`` rows; see the module documentation."""

    rows: int = 0
    features: dict[str, FeatureProfile] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        columns: Mapping[str, Any] | pd.DataFrame | pa.Table,
        *,
        kinds: Mapping[str, str] | None = None,
        compression: int = DEFAULT_COMPRESSION,
    ) -> Profile:
        """Profile ``columns`` (name -> 1-D array, list, Series, Arrow array; or a DataFrame).

        ``kinds`` maps names to "numeric" or "categorical"; by default booleans, strings,
        objects and pandas categories are categorical and numbers numeric. ``compression`` is
        the t-digest compression of new numeric features (about half as many centroids).
        """
        profile = cls()
        profile.update(columns, kinds=kinds, compression=compression)
        return profile

    def update(
        self,
        columns: Mapping[str, Any] | pd.DataFrame | pa.Table,
        *,
        kinds: Mapping[str, str] | None = None,
        compression: int = DEFAULT_COMPRESSION,
    ) -> None:
        """Add a batch of rows in place; a new column's earlier rows count as missing.

        The batch is checked and converted whole before anything changes, so a rejected
        batch (:class:`~modelyard.errors.InvalidInput`) leaves the profile as it was.
        """
        kinds = dict(kinds or {})
        for name, kind in kinds.items():
            if kind not in _KINDS:
                raise InvalidInput(
                    f"kind of {name!r} must be 'numeric' or 'categorical', not {kind!r}"
                )
        if not MIN_COMPRESSION <= compression <= MAX_COMPRESSION:
            raise InvalidInput(
                f"compression must be between {MIN_COMPRESSION} and "
                f"{MAX_COMPRESSION}, not {compression}"
            )
        pairs, n = _columns(columns)
        prepared: list[tuple[str, FeatureKind, Any]] = []
        for name, values in pairs:
            existing = self.features.get(name)
            kind = kinds.get(name) or (existing.kind if existing else _infer_kind(name, values))
            if existing is not None and kind != existing.kind:
                raise InvalidInput(
                    f"column {name!r} is {existing.kind} in this profile, not {kind}"
                )
            data = _as_float(name, values) if kind == "numeric" else _value_counts(values)
            prepared.append((name, kind, data))  # type: ignore[arg-type]
        seen = set()
        for name, kind, data in prepared:
            seen.add(name)
            feature = self.features.get(name)
            if feature is None:
                feature = (
                    NumericProfile(digest=Digest(compression=compression))
                    if kind == "numeric"
                    else CategoricalProfile()
                )
                feature.add_missing(self.rows)
                self.features[name] = feature
            if isinstance(feature, NumericProfile):
                feature.add(data)
            else:
                feature.add_counts(*data)
        for name, feature in self.features.items():
            if name not in seen:
                feature.add_missing(n)
        self.rows += n

    def merge(self, other: Profile) -> Profile:
        """A new profile of both inputs' rows; a feature one side lacks is missing there."""
        out = Profile(rows=self.rows + other.rows)
        for name in {**self.features, **other.features}:
            a, b = self.features.get(name), other.features.get(name)
            merged: FeatureProfile
            if a is not None and b is not None:
                merged = _merge_features(name, a, b)
            elif a is not None:
                merged = a.copy()
                merged.add_missing(other.rows)
            else:
                assert b is not None
                merged = b.copy()
                merged.add_missing(self.rows)
            out.features[name] = merged
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe document (digest arrays as base64 of little-endian float64)."""
        return {
            "version": FORMAT_VERSION,
            "rows": self.rows,
            "features": {name: f.to_dict() for name, f in self.features.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_dict`'s output; InvalidInput if it is not one."""
        try:
            doc = _ProfileDoc.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "profile"
            raise InvalidInput(f"not a valid profile: {where}: {err['msg']}") from e
        if doc.version != FORMAT_VERSION:
            raise InvalidInput(
                f"profile version {doc.version} is not supported "
                f"(this modelyard reads version {FORMAT_VERSION})"
            )
        profile = cls(rows=doc.rows)
        for name, fdoc in doc.features.items():
            feature = fdoc.build(name)
            if feature.rows != doc.rows:
                raise InvalidInput(
                    f"not a valid profile: feature {name!r} covers "
                    f"{feature.rows} rows, the profile {doc.rows}"
                )
            profile.features[name] = feature
        return profile


def _merge_features(name: str, a: FeatureProfile, b: FeatureProfile) -> FeatureProfile:
    if isinstance(a, NumericProfile):
        if isinstance(b, NumericProfile):
            return a.merge(b)
    elif isinstance(b, CategoricalProfile):
        return a.merge(b)
    raise InvalidInput(
        f"feature {name!r} is {a.kind} in one profile and {b.kind} in the "
        f"other: they cannot be merged"
    )


# --- the serialised form, validated by pydantic ------------------------------------------

_Count = Annotated[int, Field(ge=0)]
_Float = Annotated[float, Field(allow_inf_nan=False)]


class _NumericDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["numeric"]
    count: _Count
    missing: _Count
    infinite: _Count
    min: _Float | None
    max: _Float | None
    mean: _Float
    m2: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    compression: Annotated[int, Field(ge=MIN_COMPRESSION, le=MAX_COMPRESSION)]
    means: str
    weights: str
    atoms: str

    def build(self, name: str) -> NumericProfile:
        def bad(why: str) -> InvalidInput:
            return InvalidInput(f"not a valid profile: feature {name!r}: {why}")

        try:
            means = np.frombuffer(base64.b64decode(self.means, validate=True), dtype="<f8")
            weights = np.frombuffer(base64.b64decode(self.weights, validate=True), dtype="<f8")
            bits = np.frombuffer(base64.b64decode(self.atoms, validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError) as e:
            raise bad(f"the digest does not decode ({e})") from e
        n = means.size
        if weights.size != n or bits.size != (n + 7) // 8:
            raise bad("the digest's arrays differ in length")
        atoms = np.unpackbits(bits)[:n].astype(bool)
        if (self.min is None) != (self.count == 0) or (self.max is None) != (self.count == 0):
            raise bad("min and max must be set exactly when count > 0")
        if n > 2 * self.compression or (n == 0) != (self.count == 0):
            raise bad(f"{n} centroids do not fit count {self.count}")
        if n and (
            not np.all(np.isfinite(means))
            or not np.all(np.diff(means) >= 0)
            or self.min is None
            or self.max is None
            or self.min > self.max
            or means[0] < self.min
            or means[-1] > self.max
        ):
            raise bad("centroid means must be finite, sorted and within [min, max]")
        if (
            not np.all(np.isfinite(weights))
            or not np.all(weights > 0)
            or abs(float(weights.sum()) - self.count) > 0.5
        ):
            raise bad(f"centroid weights must be positive and sum to count {self.count}")
        digest = Digest(
            means.astype(np.float64), weights.astype(np.float64), atoms, self.compression
        )
        return NumericProfile(
            count=self.count,
            missing=self.missing,
            infinite=self.infinite,
            min=self.min,
            max=self.max,
            mean=self.mean,
            m2=self.m2,
            digest=digest,
        )


class _CategoricalDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["categorical"]
    counts: dict[str, _Count]
    other: _Count
    missing: _Count

    def build(self, name: str) -> CategoricalProfile:
        if len(self.counts) > MAX_CATEGORIES:
            raise InvalidInput(
                f"not a valid profile: feature {name!r} has more than {MAX_CATEGORIES} categories"
            )
        return CategoricalProfile(counts=dict(self.counts), other=self.other, missing=self.missing)


class _ProfileDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int
    rows: _Count
    features: dict[str, Annotated[_NumericDoc | _CategoricalDoc, Field(discriminator="kind")]]
