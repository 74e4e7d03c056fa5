"""SLO model switching: each request to the most accurate variant that meets its deadline.

An endpoint with ``policy.variants`` serves one task with several models of different
quality and cost (say a 300-tree boosted model and a logistic regression). Each request has
a deadline: the endpoint's ``slo_ms``, or a shorter one the request brings
(``x-modelyard-deadline-ms``, or OIP's ``parameters``: ``deadline_ms``, or ``timeout`` in
microseconds as tritonclient sends it). The gateway admits the request to the best variant
whose *predicted completion* fits the time left, falls back to faster ones, and sheds it
with 503 only when none fits (after Model-Switching, HotCloud 2020, and INFaaS, ATC 2021).

The latency model, learned online per variant:

- **Queue and batch service**: the variant's batcher predicts when a request queued now
  would be answered (:meth:`~.batcher.Batcher.predicted_wait`): the rest of the call
  running, then the batches that take the queued rows and this one, each costed at the
  median of that batch size's recent calls. Switching is part of the batcher's decision:
  each variant has its own batcher, so batches form per variant, and a variant whose queue
  grows is predicted late and skipped until it drains.
- **What the batcher does not see**: parsing, encoding, logging, the event loop's other
  work. After each answer the gateway compares the request's whole latency with what was
  predicted at admission. The error relative to the prediction (clipped at
  :data:`MAX_RELATIVE_ERROR`) is learned as an EWMA of it and of its spread; the next
  predictions get ``prediction * (mean + 2 * spread)`` (never below zero) added. It fades
  while the variant answers nothing (:data:`MARGIN_HALF_LIFE`).
- **Headroom**: a prediction, margin included, may fill :data:`ADMIT_SHARE` of the time
  left; when no variant fits so, the soonest one still does if its prediction alone fits.

A variant whose latency is unknown (nothing timed yet, e.g. no warm-up) is predicted to fit:
the first requests teach the model. A cached answer of the chosen variant or of a better
one answers at once. Quality ranks the variants: the policy's ``quality``, else labelled feedback
on that version at this endpoint, else its run's ``quality_metric``; when any is unknown the
variants keep the order the policy lists them in.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.errors import BadRequest, ModelyardError
from modelyard.serving.batcher import Overloaded
from modelyard.serving.entities import MAX_DEADLINE_MS

if TYPE_CHECKING:
    from modelyard.serving.entities import Endpoint, Variant
    from modelyard.serving.pool import LoadedModel
    from modelyard.serving.served import Served
    from modelyard.workspace import Workspace

#: The request header that sets (or shortens) a request's deadline, in milliseconds.
DEADLINE_HEADER = b"x-modelyard-deadline-ms"
#: The response header naming the variant that answered.
VARIANT_HEADER = b"x-modelyard-variant"
#: Seconds of requests the effective-accuracy gauge covers.
WINDOW_SECONDS = 60
_ALPHA = 0.1  # EWMA weight of the newest latency error
#: Seconds in which an idle variant's latency margin halves (see VariantState.margin).
MARGIN_HALF_LIFE = 1.0
#: The least prediction (seconds) errors are taken relative to: the fixed cost of a request.
MIN_SCALE = 0.001
#: The most a learned error may be, relative to its prediction (a stall is clipped to it).
MAX_RELATIVE_ERROR = 4.0
#: The share of the time left that a variant's prediction (margin included) may fill: the
#: rest absorbs what no prediction sees coming (a neighbour's batch taking the CPU).
ADMIT_SHARE = 0.7


@dataclass
class VariantState:
    """One variant as the gateway serves it: its quality and what its latency taught."""

    name: str
    index: int  # in Served.models
    quality: float | None = None
    #: Where ``quality`` comes from: policy, feedback, run, or unknown.
    source: str = "unknown"
    #: The (model, version) it served when its errors were learned.
    key: tuple[str, int] = ("", 0)
    error_mean: float = 0.0  # how much longer than predicted requests took, relative (0.2: +20 %)
    error_spread: float = 0.0
    observed: float = 0.0  # time.monotonic() of the last error observed
    met: int = 0
    missed: int = 0

    def margin(self, wait: float) -> float:
        """Seconds added to the batcher's prediction ``wait`` (see the module doc): the
        errors are learned relative to the prediction, since a queue's error grows with it."""
        self.fade()
        return max(wait, MIN_SCALE) * max(self.error_mean + 2.0 * self.error_spread, 0.0)

    def fade(self) -> None:
        """Halve the learned error every :data:`MARGIN_HALF_LIFE` seconds the variant
        answers nothing: one skipped for a bad margin would otherwise never get the chance
        to show that it is fast again."""
        idle = time.monotonic() - self.observed
        if idle >= 0.1 and (self.error_mean or self.error_spread):
            factor = 0.5 ** (idle / MARGIN_HALF_LIFE)
            self.error_mean *= factor
            self.error_spread *= factor
            self.observed += idle


