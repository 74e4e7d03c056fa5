"""Rate limits and daily quotas on predictions: per token, per endpoint, per token on an endpoint.

A limit (:class:`PredictionLimit`, a row of ``prediction_limits``) has a *scope*, ``token:ID``,
``endpoint:NAME`` or ``token:ID/endpoint:NAME``, and a rate (requests per second, with a
burst), a daily quota (rows predicted per UTC day), or both. :class:`LimitService`
(``ws.limits``; ``modelyard limits``, ``/api/v1/limits``) sets, lists and deletes them.

A gateway worker enforces them with a :class:`LimitBook`. A prediction request is checked
against every limit whose scope it is in (its token's, its endpoint's, its token's on that
endpoint) with dict lookups and arithmetic, no I/O:

* a rate limit is a token bucket in the worker process: ``burst`` requests at once, refilled
  at ``rate`` per second. Each worker has its own buckets: behind N workers a scope gets up to
  N times its rate.
* a daily quota counts the rows its scope's requests were answered with (and the requests)
  per UTC day. A request is refused once the day's count has reached the quota; the request
  that crosses it is answered whole, so the count may pass the quota by the rows of the
  requests in flight at that moment.

Over a limit the answer is 429 problem+json naming the limit, with ``Retry-After`` (seconds
until the bucket holds a token again, or until 00:00 UTC) and ``RateLimit-*`` headers.
Requests without a token (auth off) count under their endpoint's limits only.

The daily counts are shared through ``prediction_quota_usage``: every ``limits_flush_seconds``
a worker adds what it counted since its last flush (an upsert adding its delta, so that
workers never overwrite each other's counts), then reads back the day's totals, and the
limits with them (changes reach every worker within a flush interval). A worker thus sees
the other workers' rows up to one flush interval late: a quota holds across N workers to
within what the other N - 1 answer in one interval. A gateway loads the day's totals before
it answers its first request, so a restart does not reset a quota; rows counted by a worker
killed outright (SIGKILL) since its last flush are lost to the count. The counts start when
a limit is set: rows answered before it are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel

from modelyard.errors import Conflict, InvalidInput, ModelyardError, NotFound
from modelyard.store.schema import MAX_BIGINT, MAX_INTEGER, read_sqlite

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from modelyard.governance.entities import Identity
    from modelyard.store.tables import PredictionLimitRow
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.governance.limits")

__all__ = [
    "Admission",
    "LimitBook",
    "LimitExceeded",
    "LimitService",
    "PredictionLimit",
    "parse_rate",
]

DAY_SECONDS = 86_400
#: The highest rate a limit may have, in requests per second.
MAX_RATE = 1_000_000.0
_EPOCH = date(1970, 1, 1)
_RATE = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hr|hour)\s*)?$",
    re.IGNORECASE,
)
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PER.update({"h": 3600, "hr": 3600, "hour": 3600})
RATE_HELP = "a number of requests per second, or N/s, N/m, N/h (e.g. 50/s, 300/m)"
_TOKEN_ID = re.compile(r"^[0-9A-Za-z]{1,64}$")


class LimitExceeded(ModelyardError):
    """A prediction request over a rate limit or a daily quota: 429, retry later."""

    status = 429
    title = "Too many requests"

    def __init__(
        self,
        detail: str,
        *,
        limit: str,
        scope: str,
        kind: str,
        retry_after: int,
        quota: int,
        window: int,
    ) -> None:
        super().__init__(detail, limit=limit, scope=scope, kind=kind, retry_after=retry_after)
        self.retry_after = retry_after
        #: The ``RateLimit-*`` headers of the answer (IETF httpapi draft style).
        self.headers = (
            (b"ratelimit-limit", b"%d" % quota),
            (b"ratelimit-remaining", b"0"),
            (b"ratelimit-reset", b"%d" % retry_after),
            (b"ratelimit-policy", b"%d;w=%d" % (quota, window)),
        )


class PredictionLimit(BaseModel):
    """A limit, and what its scope used today (UTC) as of the gateways' last flush."""

    id: str
    scope: str
    endpoint: str | None = None
    #: The id of the API token it limits (`modelyard tokens list`).
    token: str | None = None
    #: Requests per second (a token bucket per gateway worker).
    rate: float | None = None
    #: Requests a worker may take at once before the rate applies.
    burst: int | None = None
    #: Rows predicted per UTC day, counted across every gateway worker.
    daily: int | None = None
    day: date
    rows_today: int = 0
    requests_today: int = 0
    created_at: datetime
    updated_at: datetime
    created_by: str = ""


