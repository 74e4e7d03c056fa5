"""Who hears about alerts: in-process subscribers, and webhooks posted with retries.

Events are published after the transaction that made them has committed; webhooks are
posted from background threads shared by every AlertService of one store, and each
delivery's outcome is appended to the alert's ``notifications``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from modelyard import jsonio
from modelyard.monitoring.alert_rules import Alert, AlertEvent, EventKind, _alert, _rule
from modelyard.store import Store
from modelyard.store.tables import AlertRow, AlertRuleRow

# The alerts' one logger, whichever of their modules logs.
log = logging.getLogger("modelyard.monitoring.alerts")


@dataclass(frozen=True)
class WebhookPolicy:
    """How webhooks are called: attempts with exponential backoff, each with a short timeout."""

    attempts: int = 4
    backoff: float = 0.5  # seconds before the second attempt; doubles each time
    max_backoff: float = 8.0
    timeout: float = 5.0


class _Retryable(Exception):
    """A delivery failure worth another attempt (connection error, timeout, 5xx, 408, 429)."""


Subscriber = Callable[[AlertEvent], None]


@dataclass
class _Hub:
    """What every AlertService of one store shares: subscribers and the delivery threads."""

    subscribers: list[Subscriber] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: set[Future[None]] = field(default_factory=set)
    executor: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[[], None]) -> None:
        with self.lock:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(4, thread_name_prefix="modelyard-webhook")
            future = self.executor.submit(fn)
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self.lock:
            self.pending.discard(future)

    def wait(self, timeout: float | None) -> bool:
        with self.lock:
            pending = set(self.pending)
        _, not_done = wait(pending, timeout=timeout)
        return not not_done


# Keyed by the Store so that services made from one workspace (and its as_actor views) share
# one hub, and the hub goes away with the store.
_HUBS: weakref.WeakKeyDictionary[Store, _Hub] = weakref.WeakKeyDictionary()
_HUBS_LOCK = threading.Lock()


def _hub(store: Store) -> _Hub:
    with _HUBS_LOCK:
        hub = _HUBS.get(store)
        if hub is None:
            hub = _HUBS[store] = _Hub()
        return hub


@dataclass
class _Pending:
    """Events of one transaction, published once it has committed."""

    events: list[AlertEvent] = field(default_factory=list)

    def add(self, kind: EventKind, row: AlertRow, rule: AlertRuleRow) -> Alert:
        alert = _alert(row)
        self.events.append(AlertEvent(kind=kind, alert=alert, rule=_rule(rule)))
        return alert


@dataclass
class _Delivery:
    """One event posted to one webhook, with retries; the outcome is kept on the alert."""

    store: Store
    policy: WebhookPolicy
    event: AlertEvent
    url: str

    attempts: int = 0

    def run(self) -> None:
        started = datetime.now(UTC)
        outcome: dict[str, Any] = {"event": self.event.kind, "url": self.url}
        try:
            status = self._post()
            ok = 200 <= status < 300
            outcome.update(ok=ok, status=status, error=None if ok else f"HTTP {status}")
        except Exception as exc:
            outcome.update(ok=False, status=None, error=str(exc) or type(exc).__name__)
        outcome.update(attempts=self.attempts, at=started.isoformat())
        if not outcome["ok"]:
            log.warning(
                "webhook %s for %s alert %s failed: %s",
                self.url,
                self.event.kind,
                self.event.alert.id,
                outcome["error"],
            )
        try:
            self._record(outcome)
        except Exception:
            log.exception("could not record the webhook outcome of alert %s", self.event.alert.id)

    def _post(self) -> int:
        body = jsonio.dumps(
            {"event": f"alert.{self.event.kind}", **self.event.model_dump(mode="json")}
        )
        headers = {
            "content-type": "application/json",
            "user-agent": "modelyard-alerts",
            "x-modelyard-event": f"alert.{self.event.kind}",
            # Stable across retries, so a receiver can drop a repeat it already handled.
            "x-modelyard-delivery": f"{self.event.alert.id}:{self.event.kind}",
        }
        return post_webhook(self.url, body, headers, self.policy, on_attempt=self._attempted)

    def _attempted(self) -> None:
        self.attempts += 1

    def _record(self, outcome: dict[str, Any]) -> None:
        with self.store.write("system") as tx:
            row = tx.session.scalar(
                select(AlertRow).where(AlertRow.id == self.event.alert.id).with_for_update()
            )
            if row is not None:  # gone if its rule was deleted meanwhile
                row.notifications = [*row.notifications, outcome]


def post_webhook(
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: WebhookPolicy,
    *,
    on_attempt: Callable[[], object] | None = None,
) -> int:
    """POST ``body`` to ``url``, retrying connection errors, timeouts, 5xx, 408 and 429 with
    exponential backoff; the final status (the last failure is raised). ``on_attempt`` is
    called before each attempt."""
    import httpx

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential(multiplier=policy.backoff, max=policy.max_backoff),
        retry=retry_if_exception_type(_Retryable),
        reraise=True,
    )
    with httpx.Client(timeout=policy.timeout, follow_redirects=False) as client:
        for attempt in retrying:
            with attempt:
                if on_attempt is not None:
                    on_attempt()
                try:
                    response = client.post(url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
                if response.status_code >= 500 or response.status_code in (408, 429):
                    raise _Retryable(f"HTTP {response.status_code}")
                return response.status_code
    raise AssertionError("unreachable: tenacity re-raises the last failure")