@dataclass
class Switcher:
    """The per-endpoint state of SLO switching: variants, their ranking and latency errors.

    Lives in a :class:`~.served.Served` snapshot; only the event loop's thread touches it.
    """

    slo_ms: float
    variants: list[VariantState]
    #: Indices into ``variants``, best first.
    order: list[int] = field(default_factory=list)
    shed: int = 0
    #: Per second of the last minute: [second, requests, met, quality-weighted met].
    window: deque[list[float]] = field(default_factory=lambda: deque(maxlen=WINDOW_SECONDS))

    @classmethod
    def for_endpoint(
        cls, endpoint: Endpoint, keys: Sequence[tuple[str, int]], current: Switcher | None = None
    ) -> Switcher:
        """The switch of ``endpoint``, whose variants serve ``keys`` (model, version) in the
        policy's order. From ``current`` (the snapshot it replaces) it keeps, per variant
        name, the counters, the quality read (not one the policy set) and, if it serves the
        same version, the latency errors learned; and the endpoint's last minute."""
        policy = endpoint.policy
        assert policy.slo_ms is not None
        states = [
            VariantState(
                v.name, i, v.quality, "policy" if v.quality is not None else "unknown", keys[i]
            )
            for i, v in enumerate(policy.variants)
        ]
        switcher = cls(policy.slo_ms, states)
        if current is not None:
            switcher.shed, switcher.window = current.shed, current.window
            before = {v.name: v for v in current.variants}
            for state in states:
                old = before.get(state.name)
                if old is None:
                    continue
                state.met, state.missed = old.met, old.missed
                if state.source != "policy" and old.source != "policy":
                    state.quality, state.source = old.quality, old.source
                if old.key == state.key:
                    state.error_mean, state.error_spread = old.error_mean, old.error_spread
                    state.observed = old.observed
        switcher.rank()
        return switcher

    def rank(self) -> None:
        """Best first by quality when every variant has one; else in the policy's order."""
        states = self.variants
        if all(v.quality is not None for v in states):
            self.order = sorted(range(len(states)), key=lambda i: -(states[i].quality or 0.0))
        else:
            self.order = list(range(len(states)))

    def set_qualities(self, found: Mapping[str, tuple[float | None, str]]) -> None:
        """Take the qualities read by :func:`qualities` (the policy's own stay)."""
        for state in self.variants:
            if state.source == "policy" or state.name not in found:
                continue
            state.quality, state.source = found[state.name]
        self.rank()

    def choose(self, served: Served, rows: int, budget: float) -> tuple[int, float] | None:
        """The best variant predicted to answer ``rows`` rows within ``budget`` seconds, and
        its batcher's prediction (nan: unknown; the margin is not in it, so that the errors
        learned are the batcher's); None when none is.

        When no variant fits with its margin, the one whose batcher predicts the soonest
        answer is still taken if that prediction alone fits: the margins carry what every
        variant shares (the event loop), and a refusal is certain where a late answer is not.
        """
        models = served.models
        soonest: tuple[int, float] | None = None
        room = budget * ADMIT_SHARE
        for position in self.order:
            state = self.variants[position]
            wait = models[state.index].batcher.predicted_wait(rows)
            if wait is None:
                return position, math.nan
            if wait + state.margin(wait) <= room:
                return position, wait
            if soonest is None or wait < soonest[1]:
                soonest = (position, wait)
        if soonest is not None and soonest[1] <= budget:
            return soonest
        return None

    def observe(self, position: int, error: float, met: bool, wait: float = 0.0) -> None:
        """A request answered by variant ``position``: ``error`` seconds later than its
        batcher's prediction ``wait`` at its admission (negative: sooner; nan: nothing to
        learn, e.g. admitted before its latency was known), ``met``: within its deadline."""
        state = self.variants[position]
        if not math.isnan(error):
            # relative to the prediction; one stall (a page fault, a long GC) must not shut
            # the variant out for seconds: clipped
            error = max(-1.0, min(error / max(wait, MIN_SCALE), MAX_RELATIVE_ERROR))
            state.fade()
            delta = error - state.error_mean
            state.error_mean += _ALPHA * delta
            state.error_spread += _ALPHA * (abs(delta) - state.error_spread)
            state.observed = time.monotonic()
        if met:
            state.met += 1
        else:
            state.missed += 1
        cell = self._cell()
        cell[1] += 1
        if met:
            cell[2] += 1
            cell[3] += state.quality if state.quality is not None else math.nan

    def refused(self) -> None:
        """A request no variant could answer in time."""
        self.shed += 1
        self._cell()[1] += 1

    def _cell(self) -> list[float]:
        second = float(int(time.monotonic()))
        window = self.window
        if not window or window[-1][0] != second:
            window.append([second, 0, 0, 0.0])
        return window[-1]

    def effective(self) -> tuple[float | None, float | None]:
        """Over the last minute: the share of requests answered within their deadline, and
        that share weighted by each answering variant's quality (None while unknown)."""
        since = time.monotonic() - WINDOW_SECONDS
        requests = met = weighted = 0.0
        for second, count, on_time, quality in self.window:
            if second >= since:
                requests += count
                met += on_time
                weighted += quality
        if not requests:
            return None, None
        return met / requests, (None if math.isnan(weighted) else weighted / requests)