def parse_rate(value: float | int | str) -> float:
    """Requests per second from ``50``, ``50/s``, ``300/m`` or ``1000/h``."""
    if isinstance(value, bool):
        raise InvalidInput(f"rate must be {RATE_HELP}, not a boolean")
    if isinstance(value, int | float):
        per_second = float(value)
    else:
        found = _RATE.match(value) if len(value) <= 64 else None
        if found is None:
            raise InvalidInput(f"rate {value[:64]!r} is not {RATE_HELP}")
        per_second = float(found[1]) / _PER[(found[2] or "s").lower()]
    if not (math.isfinite(per_second) and 0 < per_second <= MAX_RATE):
        raise InvalidInput(f"rate must be above 0 and at most {MAX_RATE:g}/s; use {RATE_HELP}")
    return per_second


def scope_of(endpoint: str | None, token: str | None) -> str:
    """The scope a limit on ``endpoint`` and/or ``token`` has."""
    parts = [f"token:{token}"] if token else []
    if endpoint:
        parts.append(f"endpoint:{endpoint}")
    return "/".join(parts)


def describe(endpoint: str | None, token: str | None, user: str | None = None) -> str:
    """A scope in words, for messages."""
    who = f"token {token}" + (f" (of {user})" if user else "") if token else ""
    if endpoint and who:
        return f"{who} on endpoint {endpoint!r}"
    return who or f"endpoint {endpoint!r}"


