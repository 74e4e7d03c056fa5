"""The monitoring pages in a real browser: drift per feature with its histograms, drift over
time, performance from feedback, and alerts acknowledged and resolved by clicking."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.monitoring import PredictionLog
from modelyard.monitoring.alerts import Alert
from modelyard.monitoring.windows import floor_time
from modelyard.workspace import Workspace
from tests.monitoring.test_monitor import FEATURES, MODEL, training_frame
from tests.serve_process import ServeProcess
from tests.ui.conftest import PHONE, AuthServer, sign_in

ENDPOINT = "mon-ui"
QUIET = "mon-ui-quiet"  # an endpoint with no traffic at all
MODEL_NAME = "mon-ui-model"
#: One rule per test that needs an alert of its own; each opens one on the drifted window.
RULES = ("mon-ui-ack", "mon-ui-stale", "mon-ui-detail")


@dataclass
class Monitored:
    """The server's workspace, in this process (the same SQLite database)."""

    ws: Workspace

    def alert(self, rule: str) -> Alert:
        [alert] = self.ws.monitoring.list_alerts(ENDPOINT, rule=rule)
        return alert


def log_predictions(ws: Workspace, start: datetime, rows: int, shift: float, prefix: str) -> None:
    """``rows`` predictions of ``ENDPOINT`` over the 4 minutes from ``start``."""
    rng = np.random.default_rng(len(prefix) + rows)
    X = rng.normal(size=(rows, len(FEATURES)))
    X[:, 0] += shift
    proba = MODEL.predict_proba(pd.DataFrame(X, columns=FEATURES))
    log = PredictionLog(ws, flush_seconds=3600)
    log.start()
    for i in range(rows):
        log.log(
            endpoint=ENDPOINT,
            model=MODEL_NAME,
            version=1,
            request_id=f"{prefix}{i}",
            inputs={name: X[i : i + 1, j] for j, name in enumerate(FEATURES)},
            outputs={
                "predictions": np.array([int(proba[i, 1] > 0.5)]),
                "probabilities": proba[i : i + 1],
            },
            rows=1,
            latency_ms=2.0,
            at=start + timedelta(seconds=240 * i / rows),
        )
    log.close()


@pytest.fixture(scope="module")
def monitored(ui_server: ServeProcess, ui_client: Client) -> Iterator[Monitored]:
    """``ENDPOINT`` with two hours-old windows (calm, then ``f0`` shifted), labels for the
    calm one, and an open drift alert per rule of :data:`RULES`, opened by the server's
    own monitor."""
    X, _ = training_frame()
    ui_client.log_model(MODEL, MODEL_NAME, input_example=X.head(5), alias="champion")
    ws = Workspace.open(Settings(home=ui_server.home))
    try:
        ws.monitoring.set_reference(f"models:/{MODEL_NAME}/1", data=X)
        for rule in RULES:  # before the endpoint exists: the monitor must see them at once
            ws.monitoring.create_rule(
                {
                    "name": rule,
                    "endpoint": ENDPOINT,
                    "kind": "drift",
                    "metric": "drift_share",
                    "op": ">",
                    "threshold": 0.2,
                    "window": 300,
                    "min_samples": 50,
                }
            )
        # Logged before the endpoint exists, so its first windows start at this traffic.
        start = floor_time(datetime.now(UTC) - timedelta(hours=2), 3600)
        log_predictions(ws, start, 300, shift=0.0, prefix="calm")
        log_predictions(ws, start + timedelta(minutes=5), 300, shift=3.0, prefix="shifted")
        ui_client.endpoints.create(ENDPOINT, f"models:/{MODEL_NAME}@champion")
        ui_client.endpoints.create(QUIET, f"models:/{MODEL_NAME}@champion")
        ws.monitoring.submit_feedback(
            ENDPOINT, [{"request_id": f"calm{i}", "label": i % 2} for i in range(200)]
        )
        deadline = time.monotonic() + 60
        while len(ws.monitoring.list_alerts(ENDPOINT)) < len(RULES):
            assert time.monotonic() < deadline, "the server's monitor opened no drift alert"
            time.sleep(0.5)
        yield Monitored(ws)
    finally:
        ws.close()


