"""The supervisor's restart schedule (its processes: tests/serving/test_serve_process.py)."""

from __future__ import annotations

from modelyard.supervisor import Backoff


def test_the_delay_doubles_while_replacements_die_young_and_resets_after_a_stable_run() -> None:
    backoff = Backoff()
    assert [backoff.delay(uptime=1.0) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.delay(uptime=60.0) == 0.5  # that one had lived a minute
    assert backoff.delay(uptime=0.2) == 1.0


def test_each_worker_has_its_own_schedule() -> None:
    first, second = Backoff(), Backoff()
    first.delay(1.0)
    first.delay(1.0)
    assert second.delay(1.0) == 0.5