def utc_day(at: float | None = None) -> date:
    """The UTC day of ``at`` (seconds since the epoch; default now)."""
    return _EPOCH + timedelta(days=int((time.time() if at is None else at) // DAY_SECONDS))


# --- what a gateway exchanges with the store -------------------------------------------


class LimitSpec(NamedTuple):
    """A limit as a gateway enforces it."""

    id: str
    scope: str
    endpoint: str | None
    token: str | None
    rate: float | None
    burst: int | None
    daily: int | None


class Delta(NamedTuple):
    """Rows and requests a worker counted in a scope on a day, not yet in the store."""

    scope: str
    day: date
    rows: int
    requests: int


@dataclass(frozen=True)
class LimitState:
    """Every limit, and the day's totals per scope, as the store had them."""

    day: date
    limits: list[LimitSpec]
    totals: dict[str, tuple[int, int]]  # scope -> (rows, requests)


# --- the service ----------------------------------------------------------------------------


class LimitService:
    """Set, list and delete prediction limits; share a gateway's counts (``ws.limits``)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def set(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        rate: float | int | str | None = None,
        burst: int | None = None,
        daily: int | None = None,
    ) -> PredictionLimit:
        """Limit predictions of ``token`` (an id), of ``endpoint``, or of ``token`` on
        ``endpoint``: a ``rate`` (per second, or ``N/s``, ``N/m``, ``N/h``) with a ``burst``
        (default: one second's worth), a ``daily`` quota of rows, or both. A limit on the same
        scope is replaced whole."""
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError
        from ulid import ULID

        from modelyard.governance.identity import ENDPOINT_NAME
        from modelyard.store.tables import PredictionLimitRow, TokenRow

        if endpoint is None and token is None:
            raise InvalidInput(
                "a limit needs a scope: --endpoint NAME, --token TOKEN_ID, or both (that "
                "token on that endpoint)"
            )
        if endpoint is not None and not ENDPOINT_NAME.match(endpoint):
            raise InvalidInput(
                f"endpoint name {endpoint[:300]!r} is not valid; use letters, digits, '.', '_', '-'"
            )
        if token is not None and not _TOKEN_ID.match(token):
            raise InvalidInput(
                f"token {token[:64]!r} is not a token id; `modelyard tokens list` shows them"
            )
        if rate is None and daily is None:
            raise InvalidInput(
                "a limit needs a rate (--rate 50/s), a daily row quota (--daily 100000), or both"
            )
        per_second = None if rate is None else parse_rate(rate)
        if burst is not None:
            if per_second is None:
                raise InvalidInput("--burst goes with --rate: give the rate the burst is for")
            if isinstance(burst, bool) or not 1 <= burst <= MAX_INTEGER:
                raise InvalidInput(f"burst must be a whole number from 1 to {MAX_INTEGER}")
        elif per_second is not None:
            burst = max(1, min(MAX_INTEGER, math.ceil(per_second)))
        if daily is not None and (isinstance(daily, bool) or not 1 <= daily <= MAX_BIGINT):
            raise InvalidInput(f"daily must be a whole number of rows from 1 to {MAX_BIGINT}")
        if endpoint is not None:
            self.ws.endpoints.get(endpoint)  # NotFound names the command that lists them
        scope = scope_of(endpoint, token)
        now = datetime.now(UTC)
        after = {"rate": per_second, "burst": burst, "daily": daily}
        try:
            with self.ws.store.write(self.ws.actor) as tx:
                s = tx.session
                if token is not None and s.get(TokenRow, token) is None:
                    raise NotFound(f"no token {token!r}; `modelyard tokens list` shows their ids")
                row = s.scalar(
                    select(PredictionLimitRow)
                    .where(PredictionLimitRow.scope == scope)
                    .with_for_update()
                )
                before = None
                if row is None:
                    row = PredictionLimitRow(
                        id=str(ULID()),
                        scope=scope,
                        endpoint=endpoint,
                        token_id=token,
                        created_at=now,
                        created_by=self.ws.actor,
                    )
                    s.add(row)
                else:
                    before = {"rate": row.rate, "burst": row.burst, "daily": row.daily_rows}
                row.rate, row.burst, row.daily_rows = per_second, burst, daily
                row.updated_at = now
                tx.record("limit.set", "prediction_limit", scope, before, {"id": row.id, **after})
                s.flush()
                return self._limit(row, self._totals(s, utc_day()))
        except IntegrityError:  # the same scope set at the same moment by someone else
            raise Conflict(
                f"the limit of {describe(endpoint, token)} was set concurrently; run the "
                "command again"
            ) from None

    def list(
        self, *, endpoint: str | None = None, token: str | None = None
    ) -> list[PredictionLimit]:
        """Every limit (those of ``endpoint``, of ``token``), with today's counts."""
        from sqlalchemy import select

        from modelyard.store.tables import PredictionLimitRow

        query = select(PredictionLimitRow).order_by(PredictionLimitRow.scope)
        if endpoint is not None:
            query = query.where(PredictionLimitRow.endpoint == endpoint)
        if token is not None:
            query = query.where(PredictionLimitRow.token_id == token)
        with self.ws.store.read() as s:
            totals = self._totals(s, utc_day())
            return [self._limit(row, totals) for row in s.scalars(query)]

    def get(self, limit_id: str) -> PredictionLimit:
        with self.ws.store.read() as s:
            return self._limit(self._row(s, limit_id), self._totals(s, utc_day()))

    def delete(self, limit_id: str) -> None:
        """Delete a limit; its counts stay (setting it again continues the day's count)."""
        with self.ws.store.write(self.ws.actor) as tx:
            row = self._row(tx.session, limit_id)
            before = {"id": row.id, "rate": row.rate, "burst": row.burst, "daily": row.daily_rows}
            tx.session.delete(row)
            tx.record("limit.delete", "prediction_limit", row.scope, before=before)

    # -- a gateway's side -----------------------------------------------------------------

    def exchange(self, deltas: Sequence[Delta], day: date) -> LimitState:
        """Add a worker's ``deltas`` to the shared counts, then read every limit and the
        totals of ``day`` (blocking: a gateway calls it in a thread)."""
        if not deltas:
            with self.ws.store.read() as s:
                return self._state(s, day)
        with self.ws.store.write(self.ws.actor) as tx:
            _add_usage(tx.session, deltas)
            return self._state(tx.session, day)

    def load_state(self, day: date) -> LimitState:
        """The limits and the totals of ``day``, as a gateway needs them to start: read with
        sqlite3 when the store is a SQLite file, so that a gateway starting from its plan
        cache answers before it loads SQLAlchemy (see serving/plans.py)."""
        url = self.ws.settings.resolved_database_url
        limits = read_sqlite(
            url,
            "SELECT id, scope, endpoint, token_id, rate, burst, daily_rows FROM prediction_limits",
        )
        totals = read_sqlite(
            url,
            "SELECT scope, rows, requests FROM prediction_quota_usage "
            f"WHERE day = '{day.isoformat()}'",  # a date we made: nothing to escape
        )
        if limits is None or totals is None:
            return self.exchange((), day)
        return LimitState(
            day,
            [LimitSpec(*row) for row in limits],
            {scope: (int(rows), int(requests)) for scope, rows, requests in totals},
        )

    # -- rows ------------------------------------------------------------------------------

    @staticmethod
    def _row(s: Session, limit_id: str) -> PredictionLimitRow:
        from modelyard.store.tables import PredictionLimitRow

        row = s.get(PredictionLimitRow, limit_id)
        if row is None:
            raise NotFound(f"no limit {limit_id!r}; `modelyard limits list` shows their ids")
        return row

    @staticmethod
    def _totals(s: Session, day: date) -> dict[str, tuple[int, int]]:
        from sqlalchemy import select

        from modelyard.store.tables import QuotaUsageRow

        query = select(QuotaUsageRow.scope, QuotaUsageRow.rows, QuotaUsageRow.requests).where(
            QuotaUsageRow.day == day
        )
        return {scope: (rows, requests) for scope, rows, requests in s.execute(query)}

    def _state(self, s: Session, day: date) -> LimitState:
        from sqlalchemy import select

        from modelyard.store.tables import PredictionLimitRow

        rows = s.execute(
            select(
                PredictionLimitRow.id,
                PredictionLimitRow.scope,
                PredictionLimitRow.endpoint,
                PredictionLimitRow.token_id,
                PredictionLimitRow.rate,
                PredictionLimitRow.burst,
                PredictionLimitRow.daily_rows,
            )
        ).all()
        return LimitState(day, [LimitSpec(*row) for row in rows], self._totals(s, day))

    @staticmethod
    def _limit(row: PredictionLimitRow, totals: dict[str, tuple[int, int]]) -> PredictionLimit:
        used_rows, used_requests = totals.get(row.scope, (0, 0))
        return PredictionLimit(
            id=row.id,
            scope=row.scope,
            endpoint=row.endpoint,
            token=row.token_id,
            rate=row.rate,
            burst=row.burst,
            daily=row.daily_rows,
            day=utc_day(),
            rows_today=used_rows,
            requests_today=used_requests,
            created_at=row.created_at,
            updated_at=row.updated_at,
            created_by=row.created_by,
        )


def _add_usage(s: Session, deltas: Sequence[Delta]) -> None:
    """Add ``deltas`` to the stored counts: ``INSERT ... ON CONFLICT DO UPDATE`` adding to what
    is there, in one order (by scope and day) so that concurrent workers cannot deadlock."""
    from sqlalchemy.dialects import postgresql, sqlite

    from modelyard.store.tables import QuotaUsageRow

    dialect: Any = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    merged: dict[tuple[str, date], list[int]] = {}
    for scope, day, rows, requests in deltas:
        counts = merged.setdefault((scope, day), [0, 0])
        counts[0] += rows
        counts[1] += requests
    for (scope, day), (rows, requests) in sorted(merged.items()):
        stmt = dialect.insert(QuotaUsageRow).values(
            scope=scope, day=day, rows=rows, requests=requests
        )
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["scope", "day"],
                set_={
                    "rows": QuotaUsageRow.rows + stmt.excluded.rows,
                    "requests": QuotaUsageRow.requests + stmt.excluded.requests,
                },
            )
        )


# --- a gateway worker's book ----------------------------------------------------------------


class _Rule:
    """One limit in a worker: its bucket and its counts of the current day."""

    __slots__ = (
        "base_requests",
        "base_rows",
        "burst",
        "daily",
        "endpoint",
        "id",
        "level",
        "rate",
        "requests",
        "rows",
        "scope",
        "sent_requests",
        "sent_rows",
        "stamp",
        "token",
    )

    def __init__(self, spec: LimitSpec, now: float) -> None:
        self.id = spec.id
        self.scope = spec.scope
        self.endpoint = spec.endpoint
        self.token = spec.token
        self.rate = spec.rate
        self.burst = float(spec.burst or 1)
        self.daily = spec.daily
        self.level = self.burst  # a new bucket is full
        self.stamp = now
        self.base_rows = self.base_requests = 0  # the store's total at the last exchange
        self.sent_rows = self.sent_requests = 0  # sent in the exchange under way
        self.rows = self.requests = 0  # counted since

    def update(self, spec: LimitSpec) -> None:
        self.id, self.rate, self.daily = spec.id, spec.rate, spec.daily
        self.burst = float(spec.burst or 1)
        self.level = min(self.level, self.burst)

    def used_rows(self) -> int:
        return self.base_rows + self.sent_rows + self.rows


class Admission:
    """A request let through: who sent it (a token id or user name; None: no auth) and the
    limits its rows count under (:meth:`charge` once it is answered)."""

    __slots__ = ("caller", "rules")

    def __init__(self, caller: str | None, rules: tuple[_Rule, ...]) -> None:
        self.caller = caller
        self.rules = rules

    def charge(self, rows: int) -> None:
        for rule in self.rules:
            rule.rows += rows
            rule.requests += 1


OPEN = Admission(None, ())


class LimitBook:
    """The limits one gateway worker enforces: its token buckets and day counts.

    :meth:`admit` runs on the event loop for every prediction request and does no I/O;
    :meth:`sync` exchanges counts with the store (in a thread), :meth:`keep` does so for ever.
    Everything but the store access runs on the event loop's thread.
    """

    def __init__(self) -> None:
        self.active = False  # any limit at all: else admit() is two attribute reads
        self._rules: dict[str, _Rule] = {}  # scope -> rule
        # What applies, as tuples ready to concatenate: no list is built per request.
        self._endpoints: dict[str, tuple[_Rule]] = {}
        self._tokens: dict[str, tuple[_Rule]] = {}
        self._pairs: dict[tuple[str, str], tuple[_Rule]] = {}  # (token, endpoint)
        self._day = int(time.time() // DAY_SECONDS)  # days since the epoch (UTC)
        self._day_ends = (self._day + 1) * DAY_SECONDS  # when it ends, as time.time()
        self._carried: list[Delta] = []  # counts of a past day, not yet in the store
        self._sent_carried: list[Delta] = []

    # -- the hot path ----------------------------------------------------------------------

    def admit(self, endpoint: str, caller: Identity | None) -> Admission:
        """Let a request to ``endpoint`` by ``caller`` (None: auth off) through, or raise
        :class:`LimitExceeded`; a bucket loses a token only when every limit lets it pass."""
        if caller is None:
            token = who = None
        else:
            token = caller.token_id
            who = token or caller.name
        if not self.active:
            return OPEN if who is None else Admission(who, ())
        found: tuple[_Rule, ...] = self._endpoints.get(endpoint, ())
        if token is not None:
            found = found + self._tokens.get(token, ()) + self._pairs.get((token, endpoint), ())
        if not found:
            return OPEN if who is None else Admission(who, ())
        wall = time.time()
        if wall >= self._day_ends:
            self._roll(int(wall // DAY_SECONDS))
        now = time.monotonic()
        for rule in found:  # every limit first: a refusal takes no token from any bucket
            daily = rule.daily
            if daily is not None and rule.base_rows + rule.sent_rows + rule.rows >= daily:
                raise self._over_quota(rule, caller, wall)
            rate = rule.rate
            if rate is not None and rule.level + (now - rule.stamp) * rate < 1.0:
                raise self._over_rate(rule, caller, rule.level + (now - rule.stamp) * rate)
        for rule in found:
            rate = rule.rate
            if rate is not None:
                level = rule.level + (now - rule.stamp) * rate
                burst = rule.burst
                rule.level = (level if level < burst else burst) - 1.0
                rule.stamp = now
        return Admission(who, found)

    def _over_rate(self, rule: _Rule, caller: Identity | None, level: float) -> LimitExceeded:
        rate = rule.rate or 1.0
        wait = max(1, math.ceil((1.0 - level) / rate))
        what = describe(rule.endpoint, rule.token, caller.name if caller else None)
        command = _set_command(rule, "rate")
        return LimitExceeded(
            f"{what} is over its rate limit of {_rate_text(rate)} (burst {rule.burst:g}; "
            f"limit {rule.id}): retry after {wait} s, or ask an admin to raise it "
            f"(`{command}`)",
            limit=rule.id,
            scope=rule.scope,
            kind="rate",
            retry_after=wait,
            quota=int(rule.burst),
            window=max(1, math.ceil(rule.burst / rate)),
        )

    def _over_quota(self, rule: _Rule, caller: Identity | None, wall: float) -> LimitExceeded:
        wait = max(1, math.ceil(DAY_SECONDS - wall % DAY_SECONDS))
        what = describe(rule.endpoint, rule.token, caller.name if caller else None)
        daily = rule.daily or 0
        command = _set_command(rule, "daily")
        hours, minutes = divmod(wait // 60, 60)
        return LimitExceeded(
            f"{what} has used its daily quota of {daily} rows (limit {rule.id}); it resets at "
            f"00:00 UTC, in {hours} h {minutes} min (Retry-After). Ask an admin to raise it "
            f"(`{command}`)",
            limit=rule.id,
            scope=rule.scope,
            kind="daily",
            retry_after=wait,
            quota=daily,
            window=DAY_SECONDS,
        )

    def _roll(self, day: int) -> None:
        """A new UTC day: what was counted of the last one is carried to the store."""
        past = _EPOCH + timedelta(days=self._day)
        for rule in self._rules.values():
            if rule.rows or rule.requests:
                self._carried.append(Delta(rule.scope, past, rule.rows, rule.requests))
            if rule.sent_rows or rule.sent_requests:  # resent if the exchange under way fails
                self._sent_carried.append(
                    Delta(rule.scope, past, rule.sent_rows, rule.sent_requests)
                )
            rule.base_rows = rule.base_requests = rule.sent_rows = rule.sent_requests = 0
            rule.rows = rule.requests = 0
        self._day = day
        self._day_ends = (day + 1) * DAY_SECONDS

    # -- exchanges with the store ----------------------------------------------------------

    @property
    def day(self) -> date:
        return _EPOCH + timedelta(days=self._day)

    def take(self) -> list[Delta]:
        """The counts not yet sent, now marked as sent."""
        day = self.day
        deltas = list(self._carried)
        self._sent_carried, self._carried = self._carried, []
        for rule in self._rules.values():
            if rule.rows or rule.requests:
                deltas.append(Delta(rule.scope, day, rule.rows, rule.requests))
                rule.sent_rows += rule.rows
                rule.sent_requests += rule.requests
                rule.rows = rule.requests = 0
        return deltas

    def give_back(self) -> None:
        """The exchange failed: what was sent is still to send."""
        self._carried = self._sent_carried + self._carried
        self._sent_carried = []
        for rule in self._rules.values():
            rule.rows += rule.sent_rows
            rule.requests += rule.sent_requests
            rule.sent_rows = rule.sent_requests = 0

    def apply(self, state: LimitState) -> None:
        """Enforce ``state``'s limits (keeping the buckets of those that stay) and take its
        totals, which include what was sent."""
        now = time.monotonic()
        rules: dict[str, _Rule] = {}
        for spec in state.limits:
            rule = self._rules.get(spec.scope)
            if rule is None:
                rule = _Rule(spec, now)
            else:
                rule.update(spec)
            rules[spec.scope] = rule
        day = self.day
        for scope, gone in self._rules.items():
            if scope not in rules and (gone.rows or gone.requests):
                self._carried.append(Delta(scope, day, gone.rows, gone.requests))
        endpoints: dict[str, tuple[_Rule]] = {}
        tokens: dict[str, tuple[_Rule]] = {}
        pairs: dict[tuple[str, str], tuple[_Rule]] = {}
        for rule in rules.values():
            rule.sent_rows = rule.sent_requests = 0
            if state.day == day:
                rule.base_rows, rule.base_requests = state.totals.get(rule.scope, (0, 0))
            if rule.token is not None and rule.endpoint is not None:
                pairs[rule.token, rule.endpoint] = (rule,)
            elif rule.token is not None:
                tokens[rule.token] = (rule,)
            elif rule.endpoint is not None:
                endpoints[rule.endpoint] = (rule,)
        self._sent_carried = []
        self._rules, self._endpoints, self._tokens, self._pairs = rules, endpoints, tokens, pairs
        self.active = bool(rules)

    async def load(self, service: LimitService) -> None:
        """Take the limits and today's totals from the store (a gateway's start)."""
        self.apply(await asyncio.to_thread(service.load_state, self.day))

    async def sync(self, service: LimitService) -> bool:
        """Send the counts, take back the totals and the limits; False if the store failed
        (the counts are sent with the next exchange)."""
        deltas = self.take()
        exchange = asyncio.ensure_future(asyncio.to_thread(service.exchange, deltas, self.day))
        try:
            state = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            # The gateway stops during an exchange: the counts are on their way to the store.
            # Wait for them, so that its last sync neither loses nor repeats them.
            await asyncio.wait((exchange,))
            if exchange.exception() is not None:
                self.give_back()
            raise
        except Exception as exc:
            self.give_back()
            log.warning("could not exchange prediction quota counts (retrying): %s", exc)
            return False
        self.apply(state)
        return True

    async def keep(self, service: LimitService, seconds: float) -> None:
        """:meth:`sync` every ``seconds``, until cancelled."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.sync(service)
            except Exception:  # a bug of ours must not stop the counting for good
                log.exception("exchanging prediction quota counts failed")

    def counting(self) -> bool:
        """Whether this worker counted anything the store does not have yet."""
        return bool(self._carried) or any(r.rows or r.requests for r in self._rules.values())

    def counts(self) -> dict[str, tuple[int, int]]:
        """Rows and requests of each scope today as this worker knows them."""
        return {
            scope: (rule.used_rows(), rule.base_requests + rule.sent_requests + rule.requests)
            for scope, rule in self._rules.items()
        }


def _rate_text(per_second: float) -> str:
    if per_second >= 1:
        return f"{per_second:g}/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:g}/m"
    return f"{per_second * 3600:g}/h"


def _set_command(rule: _Rule, raise_: str) -> str:
    """The command that sets ``rule`` again with ``raise_`` (``rate`` or ``daily``) to
    choose; the rest as it is (a limit is set whole)."""
    parts = ["modelyard limits set"]
    if rule.token:
        parts.append(f"--token {rule.token}")
    if rule.endpoint:
        parts.append(f"--endpoint {rule.endpoint}")
    if raise_ == "rate":
        parts.append(f"--rate N/s --burst {rule.burst:g}")
    elif rule.rate is not None:
        parts.append(f"--rate {_rate_text(rule.rate)} --burst {rule.burst:g}")
    if raise_ == "daily":
        parts.append("--daily N")
    elif rule.daily is not None:
        parts.append(f"--daily {rule.daily}")
    return " ".join(parts)
