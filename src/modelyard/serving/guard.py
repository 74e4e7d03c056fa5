"""The input guard: how unlike the served version's training data each request row is.

Each row of a request to an endpoint with a guard gets a novelty score in [0, 1]: the mean,
over the input features the version's reference profile knows, of a per-feature novelty:

- a number inside the central 99% of the reference (its ranks 0.5% to 99.5%) counts 0;
  in the outer 1% it rises linearly in the reference's tail probability from 0 at the
  inner edge to 1 at the smallest (largest) value the reference saw; outside the observed
  range it is 1; a missing value is 1 when the reference never had one, else 0.
- a category the reference never saw counts 1 (0 when the reference kept only its 1000
  most frequent categories: an unknown one may be a rare known one); missing as above.

So an ordinary row scores about 0 (a feature of the reference itself scores 0.005 on
average), a row with every feature beyond the training range 1, and a row with half its
features out of range 0.5. The tail knots come from the reference's t-digest once, when the
gateway loads the version. Scoring a request compares the whole batch with each feature's
central 99% (two numpy comparisons, no loop over its rows); only the values beyond it (one
in a hundred of the training data's) are scored further, a few of them in Python floats,
more of them with numpy, with the same arithmetic either way.

The endpoint's :class:`~modelyard.serving.entities.GuardConfig` decides what a score does:
``log`` writes it to the prediction log (``guard_score``), ``flag`` also names the rows at or
above the threshold in the ``X-Modelyard-Guard`` response header, ``reject`` answers 422
naming them, their features and why, and predicts nothing. A version without a reference
profile is not guarded (:class:`Inactive`); :func:`guard_status` says so.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from modelyard.errors import InvalidInput, ModelyardError, NotFound
from modelyard.serving.entities import GuardConfig, GuardStatus, GuardVersion

if TYPE_CHECKING:
    from modelyard.monitoring.profiles import Profile
    from modelyard.registry.entities import ModelVersion
    from modelyard.serving.entities import Endpoint
    from modelyard.workspace import Workspace

__all__ = [
    "Guard",
    "GuardRejected",
    "Inactive",
    "Verdict",
    "apply_guard",
    "guard_status",
    "load_guard",
]

#: The share of the reference in its two tails, where a number's novelty rises from 0 to 1.
TAIL = 0.01
#: Knots per tail: the tail's CDF is followed piecewise linearly between them.
KNOTS = 9
HEADER = b"x-modelyard-guard"
MAX_HEADER_ROWS = 64  # rows named in the header; more are counted
MAX_DETAILED_ROWS = 20  # rows whose features a rejection explains
_OUTPUT = "output."
_COLUMN = re.compile(r"^(.+)\[(\d+)\]$")  # name[i]: column i of a 2-D input, as profiled


@dataclass(frozen=True)
class Inactive:
    """A served version the guard cannot score, and why."""

    model: str
    version: int
    reason: str


class GuardRejected(InvalidInput):
    """Rows of a request are too unlike the training data, under a ``reject`` guard."""

    title = "Input rejected"


class Verdict:
    """The guard's scores of one request, with what explains them.

    Only the scores are made for every request; each feature's novelty and the values
    scored (what :meth:`explain` and a rejection need) are worked out when first asked for.
    """

    __slots__ = ("_novelty", "_plan", "_texts", "_values", "_x", "clear", "guard", "scores")

    def __init__(
        self,
        scores: npt.NDArray[np.float32],
        guard: Guard,
        plan: _Plan,
        x: npt.NDArray[np.float64] | None,
        novelty: npt.NDArray[np.float64] | None,
        texts: dict[int, tuple[npt.NDArray[np.str_], npt.NDArray[np.bool_]]],
    ) -> None:
        self.scores = scores  # per row
        self.guard = guard
        #: Every feature of every row scored 0 (so every score is 0).
        self.clear = novelty is None
        self._novelty = novelty
        self._plan = plan
        self._x = x  # the numeric features present, in the plan's order, by rows
        self._texts = texts  # per category feature: its texts and which are missing
        self._values: list[npt.NDArray[Any]] | None = None

    @property
    def novelty(self) -> npt.NDArray[np.float64]:
        """Each feature's novelty in each row: (features, rows)."""
        if self._novelty is None:
            self._novelty = np.zeros((len(self.guard.names), self.scores.size))
        return self._novelty

    @property
    def values(self) -> list[npt.NDArray[Any]]:
        """Per feature, the row values scored (empty for a feature the request lacks)."""
        if self._values is None:
            values: list[npt.NDArray[Any]] = [_EMPTY] * len(self.guard.names)
            if self._x is not None:
                for row, j in enumerate(self._plan.index.tolist()):
                    values[j] = self._x[row]
            for j, (texts, missing) in self._texts.items():
                values[j] = np.where(missing, "", texts)
            self._values = values
        return self._values

    def flagged(self, threshold: float) -> npt.NDArray[np.intp]:
        if self.clear and threshold > 0:
            return _NONE_FLAGGED
        return np.flatnonzero(self.scores >= np.float32(threshold))

    def header(self, threshold: float) -> bytes:
        """``X-Modelyard-Guard``: ``flagged; rows=0,3; score=0.83`` (the highest score of the
        rows named; ``more=N`` counts rows beyond the first 64), or ``ok; score=0.12``."""
        if self.clear and threshold > 0:
            return b"ok; score=0.00"
        if not self.scores.size:
            return b"ok; score=0.00"
        top = float(_max(self.scores))
        if self.scores.size <= MAX_HEADER_ROWS:  # in Python floats: cheaper than numpy calls
            least = float(np.float32(threshold))  # as flagged() compares
            hits = [str(i) for i, score in enumerate(self.scores.tolist()) if score >= least]
            if not hits:
                return b"ok; score=%.2f" % top
            return b"flagged; rows=%s; score=%.2f" % (",".join(hits).encode(), top)
        rows = self.flagged(threshold)
        if rows.size == 0:
            return b"ok; score=%.2f" % top
        named = ",".join(map(str, rows[:MAX_HEADER_ROWS].tolist())).encode()
        more = b"; more=%d" % (rows.size - MAX_HEADER_ROWS) if rows.size > MAX_HEADER_ROWS else b""
        return b"flagged; rows=%s%s; score=%.2f" % (named, more, top)

    def explain(self, row: int) -> list[dict[str, Any]]:
        """Why row ``row`` scored what it did: each feature that counted, most novel first."""
        guard = self.guard
        found = []
        for j in np.flatnonzero(self.novelty[:, row] > 0).tolist():
            name = guard.names[j]
            value = self.values[j][row]
            item: dict[str, Any] = {
                "feature": name,
                "novelty": round(float(self.novelty[j, row]), 3),
            }
            if j < guard.numeric:
                # The training range itself is not said: a 422 goes to whoever may predict,
                # and the bounds would show them how to stay just inside (and the data).
                lo, hi = float(guard.lo[j]), float(guard.hi[j])
                number = float(value)
                if number != number:  # NaN
                    item.update(reason="missing", value=None)
                elif number < lo:
                    item.update(reason="out_of_range", side="below", value=number)
                elif number > hi:
                    item.update(reason="out_of_range", side="above", value=number)
                else:
                    item.update(reason="tail", value=number)
            elif value is None or value == "":
                item.update(reason="missing", value=None)
            else:
                item.update(reason="unseen_category", value=str(value))
            found.append(item)
        found.sort(key=lambda f: -f["novelty"])
        return found

    def rejection(self, threshold: float) -> GuardRejected:
        """The 422 of a ``reject`` guard: the rows, and for the first ones their features."""
        rows = self.flagged(threshold)
        guard = self.guard
        details = [
            {"row": r, "score": round(float(self.scores[r]), 3), "features": self.explain(r)}
            for r in rows[:MAX_DETAILED_ROWS].tolist()
        ]
        said = "; ".join(
            f"row {d['row']} (score {d['score']:.2f}): "
            + ", ".join(_why(f) for f in d["features"][:4])
            for d in details[:3]
        )
        return GuardRejected(
            f"{rows.size} of {self.scores.size} rows are unlike the training data of "
            f"models:/{guard.model}/{guard.version} (novelty >= {threshold:g}): {said}"
            + ("; ..." if rows.size > 3 else "")
            + ". Send rows within the training data's range, or relax the endpoint's guard "
            "(`modelyard endpoints guard NAME --policy flag` or a higher --threshold)",
            rows=rows.tolist(),
            threshold=threshold,
            details=details,
        )


