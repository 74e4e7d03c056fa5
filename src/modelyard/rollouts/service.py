"""Rollouts: start, watch and end a new version's way into an endpoint's traffic.

A rollout drives one endpoint's traffic policy: an optional shadow phase (the new version
gets a copy of each request), then canary steps (its share of the routes: 5, 25, 50, 100 %
by default), then the finish (the alias moves to it, or the endpoint points at it). Every
``interval_seconds`` the controller compares the canary with the baseline on the step's
prediction log (see :mod:`.analysis`); a failed analysis puts the endpoint back on the
baseline at once. The state is in the database: any process may run the controller
(:meth:`RolloutService.run_once`), a lease lets one act at a time, a restarted one carries on.

The gateway follows the endpoint's policy like any other change (within one refresh), so
rolling back is one endpoint write.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from ulid import ULID

from modelyard.errors import Conflict, InvalidInput, ModelyardError, NotFound
from modelyard.loops import PassLoop
from modelyard.registry.uri import parse_model_uri
from modelyard.rollouts.entities import (
    ENDED,
    Analysis,
    Check,
    Rollout,
    RolloutEvent,
    RolloutPlan,
)
from modelyard.serving.entities import Route, TrafficPolicy
from modelyard.store.leases import Lease, process_owner
from modelyard.store.tables import RolloutAnalysisRow, RolloutRow

if TYPE_CHECKING:
    from modelyard.rollouts.window import StepWindow
    from modelyard.store.db import Tx
    from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.rollouts")

__all__ = ["RolloutLoop", "RolloutPass", "RolloutService"]

LEASE = "rollouts"
_PASS_LOCK = threading.Lock()
PASSED = "every step passed"
#: How many analyses ``get`` returns (newest); ``analysis_count`` says how many there are.
SHOWN_ANALYSES = 100


@dataclass
class RolloutPass:
    """What one controller pass did."""

    acted: list[str] = field(default_factory=list)  # "<endpoint>: <what happened>"
    errors: list[str] = field(default_factory=list)
    skipped: bool = False  # another process holds the rollouts lease


class RolloutService:
    """Rollouts of a workspace (``ws.rollouts``)."""

    def __init__(self, ws: Workspace, *, owner: str | None = None) -> None:
        self.ws = ws
        self.owner = owner or process_owner()
        #: Each running rollout's current step as read so far (see :mod:`.window`).
        self._windows: dict[str, StepWindow] = {}
        self._lock = threading.Lock()

    @cached_property
    def _lease(self) -> Lease:
        return Lease(self.ws.store, LEASE, self.owner)

    # -- starting ----------------------------------------------------------------------------

    def start(
        self,
        endpoint: str,
        to: str,
        plan: RolloutPlan | Mapping[str, Any] | None = None,
        *,
        promotion_id: str | None = None,
    ) -> Rollout:
        """Start rolling ``to`` (a ``models:/`` URI) out on ``endpoint`` by ``plan``.

        :class:`Conflict` while the endpoint has a rollout running, routes a split by hand,
        or already serves that version.
        """
        plan = _checked_plan(plan)
        current = self.ws.endpoints.get(endpoint)
        running = current.policy.rollout
        if running is not None:
            raise Conflict(
                f"endpoint {endpoint!r} has rollout {running} running; wait for it to end, "
                f"or `modelyard rollouts abort {endpoint}` first"
            )
        if current.policy.routes:
            raise Conflict(
                f"endpoint {endpoint!r} splits its traffic by hand "
                f"({', '.join(r.target for r in current.policy.routes)}); a rollout starts "
                f"from one target: `modelyard endpoints update {endpoint} --model URI "
                "--clear-policy` first"
            )
        if current.policy.variants:
            raise Conflict(
                f"endpoint {endpoint!r} switches between variants by deadline "
                f"({', '.join(v.name for v in current.policy.variants)}); roll the new version "
                "out on an endpoint of its own, or move the variant's alias (the endpoint "
                "follows it)"
            )
        ref = parse_model_uri(to)
        version = self.ws.registry.resolve(ref)
        baseline = self.ws.registry.resolve(current.target)
        if (version.model, version.version) == (baseline.model, baseline.version):
            raise Conflict(
                f"endpoint {endpoint!r} already serves models:/{version.model}/"
                f"{version.version} ({current.target}); roll out another version"
            )
        target = f"models:/{version.model}/{version.version}"
        base_ref = parse_model_uri(current.target)
        finish = plan.finish or ("alias" if base_ref.alias is not None else "endpoint")
        alias = plan.alias or base_ref.alias or "champion"
        if finish == "alias" and version.model != base_ref.name:
            raise InvalidInput(
                f"finish=alias moves @{alias} of {base_ref.name}, but {target} is a version of "
                f"{version.model}; use finish=endpoint to point the endpoint at it instead"
            )
        if finish == "alias" and base_ref.alias != alias:
            # the endpoint would go back to what it serves now while @alias moved elsewhere
            raise InvalidInput(
                f"finish=alias moves @{alias}, but endpoint {endpoint!r} serves "
                f"{current.target}, so it would not follow: use finish=endpoint, or point the "
                f"endpoint at models:/{base_ref.name}@{alias} first"
            )
        plan = plan.model_copy(
            update={"finish": finish, "alias": alias if finish == "alias" else None}
        )
        # Who may send traffic to the version may start its rollout; the finish is checked
        # again (as any alias move) when it comes.
        self.ws.policies.check_routing(target)
        now = datetime.now(UTC)
        rollout_id = str(ULID())
        shadow = plan.shadow_requests > 0
        row = RolloutRow(
            id=rollout_id,
            endpoint=endpoint,
            active_endpoint=endpoint,
            model=version.model,
            version=version.version,
            target=target,
            baseline=current.target,
            baseline_model=baseline.model,
            baseline_version=baseline.version,
            plan=plan.model_dump(mode="json"),
            phase="shadow" if shadow else "canary",
            paused=False,
            step=-1 if shadow else 0,
            weight=0.0 if shadow else plan.steps[0],
            failures=0,
            inconclusive=0,
            reason="",
            started_at=now,
            started_by=self.ws.actor,
            acts_as=self._acts_as(),
            step_started_at=now,
            reference_at=None,
            next_analysis_at=now + timedelta(seconds=plan.interval_seconds),
            ended_at=None,
            promotion_id=promotion_id,
            endpoint_policy=current.policy.model_dump(mode="json"),
            events=[],
        )
        _event(row, now, "started", self.ws.actor, _describe_start(row, plan))
        try:
            with self.ws.store.write(self.ws.actor) as tx:
                tx.session.add(row)
                tx.session.flush()
                self._route(tx, row, starting_from=current.target)
                tx.record(
                    "rollout.start",
                    "rollout",
                    rollout_id,
                    None,
                    {
                        "endpoint": endpoint,
                        "to": target,
                        "baseline": current.target,
                        "plan": row.plan,
                    },
                )
        except IntegrityError:
            raise Conflict(
                f"endpoint {endpoint!r} has a rollout running already (started at the same "
                f"time); `modelyard rollouts status {endpoint}` shows it"
            ) from None
        self.ws.endpoints.changed()
        return self.get(rollout_id)

    def _acts_as(self) -> dict[str, Any] | None:
        """Who the controller acts as for this rollout: its starter (None: the local user)."""
        who = self.ws.identity
        if who.name == "local":
            return None
        return {"name": who.name, "role": who.role.value, "groups": list(who.groups)}

    # -- reading -----------------------------------------------------------------------------

    def get(self, ref: str) -> Rollout:
        """A rollout by id, or an endpoint's running (else latest) rollout by the endpoint's
        name; with its newest analyses and every event."""
        with self.ws.store.read() as s:
            row = self._find(s, ref)
            return self._rollout(s, row, SHOWN_ANALYSES)

    def list(
        self, endpoint: str | None = None, *, active: bool | None = None, limit: int = 100
    ) -> builtins.list[Rollout]:
        """Rollouts, newest first, each with its latest analysis only."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        query = select(RolloutRow).order_by(RolloutRow.started_at.desc(), RolloutRow.id.desc())
        if endpoint is not None:
            query = query.where(RolloutRow.endpoint == endpoint)
        if active is True:
            query = query.where(RolloutRow.active_endpoint.is_not(None))
        elif active is False:
            query = query.where(RolloutRow.active_endpoint.is_(None))
        with self.ws.store.read() as s:
            return [self._rollout(s, r, 1) for r in s.scalars(query.limit(limit))]

    def active(self) -> builtins.list[Rollout]:
        """Every running rollout, with its latest analysis."""
        return self.list(active=True, limit=1000)

    def recent(self, seconds: float = 600.0) -> builtins.list[Rollout]:
        """The running rollouts and those that ended in the last ``seconds``, each with its
        latest analysis (what ``/metrics`` shows: an ended one's phase for a while)."""
        since = datetime.now(UTC) - timedelta(seconds=seconds)
        query = (
            select(RolloutRow)
            .where((RolloutRow.active_endpoint.is_not(None)) | (RolloutRow.ended_at >= since))
            .order_by(RolloutRow.started_at.desc(), RolloutRow.id.desc())
            .limit(1000)
        )
        with self.ws.store.read() as s:
            return [self._rollout(s, r, 1) for r in s.scalars(query)]

    def _find(self, s: Session, ref: str, *, lock: bool = False) -> RolloutRow:
        query = select(RolloutRow)
        if lock:
            query = query.with_for_update()
        row = s.scalars(query.where(RolloutRow.id == ref)).one_or_none()
        if row is None:
            row = s.scalars(query.where(RolloutRow.active_endpoint == ref)).one_or_none()
        if row is None:
            latest = (
                select(RolloutRow.id)
                .where(RolloutRow.endpoint == ref)
                .order_by(RolloutRow.started_at.desc(), RolloutRow.id.desc())
                .limit(1)
            )
            found = s.scalar(latest)
            if found is not None:
                row = s.scalars(query.where(RolloutRow.id == found)).one()
        if row is None:
            raise NotFound(
                f"no rollout {ref!r} (an id, or an endpoint's name); start one with "
                "`modelyard rollouts start ENDPOINT --to models:/NAME/VERSION`"
            )
        return row

    @staticmethod
    def _rollout(s: Session, row: RolloutRow, analyses: int) -> Rollout:
        query = (
            select(RolloutAnalysisRow)
            .where(RolloutAnalysisRow.rollout_id == row.id)
            .order_by(RolloutAnalysisRow.at.desc(), RolloutAnalysisRow.id.desc())
            .limit(analyses)
        )
        found = list(reversed(s.scalars(query).all()))
        count = s.scalar(
            select(func.count())
            .select_from(RolloutAnalysisRow)
            .where(RolloutAnalysisRow.rollout_id == row.id)
        )
        return _to_rollout(row, [_to_analysis(a) for a in found], int(count or 0))

    # -- a person's hand -------------------------------------------------------------------

    def pause(self, ref: str, reason: str = "") -> Rollout:
        """Hold the weights where they are; no analysis acts until :meth:`resume`."""
        with self.ws.store.write(self.ws.actor) as tx:
            row = self._running(tx.session, ref, "pause")
            if row.paused:
                raise Conflict(f"rollout {row.id} on {row.endpoint!r} is paused already")
            row.paused = True
            _event(row, datetime.now(UTC), "paused", self.ws.actor, reason)
            tx.record("rollout.pause", "rollout", row.id, None, {"reason": reason})
        return self.get(row.id)

    def resume(self, ref: str) -> Rollout:
        """Carry on from the step it was paused in; the step's window starts again now."""
        now = datetime.now(UTC)
        with self.ws.store.write(self.ws.actor) as tx:
            row = self._running(tx.session, ref, "resume")
            if not row.paused:
                raise Conflict(f"rollout {row.id} on {row.endpoint!r} is not paused")
            row.paused = False
            row.step_started_at = now
            row.next_analysis_at = now + timedelta(seconds=_plan(row).interval_seconds)
            _event(row, now, "resumed", self.ws.actor)
            tx.record("rollout.resume", "rollout", row.id)
        return self.get(row.id)

    def abort(self, ref: str, reason: str = "") -> Rollout:
        """Send every request back to the baseline now; the rollout ends ``aborted``."""
        with self.ws.store.write(self.ws.actor) as tx:
            row = self._running(tx.session, ref, "abort")
            why = f"aborted by {self.ws.actor}" + (f": {reason}" if reason else "")
            self._end(tx, row, "aborted", why, by=self.ws.actor)
        self._after_end(row)
        return self.get(row.id)

    def promote(self, ref: str) -> Rollout:
        """Skip the remaining steps: finish now, as the caller (the alias move is checked
        like any other; :class:`Forbidden` says what is missing)."""
        with self.ws.store.read() as s:
            row = self._running(s, ref, "promote")
        self._finish(row.id, self.ws, by=self.ws.actor)
        return self.get(row.id)

    def _running(self, s: Session, ref: str, what: str) -> RolloutRow:
        row = self._find(s, ref, lock=True)
        if row.phase in ENDED:
            raise Conflict(
                f"rollout {row.id} on {row.endpoint!r} has ended ({row.phase}); there is "
                f"nothing to {what}"
            )
        return row

    # -- the controller ----------------------------------------------------------------------

    def run_once(self, now: datetime | None = None, *, lease_seconds: float = 30.0) -> RolloutPass:
        """One controller pass: take the lease, then look at every running rollout."""
        now = now or datetime.now(UTC)
        result = RolloutPass()
        with self.ws.store.read() as s:
            rows = s.scalars(select(RolloutRow).where(RolloutRow.active_endpoint.is_not(None)))
            running = [(r.id, r.endpoint) for r in rows]
        if not running:  # nothing to do: no write (the lease) every second on an idle server
            self._windows.clear()
            return result
        # One pass at a time in a process: the server's loop and `POST /rollout-passes`
        # share the lease's owner, so the lease alone would not keep them apart.
        with _PASS_LOCK:
            if not self._lease.take(now, lease_seconds):
                result.skipped = True
                return result
            self._pass(running, now, result)
        return result

    def _pass(
        self, running: builtins.list[tuple[str, str]], now: datetime, result: RolloutPass
    ) -> None:
        for stale in set(self._windows) - {rid for rid, _ in running}:
            self._windows.pop(stale, None)
        for rollout_id, endpoint in running:
            try:
                done = self.tick(rollout_id, now)
                if done:
                    result.acted.append(f"{endpoint}: {done}")
            except Exception as exc:
                log.exception("rollout %s on %s: the pass failed", rollout_id, endpoint)
                result.errors.append(f"{endpoint}: {type(exc).__name__}: {exc}")

    def release_lease(self) -> None:
        self._lease.release()

    def tick(self, rollout_id: str, now: datetime | None = None) -> str:
        """Look at one running rollout: analyse when due, then step, finish or roll back.
        Returns what it did ("" when nothing)."""
        now = now or datetime.now(UTC)
        with self.ws.store.read() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None or row.phase in ENDED:
                return ""
            s.expunge(row)
        plan = _plan(row)
        if now >= row.started_at + timedelta(seconds=plan.deadline_seconds):
            return self._roll_back(
                row, f"the deadline passed ({plan.deadline_seconds:g} s after the start)"
            )
        if row.paused:
            return ""
        if row.phase == "promoting":
            return self._finish(row.id, self._acting(row), by="rollouts")
        try:
            baseline = self.ws.registry.resolve(row.baseline)
            self.ws.registry.get_version(row.model, row.version)
        except NotFound as exc:
            return self._roll_back(row, f"a version it needs is gone: {exc.detail}")
        if (baseline.model, baseline.version) != (row.baseline_model, row.baseline_version):
            return self._end_now(
                row,
                "aborted",
                f"{row.baseline} moved from v{row.baseline_version} to v{baseline.version} "
                "during the rollout (not by it): the canary was compared with another version; "
                "start again if it should still replace the new one",
            )
        due = now >= row.next_analysis_at
        if not due and not (row.phase == "canary" and plan.early_errors):
            return ""
        window = self._window(row)
        window.read(self.ws, now)
        if not due:
            check = window.early(plan)
            if check is None or check.verdict != "fail":
                return ""
            analysis = window.analysis(row, now, [check], early=True)
        else:
            analysis = window.analysis(
                row, now, window.checks(self.ws, plan, row.weight), early=False
            )
        return self._judge(row, plan, analysis, now)

    def _window(self, row: RolloutRow) -> StepWindow:
        # (imported here: pyarrow and numpy are not needed to list or change rollouts)
        from modelyard.rollouts.window import StepWindow

        key = (row.phase, row.step, row.step_started_at)
        with self._lock:
            window = self._windows.get(row.id)
            if window is None or window.key != key:
                window = StepWindow(
                    key,
                    row.endpoint,
                    row.step_started_at,
                    (row.baseline_model, row.baseline_version),
                    (row.model, row.version),
                    shadow=row.phase == "shadow",
                    reference_at=row.reference_at,
                )
                self._windows[row.id] = window
            return window

    def _judge(self, row: RolloutRow, plan: RolloutPlan, analysis: Analysis, now: datetime) -> str:
        """Record ``analysis`` and act on its verdict."""
        expect = (row.phase, row.step)
        ended = ""
        with self.ws.store.write(self.ws.actor) as tx:
            current = tx.session.get(RolloutRow, row.id, with_for_update=True)
            if current is None or current.paused or (current.phase, current.step) != expect:
                return ""  # a person changed it meanwhile
            tx.session.add(_analysis_row(row.id, analysis))
            if not analysis.early:
                current.next_analysis_at = now + timedelta(seconds=plan.interval_seconds)
            if analysis.verdict == "pass":
                current.failures = current.inconclusive = 0
                done = self._advance(tx, current, plan, now)
            elif analysis.verdict == "inconclusive":
                current.inconclusive += 1
                done = ""
                if current.inconclusive >= plan.max_inconclusive:
                    ended = (
                        f"{current.inconclusive} analyses in a row were inconclusive "
                        f"({_failing(analysis.checks, 'inconclusive')}); the endpoint's "
                        "traffic is too thin for this plan: lower min_requests or raise "
                        "interval_seconds"
                    )
            else:
                current.failures += 1
                done = ""
                if current.failures >= plan.max_failures:
                    ended = _failing(analysis.checks, "fail")
                    if analysis.early:
                        ended = f"early error check: {ended}"
            if ended:
                self._end(tx, current, "rolled_back", ended)
        if ended:
            self._after_end(row)
            return f"rolled back: {ended}"
        if done == PASSED:  # straight on to the finish, not a pass later
            return self._finish(row.id, self._acting(row), by="rollouts")
        return done

    def _advance(self, tx: Tx, row: RolloutRow, plan: RolloutPlan, now: datetime) -> str:
        """The step passed: the next one, or the finish."""
        nxt = row.step + 1
        if nxt >= len(plan.steps):
            row.phase = "promoting"
            _event(row, now, "passed", "rollouts", "every step passed; finishing")
            return PASSED
        weight = plan.steps[nxt]
        if weight >= 100 and plan.finish == "alias":
            # The whole traffic on the canary is the release: only once the alias may move
            # (an approval the policy asks for, say), or traffic would outrun governance.
            blocked = self._blocked(row)
            if blocked:
                if row.reason != blocked:
                    row.reason = blocked
                    _event(row, now, "waiting", "rollouts", blocked)
                return f"waiting: {blocked}"
        was = "shadow" if row.phase == "shadow" else f"{row.weight:g} %"
        row.reference_at = row.step_started_at if weight >= 100 else None
        row.phase, row.step, row.weight, row.reason = "canary", nxt, weight, ""
        row.step_started_at = now
        row.next_analysis_at = now + timedelta(seconds=plan.interval_seconds)
        _event(row, now, "step", "rollouts", f"{was} passed; canary at {weight:g} %")
        self._route(tx, row)
        tx.record("rollout.step", "rollout", row.id, None, {"step": nxt, "weight": weight})
        return f"step {nxt + 1}: canary at {weight:g} %"

    def _blocked(self, row: RolloutRow) -> str:
        """Why the alias may not move to the canary now ("" if it may)."""
        plan = _plan(row)
        try:
            self._acting(row).registry.check_alias_move(
                row.model, str(plan.alias), row.version, gates_passed=row.promotion_id is not None
            )
        except ModelyardError as exc:
            return exc.detail
        return ""

    def _acting(self, row: RolloutRow) -> Workspace:
        """The workspace as the rollout's starter, for the moves it makes on their behalf:
        a registered user as they are now (disabled or demoted since: so be it), an
        identity-provider identity as its token said at the start (as pipeline triggers)."""
        if row.acts_as:
            from modelyard.governance.entities import Identity, Role

            name = row.acts_as["name"]
            try:
                self.ws.identities.get_user(name)
                return self.ws.as_actor(name)
            except NotFound:
                who = Identity(
                    name=name,
                    role=Role(row.acts_as["role"]),
                    groups=row.acts_as.get("groups") or [],
                )
                return self.ws.as_identity(who)
        return self.ws.as_actor(row.started_by)

    def _finish(self, rollout_id: str, ws: Workspace, *, by: str) -> str:
        """Release the canary, acting through ``ws``: in one transaction, move the alias (or
        point the endpoint at it), put the endpoint's own policy back and end
        ``succeeded``; an abort that comes first wins, and a crash leaves all or nothing. A
        refused move keeps the rollout ``promoting`` (retried each pass) and says why; a
        person's promote (``by`` not the controller) gets the refusal."""
        with self.ws.store.read() as s:
            row = s.get(RolloutRow, rollout_id)
            if row is None or row.phase in ENDED:
                return ""
            s.expunge(row)
        plan = _plan(row)
        alias = str(plan.alias)
        what = (
            f"@{alias} moved to v{row.version}"
            if plan.finish == "alias"
            else f"the endpoint now serves {row.target}"
        )
        try:
            if plan.finish == "endpoint" and by != "rollouts":
                ws.policies.check_routing(row.target)  # as the person promoting
            holder = None
            if plan.finish == "alias":
                try:
                    holder = ws.registry.get_alias(row.model, alias).version
                except NotFound:
                    holder = None
                if holder not in (None, row.baseline_version, row.version):
                    raise Conflict(
                        f"@{alias} of {row.model} moved to v{holder} during the rollout (not "
                        f"by it); moving it to v{row.version} would undo that: abort, and "
                        "start again against the new version"
                    )
            with ws.store.write(ws.actor) as tx:
                current = tx.session.get(RolloutRow, row.id, with_for_update=True)
                if current is None or current.phase in ENDED:
                    return ""  # an abort or a rollback came first
                if plan.finish == "alias" and holder != row.version:
                    ws.registry.set_alias(
                        row.model,
                        alias,
                        row.version,
                        reason=(
                            f"rollout {row.id} on {row.endpoint}: every step passed"
                            if by == "rollouts"
                            else f"rollout {row.id} on {row.endpoint}: promoted by {by} at "
                            f"step {row.step + 1} of {len(plan.steps)}"
                        ),
                        gates_passed=row.promotion_id is not None,
                        tx=tx,
                    )
                self._end(tx, current, "succeeded", f"promoted by {by}: {what}", by=by)
        except ModelyardError as exc:
            if by != "rollouts":
                raise
            self._wait(row.id, exc.detail)
            return f"waiting: {exc.detail}"
        self._after_end(row)
        return f"succeeded: {what}"

    def _wait(self, rollout_id: str, why: str) -> None:
        with self.ws.store.write(self.ws.actor) as tx:
            row = tx.session.get(RolloutRow, rollout_id, with_for_update=True)
            if row is None or row.phase in ENDED:
                return
            if row.phase != "promoting":
                row.phase = "promoting"
            if row.reason != why:
                row.reason = why
                _event(row, datetime.now(UTC), "waiting", "rollouts", why)

    def _roll_back(self, row: RolloutRow, why: str) -> str:
        return self._end_now(row, "rolled_back", why)

    def _end_now(self, row: RolloutRow, phase: str, why: str) -> str:
        with self.ws.store.write(self.ws.actor) as tx:
            current = tx.session.get(RolloutRow, row.id, with_for_update=True)
            if current is None or current.phase in ENDED:
                return ""
            self._end(tx, current, phase, why)
        self._after_end(row)
        return f"{phase.replace('_', ' ')}: {why}"

    def _end(self, tx: Tx, row: RolloutRow, phase: str, why: str, by: str = "rollouts") -> None:
        """End the rollout in ``tx``: the endpoint back on its own policy (and, after a
        success with finish=endpoint, on the canary's version)."""
        now = datetime.now(UTC)
        plan = _plan(row)
        before = {"phase": row.phase, "step": row.step, "weight": row.weight}
        row.phase, row.reason, row.ended_at, row.active_endpoint = phase, why, now, None
        row.weight = 100.0 if phase == "succeeded" else 0.0
        row.paused = False
        _event(row, now, phase, by, why)
        target = row.target if phase == "succeeded" and plan.finish == "endpoint" else None
        policy = TrafficPolicy.model_validate(row.endpoint_policy)
        self.ws.endpoints.set_rollout_policy(tx, row.endpoint, policy, target=target)
        tx.record(
            _END_ACTIONS[phase],
            "rollout",
            row.id,
            before,
            {"phase": phase, "reason": why, "endpoint": row.endpoint, "version": row.version},
        )

    def _after_end(self, row: RolloutRow) -> None:
        """After an end commits: the gateways' plan cache, the promotion, the webhooks."""
        self._windows.pop(row.id, None)
        self.ws.endpoints.changed()
        ended = self.get(row.id)
        if ended.promotion_id is not None:
            from modelyard.pipelines.gates import record_rollout

            try:
                record_rollout(self.ws, ended.promotion_id, ended)
            except Exception:
                log.exception("rollout %s: could not record its promotion's outcome", row.id)
        if ended.plan.webhooks:
            from modelyard.rollouts.notify import notify

            notify(ended)

    def _route(self, tx: Tx, row: RolloutRow, *, starting_from: str | None = None) -> None:
        """Point the endpoint's routes at the rollout's phase and weight, in ``tx``."""
        base = TrafficPolicy.model_validate(row.endpoint_policy)
        plan = _plan(row)
        policy = base.model_copy(update={"rollout": row.id, "sticky": plan.sticky or base.sticky})
        if row.phase == "shadow":
            policy.shadow = row.target
        elif row.weight >= 100:
            policy.routes = [Route(target=row.target, weight=100.0)]
        else:
            policy.routes = [
                Route(target=row.baseline, weight=100.0 - row.weight),
                Route(target=row.target, weight=row.weight),
            ]
        self.ws.endpoints.set_rollout_policy(tx, row.endpoint, policy, starting_from=starting_from)


