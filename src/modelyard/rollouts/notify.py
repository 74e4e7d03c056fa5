"""Webhooks of a rollout: a POST to each of its plan's URLs when it ends, with retries."""

from __future__ import annotations

import logging
import threading

from modelyard import jsonio
from modelyard.monitoring.alert_notifications import WebhookPolicy, post_webhook
from modelyard.rollouts.entities import Rollout

log = logging.getLogger("modelyard.rollouts")

POLICY = WebhookPolicy()


def notify(rollout: Rollout, policy: WebhookPolicy = POLICY) -> list[threading.Thread]:
    """Post ``rollout.<phase>`` with the rollout (its latest analysis included) to each
    webhook of its plan, each from a thread of its own; the threads (for tests to join)."""
    event = f"rollout.{rollout.phase}"
    shown = rollout.model_copy(update={"analyses": rollout.analyses[-1:]})
    body = jsonio.dumps({"event": event, "rollout": shown.model_dump(mode="json")})
    headers = {
        "content-type": "application/json",
        "user-agent": "modelyard-rollouts",
        "x-modelyard-event": event,
        # Stable across retries, so a receiver can drop a repeat it already handled.
        "x-modelyard-delivery": f"{rollout.id}:{rollout.phase}",
    }
    threads = []
    for url in rollout.plan.webhooks:
        # Not a daemon: a CLI that aborts a rollout in-process waits for its webhooks
        # (bounded by the policy's attempts and timeout) before it exits.
        thread = threading.Thread(target=_post, args=(url, body, headers, policy, rollout.id))
        thread.start()
        threads.append(thread)
    return threads


def _post(url: str, body: bytes, headers: dict[str, str], policy: WebhookPolicy, rid: str) -> None:
    try:
        status = post_webhook(url, body, headers, policy)
    except Exception as exc:
        log.warning("rollout %s: webhook %s failed: %s", rid, url, exc)
        return
    if not 200 <= status < 300:
        log.warning("rollout %s: webhook %s answered HTTP %d", rid, url, status)