def _why(feature: Mapping[str, Any]) -> str:
    name, reason = feature["feature"], feature["reason"]
    if reason == "out_of_range":
        return f"{name}={feature['value']:g} {feature['side']} the range seen in training"
    if reason == "tail":
        return f"{name}={feature['value']:g} in the outer {TAIL:.0%} of the reference"
    if reason == "missing":
        return f"{name} missing (never missing in the reference)"
    return f"{name}={feature['value']!r} never seen"


@dataclass(eq=False)
class Guard:
    """One version's reference profile, compiled for scoring whole batches.

    Features ``names[:numeric]`` are numbers (bounds and tail knots per feature), the rest
    categories (each one's known values, sorted, for a binary search).
    """

    model: str
    version: int
    stamp: datetime  # when the reference was made: a new one means a new guard
    names: list[str]
    numeric: int
    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    lower: npt.NDArray[np.float64]  # (numeric, KNOTS) ascending: min .. rank TAIL / 2
    upper: npt.NDArray[np.float64]  # (numeric, KNOTS) ascending: -max .. -rank (1 - TAIL / 2)
    no_missing: npt.NDArray[np.bool_]  # per feature: the reference never had a missing value
    known: list[npt.NDArray[np.str_]] = field(default_factory=list)  # per category feature
    complete: list[bool] = field(default_factory=list)  # every category kept (none in other)
    _plans: dict[tuple[bool, tuple[str, ...]], _Plan] = field(default_factory=dict, repr=False)
    # The plan of the last ``Columns`` names seen (the same tuple for every request of a
    # signature): found without hashing the names.
    _last: tuple[Any, Any] = field(default=(None, None), repr=False)

    @classmethod
    def build(cls, model: str, version: int, stamp: datetime, profile: Profile) -> Guard:
        """Compile the input features of ``profile`` (outputs are not the caller's)."""
        from modelyard.monitoring.profiles import CategoricalProfile, NumericProfile

        numeric = [
            (n, f)
            for n, f in profile.features.items()
            if isinstance(f, NumericProfile) and f.count and not n.startswith(_OUTPUT)
        ]
        categorical = [
            (n, f)
            for n, f in profile.features.items()
            if isinstance(f, CategoricalProfile) and f.total and not n.startswith(_OUTPUT)
        ]
        steps = np.linspace(0.0, TAIL / 2, KNOTS)
        lower = np.array([f.quantiles(steps) for _, f in numeric]).reshape(-1, KNOTS)
        upper = np.array([-f.quantiles(1.0 - steps) for _, f in numeric]).reshape(-1, KNOTS)
        # The digest's end ranks are its min and max exactly; monotone up to rounding.
        lower = np.maximum.accumulate(lower, axis=1)
        upper = np.maximum.accumulate(upper, axis=1)
        return cls(
            model=model,
            version=version,
            stamp=stamp,
            names=[n for n, _ in numeric] + [n for n, _ in categorical],
            numeric=len(numeric),
            lo=np.array([f.min for _, f in numeric], dtype=np.float64),
            hi=np.array([f.max for _, f in numeric], dtype=np.float64),
            lower=lower,
            upper=upper,
            no_missing=np.array([f.missing == 0 for _, f in numeric + categorical], dtype=bool),
            known=[np.array(sorted(f.counts), dtype=np.str_) for _, f in categorical],
            complete=[f.other == 0 for _, f in categorical],
        )

    def score(self, inputs: Mapping[str, Any], rows: int) -> Verdict:
        """Score every row of a validated request (its columns, or a ``Columns`` matrix)."""
        plan = self._plan(inputs)
        x = None
        novelty = None
        if plan.index.size:
            matrix = getattr(inputs, "matrix", None)
            if matrix is not None:  # the gateway's validated numbers: as they are, or a gather
                x = matrix if plan.whole else matrix[plan.rows]
            else:
                x = np.stack([_numbers(inputs, where, rows) for where in plan.numeric_at])
            # The common case, every value inside its feature's central 99%: two comparisons
            # and a count (NaN fails both, so a missing value takes the long way).
            inside = (x >= plan.inner_lo) & (x <= plan.inner_hi)
            if np.count_nonzero(inside) != inside.size:
                novelty = np.zeros((len(self.names), rows))
                self._numeric(x, inside, plan, novelty)
        texts: dict[int, tuple[npt.NDArray[np.str_], npt.NDArray[np.bool_]]] = {}
        for j, c, where in plan.categorical_at:
            text, missing = texts[j] = _texts(inputs[where], rows)
            known = self.known[c]
            if known.size and self.complete[c]:
                at = np.minimum(np.searchsorted(known, text), known.size - 1)
                novel = (known[at] != text) & ~missing
            else:
                novel = np.zeros(rows, dtype=bool)
            if self.no_missing[j]:
                novel |= missing
            if np.count_nonzero(novel):
                if novelty is None:
                    novelty = np.zeros((len(self.names), rows))
                novelty[j] = novel
        if novelty is None or plan.count == 0:
            return Verdict(np.zeros(rows, dtype=np.float32), self, plan, x, novelty, texts)
        scores = (novelty.sum(axis=0) / plan.count).astype(np.float32)
        return Verdict(scores, self, plan, x, novelty, texts)

    def _numeric(
        self,
        x: npt.NDArray[np.float64],
        inside: npt.NDArray[np.bool_],
        plan: _Plan,
        novelty: npt.NDArray[np.float64],
    ) -> None:
        """Write into ``novelty`` that of the numbers ``x`` (the plan's features by rows) not
        ``inside`` their feature's central 99%: usually a few, so only those are worked on."""
        at = np.flatnonzero(~inside)
        if at.size <= _FEW and _few(x, at.tolist(), plan, novelty):
            return
        feature, row = np.divmod(at, x.shape[1])
        values = x[feature, row]
        bounds = plan.bounds[feature]  # lo, hi, inner_hi
        upper = values > bounds[:, 2]
        knots = plan.knots[feature + upper * plan.index.size]
        # The ramp of every value, the upper tail mirrored (-x, -knots); those outside the
        # range or missing get nonsense (maybe a division by 0 or NaN), replaced right after.
        with np.errstate(divide="ignore", invalid="ignore"):
            out = _ramp(np.where(upper, -values, values), knots)
        out[(values < bounds[:, 0]) | (values > bounds[:, 1])] = 1.0
        missing = np.isnan(values)
        if np.count_nonzero(missing):
            out[missing] = plan.no_missing[feature[missing]]
        novelty[plan.index[feature], row] = out

    def _plan(self, inputs: Mapping[str, Any]) -> _Plan:
        """Where each feature is in requests with these input names, and the bounds of those
        present (cached per name set): numbers as a ``Columns`` matrix row, a 1-D input or a
        column of a 2-D input (``name[i]`` in the profile); categories by input name."""
        names = getattr(inputs, "names", None)
        last = self._last
        if names is not None and names is last[0]:  # the same signature as last time
            return last[1]
        order = tuple(names) if names is not None else tuple(inputs)
        key = (names is not None, order)
        found = self._plans.get(key)
        if found is None:
            found = self._make_plan(order, names is not None)
            if len(self._plans) >= 64:
                self._plans.clear()
            self._plans[key] = found
        if names is not None:
            self._last = (names, found)
        return found

    def _make_plan(self, order: tuple[str, ...], matrix: bool) -> _Plan:
        position = {name: i for i, name in enumerate(order)}
        numeric: list[tuple[int, Any]] = []  # (position in names, where in the request)
        for j, name in enumerate(self.names[: self.numeric]):
            match = _COLUMN.match(name)
            if name in position:
                numeric.append((j, position[name] if matrix else name))
            elif match and match.group(1) in position and not matrix:
                numeric.append((j, (match.group(1), int(match.group(2)))))
        if matrix:  # in the matrix's order: a matrix of nothing else is scored as it is
            numeric.sort(key=lambda item: item[1])
        categorical_at = [
            (self.numeric + c, c, name)
            for c, name in enumerate(self.names[self.numeric :])
            if name in position
        ]
        at = np.array([j for j, _ in numeric], dtype=np.intp)
        numeric_at = [where for _, where in numeric]
        return _Plan(
            index=at,
            numeric_at=numeric_at,
            rows=np.array(numeric_at if matrix else [], dtype=np.intp),
            whole=matrix and len(numeric_at) == len(order),
            inner_lo=self.lower[at, -1:],
            inner_hi=-self.upper[at, -1:],
            bounds=np.stack([self.lo[at], self.hi[at], -self.upper[at, -1]], axis=1),
            knots=np.concatenate([self.lower[at], self.upper[at]]),
            no_missing=self.no_missing[at],
            categorical_at=categorical_at,
            count=len(numeric) + len(categorical_at),
        )


