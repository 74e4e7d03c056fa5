"""The pipelines pages in a real browser: runs of a real pipeline (one that succeeds and
promotes through its quality gate, one whose training step fails, one refused by the gate),
the run page's DAG, logs and gate reports, and a running run that refreshes itself."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import expect
from sklearn.linear_model import LogisticRegression

from modelyard.config import Settings
from modelyard.pipelines import PipelineRun, StepContext, pipeline, step
from modelyard.pipelines.gates import (
    GateReport,
    MetricThreshold,
    NoWorseThanChampion,
    QualityGate,
    evaluate_candidate,
    promote,
)
from modelyard.ui.dag import NODE_W, DagStep, RunGraph
from modelyard.ui.pages.pipelines import log_tail
from modelyard.workspace import Workspace
from tests.serve_process import ServeProcess
from tests.ui.conftest import PHONE

MODEL = "uipipe-model"
FEATURES = ["a", "b"]


@step(stage="ingest", cache=False)
def make_data(rows: int, ctx: StepContext) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    frame["y"] = (frame.a + frame.b + rng.normal(0, 0.5, rows) > 0).astype(int)
    ctx.log(f"made {rows} rows")
    return frame


@step(stage="train")
def fit(data: pd.DataFrame, fail: bool) -> LogisticRegression:
    if fail:
        raise ValueError("no usable rows in the training data: check its source")
    return LogisticRegression().fit(data[FEATURES], data.y)


@step(stage="train")
def register(model: LogisticRegression, data: pd.DataFrame, ctx: StepContext) -> str:
    return str(ctx.register_model(model, MODEL, data[FEATURES].head(5)).uri)


@step(stage="evaluate", cache=False)
def evaluate(
    candidate: str, data: pd.DataFrame, min_accuracy: float, ctx: StepContext
) -> GateReport:
    gate = QualityGate(
        [
            MetricThreshold("accuracy", ">=", min_accuracy),
            NoWorseThanChampion("accuracy", margin=0.05),
        ]
    )
    report = evaluate_candidate(ctx.ws, candidate, data, "y", gate)
    ctx.log(report.summary())
    return report


@step(stage="deploy", cache=False)
def deploy(report: GateReport, ctx: StepContext) -> bool:
    return promote(ctx.ws, report, pipeline_run_id=ctx.run_id).promoted


@pipeline(name="uipipe")
def uipipe(rows: int = 200, fail: bool = False, min_accuracy: float = 0.6) -> None:
    data = make_data(rows)
    model = fit(data, fail)
    deploy(evaluate(register(model, data), data, min_accuracy))


@pytest.fixture(scope="module")
def runs(ui_server: ServeProcess) -> dict[str, PipelineRun]:
    """Three runs of ``uipipe`` on the server's workspace: ``ok`` (promoted v1 to champion),
    ``broken`` (fit failed, later steps skipped), ``refused`` (cached steps; gate failed)."""
    ws = Workspace.open(Settings(home=ui_server.home))
    try:
        ws.pipelines.register("uipipe", "tests.ui.test_pipelines:uipipe")
        ws.pipelines.triggers.create(
            {
                "name": "uipipe-nightly",
                "pipeline": "uipipe",
                "kind": "schedule",
                "cron": "0 3 * * *",
                "enabled": False,  # shown, never fired by the server during the tests
            }
        )
        found = {
            "ok": ws.pipelines.run("uipipe", executor="inprocess"),
            "broken": ws.pipelines.run("uipipe", {"fail": True}, executor="inprocess"),
            "refused": ws.pipelines.run("uipipe", {"min_accuracy": 0.99}, executor="inprocess"),
        }
    finally:
        ws.close()
    assert found["ok"].status == "succeeded", found["ok"].error
    assert found["broken"].status == "failed"
    assert found["refused"].status == "succeeded", found["refused"].error
    return found


def node(page: Any, name: str) -> Any:
    """The DAG's box for step ``name`` (a link named "step: state")."""
    return page.locator("svg.dag a.node", has=page.locator(f"text.name:text-is('{name}')"))


def step_row(page: Any, name: str) -> Any:
    """Step ``name``'s row of the steps table."""
    table = page.get_by_role("table", name="Steps in order, with their state and timings")
    return table.get_by_role("row", name=re.compile(rf"^{name} "))


