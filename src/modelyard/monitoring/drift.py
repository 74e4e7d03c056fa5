"""Drift: compare a current profile with a reference profile, feature by feature.

:func:`compare` works from :class:`~modelyard.monitoring.profiles.Profile` objects alone (no raw
data), so it runs wherever a profile does. scipy computes every statistic; the profiles supply
its inputs: exact counts for categories, and for numbers the t-digest's centroids (a weighted
sample of exact means) and the CDF they define (:meth:`NumericProfile.cdf`).

Methods (defaults follow Evidently's data drift preset, see
:class:`~modelyard.monitoring.config.DriftConfig`):

``wasserstein``  (numbers) ``scipy.stats.wasserstein_distance`` of the two weighted samples,
                 divided by the reference's population standard deviation (at least 0.001, as
                 Evidently, so a constant reference does not divide by zero). Drift when
                 >= threshold (0.1).
``ks``           (numbers) two-sample Kolmogorov-Smirnov. While both digests are exact (they
                 hold every value) and have at most 10,000 values, ``scipy.stats.ks_2samp`` on
                 the values themselves; beyond, D is the largest gap between the two CDFs and
                 the p-value ``scipy.stats.kstwo.sf(D, round(n*m/(n+m)))``, scipy's asymptotic
                 method. Drift when p < threshold (0.05).
``jensenshannon``  ``scipy.spatial.distance.jensenshannon`` (natural log) of the two
                 distributions over categories, or over numeric bins. Drift when >= 0.1.
``psi``          population stability index, sum((c - r) * ln(c / r)) over the same bins, an
                 empty bin counted as a share of 1e-4. Drift when >= 0.2.
``chisquare``    ``scipy.stats.chi2_contingency`` (no continuity correction) of the 2 x K table
                 of reference and current counts: a two-sample test of homogeneity, so a
                 category only one side has is evidence, not an error. Drift when p < 0.05.

Numeric bins: the reference's 20 quantile bins (edges deduplicated, so discrete values get a
bin each), plus one bin below its minimum and one above its maximum. A numeric feature with at
most 5 distinct values (both digests exact) is compared value by value, as Evidently does:
Jensen-Shannon above ``large_sample`` reference values, chi-square below.

Agreement with scipy on the raw data (proved by tests/monitoring/test_drift.py): categorical
statistics exact (1e-9); numbers with exact digests (at most ~200 distinct values, any data of
at most 200 rows) exact too, KS p-value included up to 10,000 rows; otherwise KS statistic
within 0.01 (tending lower, by 0.002 on average, as the digest's CDF is smooth), normed
Wasserstein within 2 % + 0.002, numeric PSI and Jensen-Shannon within 0.01 + 5 % (1,000+ values
a side). Verdicts agree except within those tolerances of a threshold.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, Field

from modelyard.monitoring.config import DriftConfig, DriftMethod, FeatureDriftConfig

# numpy and the profiles (numpy, pandas, pyarrow) are imported by the functions that use them,
# as scipy is below: the control plane and the SDK import this module for its response models,
# and a command such as `modelyard models list` needs none of them.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modelyard.monitoring.profiles import (
        CategoricalProfile,
        FeatureProfile,
        NumericProfile,
        Profile,
    )

log = logging.getLogger("modelyard.monitoring.drift")

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DriftReport",
    "FeatureDrift",
    "bin_shares",
    "compare",
    "quantile_edges",
]

DEFAULT_THRESHOLDS: Final[dict[str, float]] = {
    "wasserstein": 0.1,
    "ks": 0.05,
    "jensenshannon": 0.1,
    "psi": 0.2,
    "chisquare": 0.05,
}
P_VALUE_METHODS: Final = frozenset({"ks", "chisquare"})
NUMERIC_ONLY: Final = frozenset({"ks", "wasserstein"})
NUMERIC_BINS: Final = 20
DISCRETE_VALUES: Final = 5  # at most this many distinct numbers: compared value by value
PSI_EMPTY_SHARE: Final = 1e-4  # share given to an empty bin in PSI
WASSERSTEIN_NORM_FLOOR: Final = 0.001  # Evidently's floor for the reference std
KS_EXACT_MAX: Final = 10_000  # scipy's ks_2samp computes exact p-values up to this size
MAX_NEW_CATEGORIES: Final = 100  # listed in a report; the message gives the total

_METHOD_NAMES: Final = {
    "wasserstein": "normed Wasserstein distance",
    "ks": "Kolmogorov-Smirnov p-value",
    "jensenshannon": "Jensen-Shannon distance",
    "psi": "PSI",
    "chisquare": "chi-square p-value",
}


class FeatureDrift(BaseModel):
    """One feature's verdict. ``drifted`` is None unless ``status`` is "ok" or "drift".

    ``reference_rows``/``current_rows`` count the values compared (non-missing, finite);
    ``statistic`` is the method's distance, or for p-value methods its test statistic (KS D,
    chi-square), with the p-value in ``p_value``.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    method: DriftMethod | None
    statistic: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    drifted: bool | None = None
    status: Literal["ok", "drift", "insufficient", "missing", "error"]
    reference_rows: int = 0
    current_rows: int = 0
    reference_missing_rate: float | None = None
    current_missing_rate: float | None = None
    new_categories: list[str] = Field(default_factory=list)
    message: str = ""