@dataclass(eq=False)
class _Plan:
    """A guard's features as found in requests with one set of input names."""

    index: npt.NDArray[np.intp]  # the numeric features present (positions in Guard.names)
    numeric_at: list[Any]  # where each is: matrix row, input name, or (2-D input, column)
    rows: npt.NDArray[np.intp]  # their rows of a Columns matrix
    whole: bool  # they are every row of the matrix, in order: the matrix is scored as it is
    inner_lo: npt.NDArray[np.float64]  # (present, 1): the central 99%, for whole batches
    inner_hi: npt.NDArray[np.float64]
    bounds: npt.NDArray[np.float64]  # (present, 3): lo, hi, inner_hi, gathered per value
    knots: npt.NDArray[np.float64]  # (2 * present, KNOTS): the lower tails', the upper ones'
    no_missing: npt.NDArray[np.bool_]  # (present,)
    categorical_at: list[tuple[int, int, str]]  # (position in names, category index, input)
    count: int  # features scored
    # The same as Python lists, for a few values at a time (see _few).
    index_list: list[int] = field(init=False)
    bounds_list: list[list[float]] = field(init=False)
    knots_list: list[list[float]] = field(init=False)
    no_missing_list: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.index_list = self.index.tolist()
        self.bounds_list = self.bounds.tolist()
        self.knots_list = self.knots.tolist()
        self.no_missing_list = self.no_missing.tolist()