_END_ACTIONS = {
    "succeeded": "rollout.succeed",
    "rolled_back": "rollout.rollback",
    "aborted": "rollout.abort",
}


class RolloutLoop(PassLoop):
    """Runs :meth:`RolloutService.run_once` every second or so; the lease lets one process
    act at a time."""

    name = "rollouts"


# -- conversions ------------------------------------------------------------------------------


def _checked_plan(plan: RolloutPlan | Mapping[str, Any] | None) -> RolloutPlan:
    if isinstance(plan, RolloutPlan):
        return plan
    try:
        return RolloutPlan.model_validate(dict(plan or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in ("plan", *err["loc"]))
        # a check's own message says what to fix; pydantic puts "Value error, " before it
        raise InvalidInput(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None


def _plan(row: RolloutRow) -> RolloutPlan:
    return RolloutPlan.model_validate(row.plan)


def _event(row: RolloutRow, at: datetime, kind: str, by: str, detail: str = "") -> None:
    # a new list: SQLAlchemy sees an assignment, not an in-place change of the JSON
    row.events = [
        *(row.events or []),
        RolloutEvent(at=at, kind=kind, by=by, detail=detail).model_dump(mode="json"),
    ]


def _describe_start(row: RolloutRow, plan: RolloutPlan) -> str:
    steps = ", ".join(f"{s:g}" for s in plan.steps)
    first = f"shadow for {plan.shadow_requests} requests, then " if plan.shadow_requests else ""
    end = (
        f"then @{plan.alias} moves to v{row.version}"
        if plan.finish == "alias"
        else f"then the endpoint serves {row.target}"
    )
    return (
        f"{row.target} against {row.baseline}: {first}steps {steps} % every "
        f"{plan.interval_seconds:g} s; {end}"
    )


def _failing(checks: Sequence[Check], verdict: str) -> str:
    return "; ".join(c.summary for c in checks if c.verdict == verdict) or verdict


def _analysis_row(rollout_id: str, a: Analysis) -> RolloutAnalysisRow:
    return RolloutAnalysisRow(
        id=str(ULID()),
        rollout_id=rollout_id,
        at=a.at,
        phase=a.phase,
        step=a.step,
        weight=a.weight,
        verdict=a.verdict,
        early=a.early,
        baseline_requests=a.baseline_requests,
        canary_requests=a.canary_requests,
        checks=[c.model_dump(mode="json") for c in a.checks],
    )


def _to_analysis(row: RolloutAnalysisRow) -> Analysis:
    return Analysis(
        at=row.at,
        phase=row.phase,
        step=row.step,
        weight=row.weight,
        verdict=row.verdict,
        early=row.early,
        baseline_requests=row.baseline_requests,
        canary_requests=row.canary_requests,
        checks=[Check.model_validate(c) for c in row.checks],
    )


def _to_rollout(row: RolloutRow, analyses: list[Analysis], count: int) -> Rollout:
    return Rollout(
        id=row.id,
        endpoint=row.endpoint,
        model=row.model,
        version=row.version,
        target=row.target,
        baseline=row.baseline,
        baseline_model=row.baseline_model,
        baseline_version=row.baseline_version,
        plan=RolloutPlan.model_validate(row.plan),
        phase=row.phase,
        paused=row.paused,
        step=row.step,
        weight=row.weight,
        failures=row.failures,
        inconclusive=row.inconclusive,
        reason=row.reason,
        started_at=row.started_at,
        started_by=row.started_by,
        step_started_at=row.step_started_at,
        next_analysis_at=row.next_analysis_at,
        ended_at=row.ended_at,
        promotion_id=row.promotion_id,
        analyses=analyses,
        analysis_count=count,
        events=[RolloutEvent.model_validate(e) for e in row.events or []],
    )