def test_monitoring_page_shows_drift_histograms_and_performance(
    page: Any, monitored: Monitored
) -> None:
    page.goto(f"/ui/monitoring?endpoint={ENDPOINT}")
    assert page.locator("h1").inner_text() == f"Monitoring: {ENDPOINT}"
    assert page.get_by_label("Endpoint", exact=True).input_value() == ENDPOINT

    # Per-feature drift of the newest hourly window with traffic: f0 moved, f1 did not.
    features = page.get_by_role("table", name="Drift of each feature")
    f0 = features.get_by_role("row", name="f0", exact=False).first
    assert "drift" in f0.inner_text()
    f1 = features.get_by_role("row").filter(has=page.locator("code", has_text="f1")).first
    assert "ok" in f1.inner_text().split()

    # Reference vs current histograms, each with its data table.
    figure = page.locator("figure", has_text="f0: reference vs current")
    assert figure.locator("svg").is_visible()
    figure.get_by_text("Data table").click()
    table = figure.get_by_role("table")
    assert table.is_visible()
    headers = table.locator("thead th").all_inner_texts()
    assert headers[1:] == ["reference", "current"]
    assert table.locator("tbody tr").count() == 30

    # Drift over time: a chart, and one verdict per window linking to that window.
    history = page.locator("figure", has_text="Drifted features per window")
    assert history.locator("svg").is_visible()
    windows = page.get_by_role("list", name="Drift verdict per window")
    assert windows.get_by_role("link").count() >= 1

    # The 5-minute windows: the drifted one is a link that shows its features.
    page.get_by_label("Window", exact=True).select_option(label="5 min")
    page.get_by_role("button", name="Show", exact=True).click()
    drifted = windows.get_by_role("link").filter(has_text="drift")
    assert drifted.count() == 1
    drifted.click()
    assert "at=" in page.url
    assert "drift" in page.get_by_role("row", name="f0", exact=False).first.inner_text()
    calm = windows.get_by_role("link").filter(has_text="ok").first
    calm.click()
    verdicts = page.get_by_role("table", name="Drift of each feature").locator("tbody .badge")
    assert "drift" not in verdicts.all_inner_texts()

    # Performance from the labels of the calm window.
    chart = page.locator("figure", has_text="accuracy per window")
    assert chart.locator("svg").is_visible()
    assert page.get_by_label("Metric", exact=True).input_value() == "accuracy"


def test_acknowledge_then_resolve_by_clicking(page: Any, monitored: Monitored) -> None:
    alert = monitored.alert("mon-ui-ack")
    assert alert.status == "open" and alert.acknowledged_at is None
    page.goto(f"/ui/monitoring?endpoint={ENDPOINT}")
    row = page.locator(f"#alert-{alert.id}")
    row.get_by_role("button", name="Acknowledge").click()
    page.wait_for_load_state()
    row = page.locator(f"#alert-{alert.id}")
    text = row.inner_text()
    assert "acknowledged by local" in text and "open" in text.split()
    assert row.get_by_role("button", name="Acknowledge").count() == 0  # done once
    assert monitored.alert("mon-ui-ack").acknowledged_by == "local"
    assert monitored.alert("mon-ui-ack").status == "open"  # still needs fixing

    page.get_by_role("link", name="Acknowledged", exact=True).click()
    assert page.locator(f"#alert-{alert.id}").count() == 1

    row = page.locator(f"#alert-{alert.id}")
    row.get_by_label(f"Resolution note for alert {alert.id}").fill("reference refreshed")
    row.get_by_role("button", name="Resolve").click()
    page.wait_for_load_state()
    assert page.locator(f"#alert-{alert.id}").count() == 0  # no longer acknowledged-and-open
    page.get_by_role("link", name="Resolved", exact=True).click()
    row = page.locator(f"#alert-{alert.id}")
    assert "resolved by local" in row.inner_text()
    assert row.get_by_role("button").count() == 0

    row.get_by_role("link", name="mon-ui-ack").click()
    assert page.locator("h1").inner_text() == f"Alert mon-ui-ack on {ENDPOINT}"
    facts = page.locator("dl.facts").inner_text()
    assert "reference refreshed" in facts and "by local" in facts
    resolved = monitored.alert("mon-ui-ack")
    assert resolved.status == "resolved" and resolved.resolution_note == "reference refreshed"


def test_alert_page_shows_evidence_and_acknowledges(page: Any, monitored: Monitored) -> None:
    alert = monitored.alert("mon-ui-detail")
    page.goto(f"/ui/monitoring?endpoint={ENDPOINT}")
    page.get_by_role("link", name="mon-ui-detail").click()
    assert page.url.endswith(f"/ui/monitoring/alerts/{alert.id}")
    evidence = page.get_by_role("table").first.inner_text()
    assert "drift_share" in evidence and "drift.f0" in evidence
    assert "No webhook was notified" in page.locator("main").inner_text()
    page.get_by_label("What you are doing about it").fill("retraining on new data")
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(f"**/ui/monitoring/alerts/{alert.id}")
    facts = page.locator("dl.facts").inner_text()
    assert "by local" in facts and "retraining on new data" in facts
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    assert page.get_by_role("button", name="Resolve").is_visible()


def test_acknowledging_a_resolved_alert_says_why_it_cannot(
    page: Any, ui_client: Client, monitored: Monitored
) -> None:
    alert = monitored.alert("mon-ui-stale")
    page.goto(f"/ui/monitoring/alerts/{alert.id}")
    ui_client.monitoring.resolve_alert(alert.id, note="someone else fixed it")  # page is stale
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Acknowledge").click()
    assert answer.value.status == 409
    assert "only an open or escalated alert can be acknowledged" in page.inner_text("main")