_EMPTY = np.empty(0)
_max = np.maximum.reduce  # the ufunc's own: ndarray.max() wraps it in Python
_FEW = 32  # values beyond an inner edge up to which _few is cheaper than numpy
_NONE_FLAGGED = np.empty(0, dtype=np.intp)
_NONE_FLAGGED.flags.writeable = False


def _ramp(x: npt.NDArray[np.float64], knots: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Novelty of values in a tail: 1 at ``knots[:, 0]`` (the extreme seen), 0 at
    ``knots[:, -1]`` (the tail's inner edge), linear in tail probability between knots.

    A value in ``[knots[i, 0], knots[i, -1])`` has a segment (the last knot at or below it,
    and the next) of positive width, and a result in (0, 1]; any other value gets nonsense
    (NaN, or a division by 0: silence numpy) that the caller replaces.
    """
    last = knots.shape[1] - 1
    segment = np.add.reduce(x[:, None] >= knots, axis=1) - 1
    rows = np.arange(x.size)
    x0, x1 = knots[rows, segment], knots[rows, segment + 1]
    return np.asarray(1.0 - (segment + (x - x0) / (x1 - x0)) / last)


def _few(
    x: npt.NDArray[np.float64], at: list[int], plan: _Plan, novelty: npt.NDArray[np.float64]
) -> bool:
    """:meth:`Guard._numeric` of a few values (positions ``at`` in ``x``), one at a time in
    Python floats: each numpy call costs more than the arithmetic. The same operations in
    the same order, so the same results. False (nothing written) for a value outside the
    knots of its tail, left to numpy."""
    columns = x.shape[1]
    bounds, knots_of, no_missing = plan.bounds_list, plan.knots_list, plan.no_missing_list
    present = len(bounds)
    found = []
    for position in at:
        feature, row = divmod(position, columns)
        value = x.item(feature, row)
        lo, hi, inner_hi = bounds[feature]
        if value != value:  # NaN: missing
            if no_missing[feature]:
                found.append((feature, row, 1.0))
        elif value < lo or value > hi:
            found.append((feature, row, 1.0))
        else:  # in a tail, the upper one mirrored, as in _ramp
            upper = value > inner_hi
            knots = knots_of[feature + present] if upper else knots_of[feature]
            value = -value if upper else value
            segment = bisect_right(knots, value) - 1  # the knots at or below it, as _ramp
            last = len(knots) - 1
            if not 0 <= segment < last:
                return False
            x0, x1 = knots[segment], knots[segment + 1]
            found.append((feature, row, 1.0 - (segment + (value - x0) / (x1 - x0)) / last))
    index = plan.index_list
    for feature, row, value in found:
        novelty[index[feature], row] = value
    return True


def _numbers(inputs: Mapping[str, Any], where: Any, rows: int) -> npt.NDArray[np.float64]:
    try:
        if isinstance(where, tuple):
            column = np.asarray(inputs[where[0]])
            if column.ndim != 2 or where[1] >= column.shape[1]:
                return np.full(rows, np.nan)
            return column[:, where[1]].astype(np.float64)
        return np.asarray(inputs[where], dtype=np.float64).reshape(rows)
    except (TypeError, ValueError):  # not numbers after all: counted as missing
        return np.full(rows, np.nan)


def _texts(values: Any, rows: int) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.bool_]]:
    """Category values as the reference counted them (their text), and which are missing."""
    array = np.asarray(values).reshape(rows)
    kind = array.dtype.kind
    if kind == "O":
        missing = np.equal(array, np.array(None, dtype=object)).astype(bool)
        return array.astype(np.str_), missing
    if kind == "b":
        return np.where(array, "True", "False"), np.zeros(rows, dtype=bool)
    if kind == "f":  # counted as text: 3.0 was "3" (an int column), 2.5 "2.5"
        missing = np.isnan(array)
        whole = np.isfinite(array) & (np.abs(array) < 2**53) & (array == np.round(array))
        as_int = np.where(whole, array, 0).astype(np.int64).astype(np.str_)
        return np.where(whole, as_int, array.astype(np.str_)), missing
    return array.astype(np.str_), np.zeros(rows, dtype=bool)


# -- loading and applying -----------------------------------------------------------------------


def load_guard(ws: Workspace, version: ModelVersion) -> Guard | Inactive:
    """The guard of one version, from its reference profile (monitoring's), else why not."""
    from modelyard.monitoring.profiles import Profile

    try:
        reference = ws.monitoring.get_reference(version.uri, include_profile=True)
        assert reference.profile is not None
        profile = Profile.from_dict(reference.profile)
    except NotFound as exc:
        return Inactive(version.model, version.version, f"inactive: {exc.detail}")
    except ModelyardError as exc:  # a reference this version cannot read: serve unguarded
        return Inactive(
            version.model,
            version.version,
            f"inactive: its reference profile cannot be read ({exc.detail}); set it again with "
            f"`modelyard monitor reference {version.uri} --data train.parquet`",
        )
    guard = Guard.build(version.model, version.version, reference.created_at, profile)
    if not guard.names:
        return Inactive(
            version.model,
            version.version,
            "inactive: the reference profile has no input feature with values; set another "
            f"with `modelyard monitor reference {version.uri} --data train.parquet`",
        )
    return guard


def load_guards(
    ws: Workspace, versions: Sequence[ModelVersion]
) -> dict[tuple[str, int], Guard | Inactive]:
    """The guard of each version, by (model, version)."""
    return {(v.model, v.version): load_guard(ws, v) for v in versions}


def apply_guard(
    config: GuardConfig,
    guard: Guard | Inactive | None,
    inputs: Mapping[str, Any],
    rows: int,
) -> tuple[npt.NDArray[np.float32] | None, tuple[tuple[bytes, bytes], ...]]:
    """Score a request under an endpoint's guard: each row's score (None: not scored) and
    the response headers to add; raises :class:`GuardRejected` under ``reject``."""
    if guard is None:
        return None, ()
    if isinstance(guard, Inactive):
        return None, (((HEADER, b"inactive"),) if config.policy != "log" else ())
    verdict = guard.score(inputs, rows)
    if config.policy == "reject":
        if verdict.flagged(config.threshold).size:
            raise verdict.rejection(config.threshold)
    elif config.policy == "flag":
        return verdict.scores, ((HEADER, verdict.header(config.threshold)),)
    return verdict.scores, ()


def guard_status(ws: Workspace, endpoint: Endpoint) -> GuardStatus:
    """Whether the endpoint's guard is active for each version it serves now, and why not."""
    config = endpoint.guard
    status = GuardStatus(endpoint=endpoint.name, policy=config.policy, threshold=config.threshold)
    targets = [r.target for r in endpoint.policy.routes] or [endpoint.target]
    for target in dict.fromkeys(targets):
        try:
            version = ws.registry.resolve(target)
        except NotFound as exc:
            status.versions.append(
                GuardVersion(model="", version=0, active=False, reason=f"inactive: {exc.detail}")
            )
            continue
        found = load_guard(ws, version)
        if isinstance(found, Inactive):
            status.versions.append(
                GuardVersion(
                    model=found.model, version=found.version, active=False, reason=found.reason
                )
            )
        else:
            status.versions.append(
                GuardVersion(
                    model=found.model,
                    version=found.version,
                    active=config.policy != "off",
                    reason="" if config.policy != "off" else "the guard is off",
                    features=found.names,
                )
            )
    return status
