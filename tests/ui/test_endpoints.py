"""The endpoint pages in a real browser: the list, an endpoint's policy, its live charts
under traffic, and its recent predictions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from modelyard.client import Client
from modelyard.monitoring.entities import OpsWindow
from modelyard.ui.pages.endpoints import hour_charts
from tests.serve_process import ServeProcess
from tests.ui.conftest import PHONE

FEATURES = ["amount", "hour", "account_age_days", "foreign"]
#: Bounds of the traffic a test sends: requests, and seconds.
MAX_REQUESTS = 400
MAX_SECONDS = 40.0

#: True once a bucket of the live requests chart that ends after ``arg`` (seconds of the
#: UTC day at which the traffic started) shows requests. Labels are HH:MM:SS, UTC.
CHART_SHOWS_TRAFFIC = """(started) => {
  const rows = document.querySelectorAll("#live-requests table tbody tr");
  for (const row of rows) {
    const [h, m, s] = row.querySelector("th").textContent.split(":").map(Number);
    const after = (h * 3600 + m * 60 + s - started + 86400) % 86400;
    const value = parseFloat(row.querySelector("td").textContent);
    if (after > 0 && after < 3600 && value > 0) return true;
  }
  return false;
}"""


def body(i: int) -> dict[str, Any]:
    row = [10.0 + i % 97, float(i % 24), 30.0 + i % 400, float(i % 2)]
    return {"dataframe_split": {"columns": FEATURES, "data": [row]}}


@contextmanager
def traffic(url: str, endpoint: str, prefix: str) -> Iterator[list[str]]:
    """Predictions sent to ``endpoint`` from a thread while the block runs (at most
    MAX_REQUESTS, for at most MAX_SECONDS); yields the request ids answered."""
    answered: list[str] = []
    stop = threading.Event()

    def send() -> None:
        deadline = time.monotonic() + MAX_SECONDS
        with httpx.Client(base_url=url, timeout=10) as http:
            for i in range(MAX_REQUESTS):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                rid = f"{prefix}-{i}"
                r = http.post(
                    f"/endpoints/{endpoint}/invocations",
                    json=body(i),
                    headers={"x-request-id": rid},
                )
                if r.status_code == 200:
                    answered.append(rid)
                time.sleep(0.05)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(timeout=MAX_SECONDS)


@contextmanager
def endpoint(client: Client, name: str, **fields: Any) -> Iterator[str]:
    """An endpoint of this test's own, deleted afterwards (the server is shared by the other
    test files, whose pages list every endpoint)."""
    client.endpoints.create(name, "models:/fraud/1", **fields)
    try:
        yield name
    finally:
        client.endpoints.delete(name)


def seconds_of_day(at: datetime) -> int:
    return at.hour * 3600 + at.minute * 60 + at.second


def test_live_chart_updates_under_traffic_without_a_reload(
    page: Any, ui_server: ServeProcess
) -> None:
    page.goto("/ui/endpoints/fraud")
    assert page.get_by_role("heading", name="Live").is_visible()
    requests_chart = page.locator("#live-requests")
    assert "Requests per second" in requests_chart.locator("figcaption").inner_text()
    page.evaluate("window.notReloaded = true")
    started = datetime.now(UTC)
    with traffic(ui_server.url, "fraud", "ui-live") as answered:
        # htmx fetches the live region every 2 s; the gateway worker publishes every 2 s
        page.wait_for_function(
            CHART_SHOWS_TRAFFIC, arg=seconds_of_day(started), timeout=35_000, polling=500
        )
    assert answered, "no prediction was answered"
    assert page.evaluate("window.notReloaded") is True  # swapped in place, not reloaded
    assert int(page.locator("#live-total").inner_text()) > 0
    assert "1 gateway worker" in page.locator(".live-summary").inner_text()
    # the latency chart has its percentiles by now, and every chart its data table
    latency = page.locator("#live-latency")
    assert latency.get_by_text("p99").first.is_visible()
    assert page.locator("#live-batch details.data").count() == 1


def test_endpoint_page_shows_policy_and_recent_predictions(
    page: Any, ui_server: ServeProcess, ui_client: Client
) -> None:
    with traffic(ui_server.url, "fraud", "ui-recent") as answered:
        deadline = time.monotonic() + MAX_SECONDS
        while len(answered) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(answered) >= 5
    newest = answered[-1]
    # the gateway writes its log every few seconds: reload until the rows are there
    deadline = time.monotonic() + 30
    page.goto("/ui/endpoints/fraud")
    while not page.get_by_role("cell", name=newest).count() and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        page.reload()
    predictions = page.locator("table.predictions")
    assert predictions.get_by_role("cell", name=newest).is_visible()
    assert "logged up to" in page.get_by_role("region", name="Recent predictions").inner_text()
    header = predictions.locator("thead").inner_text()
    assert "amount" in header and "Latency" in header
    row = predictions.get_by_role("row").filter(has_text=newest)
    assert "fraud v1" in row.inner_text() and "ok" in row.inner_text()

    policy = page.get_by_role("region", name="Traffic policy")
    assert "single: the target answers every request" in policy.inner_text()
    assert "up to 64 rows" in policy.inner_text()  # batching
    policy.get_by_role("link", name="models:/fraud@champion").click()
    assert page.url.endswith("/ui/models/fraud")


def test_split_shadow_and_sticky_are_shown_with_their_shares(page: Any, ui_client: Client) -> None:
    policy = {
        "routes": [
            {"target": "models:/fraud/1", "weight": 3},
            {"target": "models:/fraud@champion", "weight": 1},
        ],
        "shadow": "models:/fraud/1",
        "sticky": {"header": "x-user"},
    }
    cache = {"enabled": True, "ttl_seconds": 30}
    with endpoint(ui_client, "ui-endpoints-split", policy=policy, cache=cache):
        page.goto("/ui/endpoints")
        row = page.get_by_role("row", name="ui-endpoints-split")
        assert "75 %" in row.inner_text() and "25 %" in row.inner_text()
        assert "sticky by header x-user" in row.inner_text()
        row.get_by_role("link", name="ui-endpoints-split").click()
        assert page.get_by_role("heading", level=1).inner_text() == "Endpoint ui-endpoints-split"
        region = page.get_by_role("region", name="Traffic policy")
        text = region.inner_text()
        assert "weighted split" in text and "header x-user" in text and "Shadow" in text
        shares = region.get_by_role("row", name="models:/fraud@champion")
        assert "25.0 %" in shares.inner_text()
        assert "No rollout is running" in page.get_by_role("region", name="Rollout").inner_text()
        # the cache is on: its hit rate has a chart (empty until traffic)
        assert page.locator("#live-cache figcaption").inner_text().startswith("Cache hit rate")


def test_unknown_endpoint_is_a_404_page(page: Any, ui_server: ServeProcess) -> None:
    answer = page.goto("/ui/endpoints/no-such-endpoint")
    assert answer is not None and answer.status == 404
    assert "no endpoint 'no-such-endpoint'" in page.get_by_role("alert").inner_text()
    live = httpx.get(f"{ui_server.url}/ui/endpoints/no-such-endpoint/live")
    assert live.status_code == 404 and live.headers["content-type"].startswith("text/html")


def test_endpoint_page_fits_a_phone(browser: Any, ui_server: ServeProcess) -> None:
    context = browser.new_context(base_url=ui_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        page.goto("/ui/endpoints/fraud")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.goto("/ui/endpoints")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/ui/endpoints", "/ui/endpoints/fraud"])
def test_pages_have_one_h1(page: Any, path: str) -> None:
    page.goto(path)
    assert page.locator("h1").count() == 1


def test_live_updates_pause_while_the_box_is_ticked(page: Any, ui_server: ServeProcess) -> None:
    page.goto("/ui/endpoints/fraud")
    with page.expect_response(lambda r: "/ui/endpoints/fraud/live" in r.url) as polled:
        pass
    assert polled.value.status == 200 and "paused" not in polled.value.url
    page.get_by_label("Pause live updates").check()
    with page.expect_response(lambda r: "/live?paused=1" in r.url) as paused:
        pass
    assert paused.value.status == 204  # nothing to swap: what is shown stays
    assert page.locator("#live-requests").count() == 1


def test_switched_endpoint_shows_its_variants_and_slo(page: Any, ui_client: Client) -> None:
    policy = {
        "variants": [
            {"name": "fast", "target": "models:/fraud/1", "quality": 0.9},
            {"name": "exact", "target": "models:/fraud@champion", "quality": 0.95},
        ],
        "slo_ms": 50,
    }
    with endpoint(ui_client, "ui-endpoints-switched", policy=policy):
        page.goto("/ui/endpoints/ui-endpoints-switched")
        region = page.get_by_role("region", name="Traffic policy")
        assert "answer within 50 ms" in region.inner_text()
        fast = region.get_by_role("row", name="fast")
        assert "fraud v1" in fast.inner_text() and "0.9" in fast.inner_text()
        assert "policy" in fast.inner_text()  # where its quality comes from
        assert "0.95" in region.get_by_role("row", name="exact").inner_text()


def test_last_hour_charts_leave_gaps_for_windows_without_traffic() -> None:
    def window(minute: int, rps: float) -> OpsWindow:
        start = datetime(2026, 12, 7, 10, minute, tzinfo=UTC)
        return OpsWindow(
            window_start=start,
            window_end=start + timedelta(minutes=5),
            requests=int(rps * 300),
            rows=int(rps * 300),
            errors=0,
            error_rate=0.0,
            throughput_rps=rps,
            latency_p50_ms=1.0,
            latency_p95_ms=2.0,
            latency_p99_ms=3.0,
        )

    charts = hour_charts([window(0, 1.5), window(5, 2.0), window(15, 4.0)], datetime.now(UTC))
    requests = charts[0]
    assert len(requests.labels) == 12 and requests.labels[-4:] == [
        "10:00",
        "10:05",
        "10:10",
        "10:15",
    ]
    assert list(requests.series["requests/s"])[-4:] == [1.5, 2.0, None, 4.0]
    assert [c.title for c in charts] == ["Requests per second", "Latency", "Error rate"]
    assert hour_charts([], datetime.now(UTC)) == []


def test_a_live_refresh_that_fails_says_why_on_the_page(page: Any, ui_client: Client) -> None:
    """An htmx answer of 4xx is shown (in the page's status area), not dropped."""
    from playwright.sync_api import expect

    name = "ui-endpoints-gone"
    ui_client.endpoints.create(name, "models:/fraud/1")
    page.goto(f"/ui/endpoints/{name}")
    ui_client.endpoints.delete(name)
    expect(page.locator("#flash")).to_contain_text(name, timeout=15_000)
    assert page.get_by_role("heading", level=1).inner_text()  # the page itself stays