def test_empty_states_say_what_to_do(page: Any, monitored: Monitored) -> None:
    page.goto("/ui/monitoring")
    page.get_by_label("Endpoint", exact=True).select_option(QUIET)
    page.get_by_role("button", name="Show", exact=True).click()
    # the performance section arrives after the page (htmx): wait for it, then read
    page.locator("main").get_by_text("No labelled predictions").wait_for()
    main = page.inner_text("main")
    assert f"endpoint '{QUIET}' logged no predictions" in main
    assert "No labelled predictions" in main and "modelyard monitor feedback" in main
    assert "modelyard monitor rules create" in main  # no alerts: how to get some


def test_unknown_alert_and_endpoint_are_404_pages(
    ui_server: ServeProcess, monitored: Monitored
) -> None:
    answer = httpx.get(f"{ui_server.url}/ui/monitoring/alerts/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    assert "no alert &#39;01ARZ3NDEKTSV4RRFFQ69G5FAV&#39;" in answer.text
    answer = httpx.get(f"{ui_server.url}/ui/monitoring", params={"endpoint": "no-such"})
    assert answer.status_code == 404 and "no-such" in answer.text
    answer = httpx.get(f"{ui_server.url}/ui/monitoring", params={"endpoint": ENDPOINT, "window": 7})
    assert answer.status_code == 422 and "pick one of 300, 3600, 86400" in answer.text


def test_monitoring_fits_a_phone(
    browser: Any, ui_server: ServeProcess, monitored: Monitored
) -> None:
    context = browser.new_context(base_url=ui_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(f"/ui/monitoring?endpoint={ENDPOINT}")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.goto(f"/ui/monitoring/alerts/{monitored.alert('mon-ui-detail').id}")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()


def test_only_writers_are_offered_acknowledge_and_resolve(
    browser: Any, auth_server: AuthServer
) -> None:
    ws = Workspace.open(Settings(home=auth_server.server.home, auth=True))
    try:
        ws.monitoring.create_rule(
            {
                "name": "mon-ui-auth",
                "endpoint": "fraud",
                "kind": "error_rate",
                "metric": "error_rate",
                "op": ">",
                "threshold": 0.1,
                "window": 300,
            }
        )
        start = floor_time(datetime.now(UTC) - timedelta(hours=1), 300)
        observation = {"requests": 100, "errors": 50, "error_rate": 0.5}
        [alert] = ws.monitoring.alerts.evaluate("fraud", 300, start, observation, 100)
    finally:
        ws.close()
    path = f"/ui/monitoring/alerts/{alert.id}"

    context = browser.new_context(base_url=auth_server.url)
    try:  # carol is a viewer: she sees the alert, no buttons, and a POST is refused
        page = context.new_page()
        sign_in(page, auth_server.tokens["carol"], path)
        assert "need the write permission" in page.inner_text("main")
        assert page.get_by_role("button", name="Acknowledge").count() == 0
        page.goto("/ui/monitoring?endpoint=fraud")
        assert page.locator(f"#alert-{alert.id}").get_by_role("button").count() == 0
        csrf = next(c["value"] for c in context.cookies() if c["name"] == "modelyard_csrf")
        answer = context.request.post(
            f"{path}/acknowledge", form={"csrf_token": csrf}, max_redirects=0
        )
        assert answer.status == 403 and "carol may not acknowledge alerts" in answer.text()
    finally:
        context.close()

    context = browser.new_context(base_url=auth_server.url)
    try:  # alice is an editor: she acknowledges it
        page = context.new_page()
        sign_in(page, auth_server.tokens["alice"], path)
        page.get_by_role("button", name="Acknowledge").click()
        page.wait_for_url(f"**{path}")
        assert "by alice" in page.locator("dl.facts").inner_text()
    finally:
        context.close()


def test_a_window_at_the_ends_of_the_calendar_is_a_bad_request(ui_server: ServeProcess) -> None:
    for at in ("9999-12-31T23:30:00", "0001-01-01T00:00:00+05:00"):
        answer = httpx.get(f"{ui_server.url}/ui/monitoring", params={"endpoint": "fraud", "at": at})
        assert answer.status_code == 422, answer.text
        assert "leaves no room" in answer.text and "Drift over time" in answer.text


def test_performance_section_is_a_page_of_its_own_without_scripts(
    monitored: Monitored, ui_server: ServeProcess
) -> None:
    url = f"{ui_server.url}/ui/monitoring/performance"
    answer = httpx.get(url, params={"endpoint": ENDPOINT, "window": 300})
    assert answer.status_code == 200
    assert "<h1>Performance of" in answer.text and 'id="performance"' in answer.text
    fragment = httpx.get(
        url, params={"endpoint": ENDPOINT, "window": 300}, headers={"hx-request": "true"}
    )
    assert "<h1>" not in fragment.text and "Performance from feedback" in fragment.text
    bad = httpx.get(url, params={"endpoint": ENDPOINT, "window": 7})
    assert bad.status_code == 422 and "pick one of" in bad.text