@dataclass(frozen=True, slots=True)
class Switched:
    """How a request was switched: the variant (its position), the seconds predicted at
    admission, the deadline (ms) and the seconds since the request began when admitted."""

    position: int
    variant: str
    predicted: float
    deadline_ms: float
    admitted: float


class DeadlineShed(Overloaded):
    """503: no variant (or, without variants, the model) can answer within the deadline."""

    def __init__(self, detail: str, *, deadline_ms: float, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after, reason="deadline")
        self.deadline_ms = deadline_ms


def admit(
    served: Served,
    rows: int,
    deadline: float,
    admitted: float,
    cached: Callable[[LoadedModel], bool] | None = None,
) -> tuple[LoadedModel, Switched]:
    """The variant a request of ``rows`` rows with a deadline of ``deadline`` ms goes to,
    ``admitted`` seconds after it began: the best one predicted to answer in time (or, with
    ``cached``, the best one with the answer in its cache). Raises :class:`DeadlineShed`
    when none is."""
    budget = deadline / 1000 - admitted
    switch = served.switch
    assert switch is not None
    choice = switch.choose(served, rows, budget)
    if cached is not None:
        # a cached answer of the chosen variant or a better one needs no time (nan: it
        # teaches the latency model nothing, and the entry may be gone by the lookup)
        for position in switch.order:
            if cached(loaded_for(served, position)):
                choice = (position, math.nan)
                break
            if choice is not None and position == choice[0]:
                break
    if choice is None:
        switch.refused()
        predicted = []
        for v in switch.variants:
            wait = served.models[v.index].batcher.predicted_wait(rows) or 0.0
            predicted.append((v.name, wait + v.margin(wait)))
        raise _shed(served, deadline, predicted)
    position, wait = choice
    state = switch.variants[position]
    return served.models[state.index], Switched(position, state.name, wait, deadline, admitted)


def check_deadline(
    served: Served, loaded: LoadedModel, rows: int, deadline: float, admitted: float
) -> Switched:
    """A request to ``loaded`` on an endpoint without variants, with a deadline of
    ``deadline`` ms, ``admitted`` seconds after it began. Raises :class:`DeadlineShed` if
    the model is predicted to answer it late: a fast refusal instead of a late answer."""
    wait = loaded.batcher.predicted_wait(rows)
    if wait is not None and wait > deadline / 1000 - admitted:
        raise _shed(served, deadline, [(loaded.tag.decode(), wait)])
    return Switched(-1, "", math.nan if wait is None else wait, deadline, admitted)


def _shed(served: Served, deadline: float, predicted: list[tuple[str, float]]) -> DeadlineShed:
    name = served.endpoint.name
    times = ", ".join(f"{label} ~{seconds * 1000:.3g} ms" for label, seconds in predicted)
    fastest = min(seconds for _, seconds in predicted)
    retry = max(1, math.ceil(fastest - deadline / 1000))
    if served.switch is not None:
        what, more = f"no variant of endpoint {name!r} can", "or add a faster variant"
    else:
        what = f"the model of endpoint {name!r} cannot"
        more = "or give the endpoint a faster variant (docs/switching.md)"
    return DeadlineShed(
        f"{what} answer within the {deadline:g} ms deadline "
        f"(predicted: {times}): retry after {retry} s, allow a longer deadline "
        f"(x-modelyard-deadline-ms), {more}",
        deadline_ms=deadline,
        retry_after=retry,
    )


def deadline_ms(
    slo_ms: float | None,
    headers: Mapping[bytes, bytes],
    parameters: Mapping[str, Any] | None,
    endpoint: str,
) -> float | None:
    """A request's deadline in ms: the shortest of its endpoint's SLO, the header, and OIP's
    ``parameters`` (``deadline_ms``, or ``timeout`` in microseconds); None: none set."""
    found = [slo_ms] if slo_ms is not None else []
    given = headers.get(DEADLINE_HEADER)
    if given is not None:
        header = "the x-modelyard-deadline-ms header"
        found.append(_positive(given.decode("latin-1"), header, endpoint))
    if parameters:
        if "deadline_ms" in parameters:
            found.append(_positive(parameters["deadline_ms"], "parameters.deadline_ms", endpoint))
        if "timeout" in parameters:  # tritonclient's infer(timeout=...), in microseconds
            timeout = _positive(parameters["timeout"], "parameters.timeout (µs)", endpoint)
            found.append(timeout / 1000)
    return min(min(found), float(MAX_DEADLINE_MS)) if found else None