class DriftReport(BaseModel):
    """Verdicts for every compared feature and for the dataset.

    ``drift_share`` = drifted / checked features (those with a verdict); the dataset drifts
    when it reaches ``DriftConfig.drift_share``. With no feature checked (a window below
    ``min_samples`` rows, say) ``dataset_drift`` is None and ``status`` "insufficient": never
    "no drift" for lack of data.
    """

    features: list[FeatureDrift]
    drifted_features: int
    checked_features: int
    drift_share: float
    dataset_drift: bool | None
    status: Literal["ok", "drift", "insufficient"]
    reference_rows: int
    current_rows: int


# --- public helpers ------------------------------------------------------------------------


def quantile_edges(reference: NumericProfile, bins: int = NUMERIC_BINS) -> npt.NDArray[np.float64]:
    """Bin edges for numbers: min, the ``bins``-quantiles and max of the reference, unique."""
    import numpy as np

    if reference.count == 0:
        return np.empty(0)
    inner = reference.quantiles(np.arange(1, bins) / bins)
    return np.unique(np.concatenate([[reference.min], inner, [reference.max]]))


def bin_shares(profile: NumericProfile, edges: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Shares of ``profile``'s values in ``len(edges) + 2`` bins: below edges[0], equal to
    edges[0], (edges[0], edges[1]], ..., (edges[-2], edges[-1]], above edges[-1]."""
    import numpy as np

    below = profile.cdf(edges[:1], inclusive=False)
    cum = np.concatenate([[0.0], below, profile.cdf(edges), [1.0]])
    return np.clip(np.diff(cum), 0.0, None)


# --- statistics ---------------------------------------------------------------------------


def _fill_zeros(shares: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    import numpy as np

    # An empty bin gets a small share so that ln(c / r) stays finite: a bin only one side uses
    # weighs in (as drift evidence) without an infinite PSI.
    return np.where(shares > 0, shares, PSI_EMPTY_SHARE)


def _psi(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> float:
    import numpy as np

    r = _fill_zeros(ref / ref.sum())
    c = _fill_zeros(cur / cur.sum())
    return float(np.sum((r - c) * np.log(r / c)))


# scipy is imported by the functions that use it: importing scipy.stats takes about 1 s here,
# and the server's control plane imports this module for its response models.


def _jensenshannon(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> float:
    from scipy.spatial import distance

    return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum()))


def _chisquare(ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:  # one value on both sides: nothing can differ
        return 0.0, 1.0
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def _ks(ref: NumericProfile, cur: NumericProfile) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    if ref.exact and cur.exact and max(ref.count, cur.count) <= KS_EXACT_MAX:
        # The digests hold the values themselves: scipy's own test, exact p-value included.
        rv, rw = ref.weighted_values()
        cv, cw = cur.weighted_values()
        res = stats.ks_2samp(np.repeat(rv, rw.astype(np.int64)), np.repeat(cv, cw.astype(np.int64)))
        return float(res.statistic), float(res.pvalue)
    # Both CDFs are polylines with jumps: the largest gap is at a knot, on one side or the other.
    at = np.union1d(ref.cdf_knots()[0], cur.cdf_knots()[0])
    d = max(
        float(np.max(np.abs(ref.cdf(at) - cur.cdf(at)))),
        float(np.max(np.abs(ref.cdf(at, inclusive=False) - cur.cdf(at, inclusive=False)))),
    )
    n, m = ref.count, cur.count
    return d, float(stats.kstwo.sf(d, round(n * m / (n + m))))


def _wasserstein(ref: NumericProfile, cur: NumericProfile) -> tuple[float, float]:
    """(normed distance, raw distance)."""
    from scipy import stats

    rv, rw = ref.weighted_values()
    cv, cw = cur.weighted_values()
    raw = float(stats.wasserstein_distance(rv, cv, rw, cw))
    return raw / max(ref.std, WASSERSTEIN_NORM_FLOOR), raw


def _distinct_values(ref: NumericProfile, cur: NumericProfile) -> npt.NDArray[np.float64] | None:
    """All values of both sides, if both digests are exact and hold DISCRETE_VALUES at most."""
    import numpy as np

    if not (ref.exact and cur.exact):
        return None
    values = np.union1d(ref.weighted_values()[0], cur.weighted_values()[0])
    return values if values.size <= DISCRETE_VALUES else None


def _value_masses(
    profile: NumericProfile, values: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    import numpy as np

    v, w = profile.weighted_values()
    out = np.zeros(values.size)
    np.add.at(out, np.searchsorted(values, v), w)
    return out


# --- comparison ---------------------------------------------------------------------------


def _non_missing(f: FeatureProfile) -> int:
    from modelyard.monitoring.profiles import NumericProfile

    return f.count if isinstance(f, NumericProfile) else f.total


def _missing_rate(f: FeatureProfile) -> float | None:
    return f.missing / f.rows if f.rows else None


def _default_method(
    numeric: bool, large: bool, cfg: DriftConfig, fcfg: FeatureDriftConfig | None
) -> DriftMethod:
    if fcfg is not None and fcfg.method is not None:
        return fcfg.method
    chosen = cfg.numeric_method if numeric else cfg.categorical_method
    if chosen is not None:
        return chosen
    if numeric:
        return "wasserstein" if large else "ks"
    return "jensenshannon" if large else "chisquare"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _aligned_categories(
    ref: CategoricalProfile, cur: CategoricalProfile
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[str]]:
    """Reference and current counts over the same categories (+ "other"), and the new ones.

    When the reference overflowed (``other`` > 0) a category it does not list may hide in its
    ``other``: such current categories go to ``other`` and are not called new.
    """
    import numpy as np

    keys = list(ref.counts)
    cur_other = cur.other
    new: list[tuple[str, int]] = []
    for key, n in cur.counts.items():
        if key in ref.counts:
            continue
        if ref.other:
            cur_other += n
        else:
            keys.append(key)
            new.append((key, n))
    r = [ref.counts.get(k, 0) for k in keys]
    c = [cur.counts.get(k, 0) for k in keys]
    if ref.other or cur_other:
        r.append(ref.other)
        c.append(cur_other)
    new.sort(key=lambda kv: (-kv[1], kv[0]))
    return np.asarray(r, np.float64), np.asarray(c, np.float64), [k for k, _ in new]


def _no_verdict(
    ref: FeatureProfile, cur: FeatureProfile, cfg: DriftConfig, current_rows: int
) -> tuple[Literal["insufficient", "missing", "error"], str] | None:
    """Why a feature cannot be judged (status, message), or None when it can."""
    n_ref, n_cur, least = _non_missing(ref), _non_missing(cur), cfg.min_samples
    if ref.kind != cur.kind:
        return "error", f"{ref.kind} in the reference but {cur.kind} in the current profile"
    if current_rows < least:
        return "insufficient", (
            f"the current window has {current_rows} rows, fewer than min_samples={least}: "
            f"no verdict"
        )
    if n_cur == 0:
        return "missing", f"all {cur.rows} values are missing in the current window"
    if n_ref == 0:
        return "missing", f"all {ref.rows} values are missing in the reference"
    if min(n_ref, n_cur) < least:
        side, n = ("current window", n_cur) if n_cur < least else ("reference", n_ref)
        return "insufficient", (
            f"the {side} has {n} non-missing values, fewer than min_samples={least}: no verdict"
        )
    return None


def _judge(
    name: str,
    ref: FeatureProfile,
    cur: FeatureProfile,
    cfg: DriftConfig,
    fcfg: FeatureDriftConfig | None,
    current_rows: int,
) -> FeatureDrift:
    from modelyard.monitoring.profiles import CategoricalProfile, NumericProfile

    numeric = isinstance(ref, NumericProfile)
    n_ref, n_cur = _non_missing(ref), _non_missing(cur)
    base = FeatureDrift(
        feature=name,
        kind=ref.kind,
        method=None,
        status="insufficient",
        reference_rows=n_ref,
        current_rows=n_cur,
        reference_missing_rate=_missing_rate(ref),
        current_missing_rate=_missing_rate(cur),
    )
    reason = _no_verdict(ref, cur, cfg, current_rows)
    if reason is not None:
        return base.model_copy(update={"status": reason[0], "message": reason[1]})

    large = n_ref > cfg.large_sample
    notes: list[str] = []
    new: list[str] = []
    discrete = None
    if isinstance(ref, NumericProfile):
        assert isinstance(cur, NumericProfile)
        discrete = _distinct_values(ref, cur)
        chosen = (fcfg.method if fcfg else None) or cfg.numeric_method
        if discrete is not None and chosen is None:
            method: DriftMethod = "jensenshannon" if large else "chisquare"
            notes.append(f"{discrete.size} distinct values: compared as categories")
        else:
            method = _default_method(True, large, cfg, fcfg)
        if ref.infinite or cur.infinite:
            notes.append(
                f"infinite values ignored: {ref.infinite} in the reference, "
                f"{cur.infinite} in the current window"
            )
    else:
        method = _default_method(False, large, cfg, fcfg)
    threshold = fcfg.threshold if fcfg and fcfg.threshold is not None else None
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    base = base.model_copy(update={"method": method, "threshold": threshold})
    if not numeric and method in NUMERIC_ONLY:
        message = f"{method} applies to numeric features only; {name!r} is categorical"
        return base.model_copy(update={"status": "error", "message": message})

    p_value: float | None = None
    if isinstance(ref, NumericProfile) and isinstance(cur, NumericProfile):
        if method == "wasserstein":
            statistic, raw = _wasserstein(ref, cur)
            notes.append(f"distance {_fmt(raw)}, reference std {_fmt(ref.std)}")
        elif method == "ks":
            statistic, p_value = _ks(ref, cur)
            notes.append(f"D = {_fmt(statistic)}")
        else:
            if discrete is not None:
                r, c = _value_masses(ref, discrete), _value_masses(cur, discrete)
            else:
                edges = quantile_edges(ref)
                r, c = bin_shares(ref, edges) * ref.count, bin_shares(cur, edges) * cur.count
            statistic, p_value = _binned(method, r, c)
    else:
        assert isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalProfile)
        r, c, new = _aligned_categories(ref, cur)
        statistic, p_value = _binned(method, r, c)
        if new:
            shown = ", ".join(repr(k) for k in new[:5]) + (", ..." if len(new) > 5 else "")
            share = sum(cur.counts[k] for k in new) / cur.total
            notes.append(
                f"{len(new)} categories never seen in the reference ({shown}), "
                f"{share:.1%} of current values"
            )

    if method in P_VALUE_METHODS:
        assert p_value is not None
        drifted = bool(p_value < threshold)
        head = f"{_METHOD_NAMES[method]} {_fmt(p_value)} {'<' if drifted else '>='} {threshold}"
    else:
        drifted = bool(statistic >= threshold)
        head = f"{_METHOD_NAMES[method]} {_fmt(statistic)} {'>=' if drifted else '<'} {threshold}"
    message = f"{head}: {'drift' if drifted else 'no drift'}" + "".join(f"; {n}" for n in notes)
    return base.model_copy(
        update={
            "statistic": _finite_or_none(statistic),
            "p_value": _finite_or_none(p_value),
            "drifted": drifted,
            "status": "drift" if drifted else "ok",
            "new_categories": new[:MAX_NEW_CATEGORIES],
            "message": message,
        }
    )


def _binned(
    method: DriftMethod, ref: npt.NDArray[np.float64], cur: npt.NDArray[np.float64]
) -> tuple[float, float | None]:
    if method == "psi":
        return _psi(ref, cur), None
    if method == "jensenshannon":
        return _jensenshannon(ref, cur), None
    if method == "chisquare":
        return _chisquare(ref, cur)
    raise ValueError(f"{method} is not a binned method")


def _absent(name: str, present: FeatureProfile, side: str) -> FeatureDrift:
    return FeatureDrift(
        feature=name,
        kind=present.kind,
        method=None,
        status="missing",
        reference_rows=_non_missing(present) if side == "current" else 0,
        current_rows=_non_missing(present) if side == "reference" else 0,
        reference_missing_rate=_missing_rate(present) if side == "current" else None,
        current_missing_rate=_missing_rate(present) if side == "reference" else None,
        message=f"{name!r} is not in the {side} profile",
    )


def compare(reference: Profile, current: Profile, config: DriftConfig | None = None) -> DriftReport:
    """Judge every feature of either profile for drift; see the module documentation.

    Features disabled in ``config.features`` are left out. A feature one side lacks is
    "missing"; one that cannot be computed is "error" with the reason (it never stops the
    others).
    """
    cfg = config or DriftConfig()
    results: list[FeatureDrift] = []
    for name in {**reference.features, **current.features}:
        fcfg = cfg.features.get(name)
        if fcfg is not None and not fcfg.enabled:
            continue
        ref, cur = reference.features.get(name), current.features.get(name)
        if ref is None:
            assert cur is not None
            results.append(_absent(name, cur, "reference"))
            continue
        if cur is None:
            results.append(_absent(name, ref, "current"))
            continue
        try:
            results.append(_judge(name, ref, cur, cfg, fcfg, current.rows))
        except Exception as e:  # one bad feature must not hide the others' verdicts
            log.exception("drift of feature %r failed", name)
            results.append(
                FeatureDrift(
                    feature=name,
                    kind=ref.kind,
                    method=None,
                    status="error",
                    message=f"could not compute: {e}",
                )
            )
    checked = [f for f in results if f.drifted is not None]
    drifted = sum(1 for f in checked if f.drifted)
    share = drifted / len(checked) if checked else 0.0
    dataset_drift = share >= cfg.drift_share if checked else None
    return DriftReport(
        features=results,
        drifted_features=drifted,
        checked_features=len(checked),
        drift_share=share,
        dataset_drift=dataset_drift,
        status="insufficient" if dataset_drift is None else "drift" if dataset_drift else "ok",
        reference_rows=reference.rows,
        current_rows=current.rows,
    )


def _finite_or_none(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None