def test_pipelines_page_lists_pipelines_triggers_and_runs(
    page: Any, runs: dict[str, PipelineRun]
) -> None:
    page.goto("/ui/pipelines")
    expect(page.get_by_role("heading", level=1)).to_have_text("Pipelines")
    pipelines = page.get_by_role("table", name="Registered pipelines with the triggers")
    row = pipelines.get_by_role("row", name="uipipe")
    expect(row).to_contain_text("tests.ui.test_pipelines:uipipe")
    expect(row).to_contain_text("uipipe-nightly")
    expect(row).to_contain_text("0 3 * * *")
    expect(row).to_contain_text("disabled")
    for run in runs.values():
        expect(page.get_by_role("link", name=run.id)).to_be_visible()
    broken = page.get_by_role("row", name=runs["broken"].id)
    expect(broken).to_contain_text("failed")
    expect(broken).to_contain_text("no usable rows")

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Show runs").click()
    page.wait_for_url(re.compile(r"/ui/pipelines\?status=failed"))
    expect(page.get_by_role("link", name=runs["broken"].id)).to_be_visible()
    expect(page.get_by_role("link", name=runs["ok"].id)).to_have_count(0)

    page.goto("/ui/pipelines")
    pipelines.get_by_role("link", name="uipipe", exact=True).click()
    expect(page.get_by_role("heading", name="Runs of uipipe")).to_be_visible()
    page.get_by_role("link", name=runs["ok"].id).click()
    page.wait_for_url(f"**/ui/pipelines/runs/{runs['ok'].id}")


def test_run_page_draws_each_step_with_its_state_and_shows_the_failure(
    page: Any, runs: dict[str, PipelineRun]
) -> None:
    run = runs["broken"]
    page.goto(f"/ui/pipelines/runs/{run.id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Run of uipipe")
    expect(page.locator("#run-body")).not_to_have_attribute("hx-trigger", "every 2s")
    states = {
        "make_data": "succeeded",
        "fit": "failed",
        "register": "skipped",
        "evaluate": "skipped",
        "deploy": "skipped",
    }
    for name, state in states.items():
        box = node(page, name)
        # the state is a word in the box, not only its colour
        expect(box.locator("text.state")).to_have_text(f"{_symbol(state)} {state}")
        expect(box).to_have_attribute("aria-label", f"{name}: {state}")
        expect(box).to_have_class(f"node state-{state}")
    # one arrow per dependency: fit, register (2), evaluate (2), deploy
    expect(page.locator("svg.dag path.edge")).to_have_count(6)
    expect(step_row(page, "fit")).to_contain_text("failed")

    page.get_by_role("link", name="fit: failed").click()
    assert page.url.endswith("#step-fit")
    section = page.locator("section#step-fit")
    expect(section).to_contain_text(
        "step 'fit' raised ValueError: no usable rows in the training data"
    )
    expect(section.locator("pre.log")).to_contain_text("Traceback")
    expect(page.locator("section#step-register")).to_contain_text("upstream step 'fit' failed")
    expect(page.locator("section#step-make_data pre.log")).to_contain_text("made 200 rows")
    facts = page.locator("#run-body dl.facts").first
    expect(facts).to_contain_text("no usable rows")
    expect(facts.get_by_role("link", name=run.tracking_run_id or "?")).to_have_attribute(
        "href", f"/ui/runs/{run.tracking_run_id}"
    )
    params = page.get_by_role("table", name="Parameters of this run")
    expect(params.get_by_role("row", name="fail")).to_contain_text("true")
    expect(page.locator("#h-promotions + p")).to_contain_text("decided no promotion")


def test_promotion_shows_its_gate_report(page: Any, runs: dict[str, PipelineRun]) -> None:
    page.goto(f"/ui/pipelines/runs/{runs['ok'].id}")
    promotion = page.locator("article.promotion")
    expect(promotion).to_have_count(1)
    expect(promotion.get_by_role("heading")).to_have_text(f"{MODEL} v1 to @champion: promoted")
    rules = promotion.get_by_role("table", name="Gate rules")
    threshold = rules.get_by_role("row", name="accuracy >= 0.6")
    expect(threshold).to_contain_text("pass")
    expect(threshold.locator("td").nth(1)).to_have_text("0.6")
    champion = rules.get_by_role("row", name="accuracy no worse than the champion")
    expect(champion).to_contain_text("no champion at @champion")
    expect(promotion.get_by_role("table", name="Holdout metrics")).to_contain_text("accuracy")
    link = promotion.get_by_role("link", name=f"{MODEL} version 1")
    expect(link).to_have_attribute("href", f"/ui/models/{MODEL}/versions/1")

    page.goto(f"/ui/pipelines/runs/{runs['refused'].id}")
    for name in ("fit", "register"):  # same data and code: reused
        expect(node(page, name).locator("text.state")).to_have_text(f"{_symbol('cached')} cached")
    expect(step_row(page, "register")).to_contain_text("reused from the cache")
    promotion = page.locator("article.promotion")
    expect(promotion.get_by_role("heading")).to_have_text(f"{MODEL} v1 to @champion: not promoted")
    rule = promotion.get_by_role("row", name="accuracy >= 0.99")
    expect(rule).to_contain_text("fail")
    expect(promotion.locator("ul.reasons")).to_contain_text("metric_threshold: accuracy")
    expect(promotion).to_contain_text("@champion stayed on version 1")


def test_unknown_run_is_a_404_page(page: Any, ui_server: ServeProcess) -> None:
    answer = page.goto("/ui/pipelines/runs/01NOSUCHRUN0000000000000000")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("alert")).to_contain_text("no pipeline run '01NOSUCHRUN")
    answer = httpx.get(f"{ui_server.url}/ui/pipelines/runs/nope")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")