def _positive(value: Any, where: str, endpoint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (number > 0 and math.isfinite(number)):
        raise BadRequest(f"endpoint {endpoint!r}: {where} must be a positive number, got {value!r}")
    return min(number, float(MAX_DEADLINE_MS) * 1000)  # (the µs of a timeout: divided later)


def qualities(
    ws: Workspace, endpoint: Endpoint, versions: Sequence[Any]
) -> dict[str, tuple[float | None, str]]:
    """Each variant's quality and its source, read now (blocking): labelled feedback on the
    version at this endpoint when there is enough, else the version's run metric.

    ``versions``: the :class:`~modelyard.registry.ModelVersion` each variant resolves to,
    in the policy's order. Variants with a quality in the policy are left out.
    """
    metric = endpoint.policy.quality_metric
    found: dict[str, tuple[float | None, str]] = {}
    for variant, version in zip(endpoint.policy.variants, versions, strict=True):
        if variant.quality is not None:
            continue
        found[variant.name] = _quality(ws, endpoint.name, variant, version, metric)
    return found


def _quality(
    ws: Workspace, endpoint: str, variant: Variant, version: Any, metric: str
) -> tuple[float | None, str]:
    try:
        measured = ws.monitoring.version_quality(endpoint, version.model, version.version, metric)
    except ModelyardError:  # a metric the endpoint's labels do not give: the run may have it
        measured = None
    if measured is not None:
        return measured[0], "feedback"
    if version.run_id:
        try:
            value = ws.tracking.get_run(version.run_id).metrics.get(metric)
        except ModelyardError:  # the run was deleted, or is out of the caller's reach
            value = None
        if value is not None and math.isfinite(value):
            return float(value), "run"
    return None, "unknown"


def loaded_for(served: Served, position: int) -> LoadedModel:
    """The loaded model of variant ``position``."""
    assert served.switch is not None
    return served.models[served.switch.variants[position].index]


def switching_families(served: Mapping[str, Served]) -> list[Any]:
    """``/metrics`` families of the switched endpoints:

    - ``modelyard_variant_requests_total{endpoint, variant, deadline}``: answered requests
      by whether they met their deadline (``met``/``missed``);
    - ``modelyard_deadline_shed_total{endpoint}``: requests no variant could answer in time;
    - ``modelyard_variant_quality{endpoint, variant}`` (where known);
    - ``modelyard_variant_predicted_seconds{endpoint, variant}``: when a one-row request
      queued now would be answered (the latency model, its margin included);
    - ``modelyard_deadline_met_ratio{endpoint}`` and ``modelyard_effective_accuracy{endpoint}``
      over the last minute (the met share weighted by quality; needs every quality).
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    requests = CounterMetricFamily(
        "modelyard_variant_requests",
        "Requests answered per variant, by whether they met their deadline",
        labels=["endpoint", "variant", "deadline"],
    )
    shed = CounterMetricFamily(
        "modelyard_deadline_shed",
        "Requests refused (503) because no variant could answer within their deadline",
        labels=["endpoint"],
    )
    quality = GaugeMetricFamily(
        "modelyard_variant_quality",
        "The quality that ranks the variant",
        labels=["endpoint", "variant"],
    )
    predicted = GaugeMetricFamily(
        "modelyard_variant_predicted_seconds",
        "When a one-row request queued now would be answered, by the latency model",
        labels=["endpoint", "variant"],
    )
    met = GaugeMetricFamily(
        "modelyard_deadline_met_ratio",
        "Share of the last minute's requests answered within their deadline (shed: missed)",
        labels=["endpoint"],
    )
    effective = GaugeMetricFamily(
        "modelyard_effective_accuracy",
        "Share of the last minute's requests answered within their deadline, each weighted "
        "by the quality of the variant that answered",
        labels=["endpoint"],
    )
    for name, snapshot in served.items():
        switcher = snapshot.switch
        if switcher is None:
            continue
        for state in switcher.variants:
            labels = [name, state.name]
            requests.add_metric([*labels, "met"], state.met)
            requests.add_metric([*labels, "missed"], state.missed)
            if state.quality is not None:
                quality.add_metric(labels, state.quality)
            wait = snapshot.models[state.index].batcher.predicted_wait(1)
            if wait is not None:
                predicted.add_metric(labels, wait + state.margin(wait))
        shed.add_metric([name], switcher.shed)
        share, weighted = switcher.effective()
        if share is not None:
            met.add_metric([name], share)
        if weighted is not None:
            effective.add_metric([name], weighted)
    return [requests, shed, quality, predicted, met, effective]