def test_bad_status_filter_is_a_4xx_page_saying_what_to_use(
    page: Any, ui_server: ServeProcess
) -> None:
    answer = page.goto("/ui/pipelines?status=exploded")
    assert answer is not None and answer.status == 422
    expect(page.get_by_role("alert")).to_contain_text(
        "status must be running, succeeded or failed, not 'exploded'"
    )
    answer = httpx.get(f"{ui_server.url}/ui/pipelines?page=not-a-token")
    assert answer.status_code == 422
    assert "page_token is not valid" in answer.text


def test_run_page_fits_a_phone(
    browser: Any, ui_server: ServeProcess, runs: dict[str, PipelineRun]
) -> None:
    context = browser.new_context(base_url=ui_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        for path in (f"/ui/pipelines/runs/{runs['ok'].id}", "/ui/pipelines"):
            page.goto(path)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
    finally:
        context.close()


# --- a run that is still running ------------------------------------------------------------

GO = threading.Event()


@step(stage="ingest", cache=False)
def warm_up() -> int:
    time.sleep(0.2)  # long enough that the next step's start is written before it blocks
    return 1


@step(stage="train", cache=False)
def hold(x: int) -> int:
    if not GO.wait(60):
        raise TimeoutError("the test never let the step finish")
    return x + 1


@step(stage="deploy", cache=False)
def finish(x: int) -> int:
    return x * 2


@pipeline(name="uipipe-live")
def live() -> None:
    finish(hold(warm_up()))


@pytest.fixture
def running(ui_server: ServeProcess) -> Iterator[str]:
    """A run of ``uipipe-live`` blocked in step ``hold`` until ``GO`` is set."""
    GO.clear()
    ws = Workspace.open(Settings(home=ui_server.home))
    thread = threading.Thread(
        target=ws.pipelines.run, args=(live,), kwargs={"executor": "inprocess"}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        found: list[PipelineRun] = []
        while not found and time.monotonic() < deadline:
            found = ws.pipelines.list_runs("uipipe-live", "running", limit=1).items
            time.sleep(0.05)
        assert found, "the run did not start"
        yield found[0].id
    finally:
        GO.set()
        thread.join(60)
        ws.close()


def test_a_running_run_refreshes_until_it_ends(page: Any, running: str) -> None:
    page.goto(f"/ui/pipelines/runs/{running}")
    expect(page.locator("#run-body")).to_have_attribute("hx-trigger", "every 2s")
    expect(node(page, "hold")).to_have_attribute("aria-label", "hold: running")
    expect(node(page, "finish")).to_have_attribute("aria-label", "finish: pending")
    GO.set()
    # no reload: htmx swaps the run's body in until the run has ended, then stops asking
    ended = page.locator("#run-body:not([hx-trigger])")
    expect(ended).to_be_attached(timeout=30_000)
    for name in ("warm_up", "hold", "finish"):
        expect(node(page, name)).to_have_attribute("aria-label", f"{name}: succeeded")
    expect(ended.locator("dl.facts").first).to_contain_text("succeeded")


# --- the layout, without a browser -------------------------------------------------------


def test_edges_that_skip_layers_bend_around_the_steps_between() -> None:
    graph = RunGraph(
        [
            DagStep("a", "succeeded"),
            DagStep("b", "succeeded", ["a"]),
            DagStep("c", "failed", ["b", "a"]),
            DagStep("d", "skipped", ["c", "a"]),
        ]
    )
    assert graph.layers == {"a": 0, "b": 1, "c": 2, "d": 3}
    for row in graph.rows:  # nothing overlaps within a layer
        spans = sorted((i.x, i.x + i.width) for i in row)
        assert all(left >= right for (_, right), (left, _) in pairwise(spans))
    # a→c passes b's layer and a→d passes b's and c's: by waypoints beside the steps
    waypoints = [i for i in graph.items.values() if not i.step]
    assert sorted(w.layer for w in waypoints) == [1, 1, 2]
    for w in waypoints:
        step = next(i for i in graph.rows[w.layer] if i.step)
        assert w.x >= step.x + NODE_W or w.x + w.width <= step.x
    svg = str(graph.svg())
    assert svg.count('class="edge"') == 5
    assert 'href="#step-c"' in svg and 'aria-label="c: failed"' in svg


def test_log_tail_keeps_the_end_from_a_line_start() -> None:
    log = "".join(f"line {i}\n" for i in range(10_000))
    tail, cut = log_tail(log, limit=1000)
    assert tail.endswith("line 9999\n") and tail.startswith("line ")
    assert len(tail.encode()) <= 1000 and cut == len(log.encode()) - len(tail.encode())
    assert log_tail("short\n") == ("short\n", 0)


def _symbol(state: str) -> str:
    from modelyard.ui.dag import SYMBOLS

    return SYMBOLS[state]
