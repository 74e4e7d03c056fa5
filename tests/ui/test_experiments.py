"""The experiments pages in a real browser: runs table, filter, sort, run page, compare."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import event

from modelyard.api.app import create_app
from modelyard.client import Client
from modelyard.store.tables import RunParamRow, RunRow
from modelyard.tracking.entities import MetricPoint
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.serve_process import ServeProcess
from tests.ui.conftest import PHONE

#: What each run of the small experiment logs: params, loss per step, final accuracy.
RUNS = {
    "base": ({"alpha": "0.1", "depth": "3"}, [0.9, 0.5, 0.25], 0.71),
    "tuned": ({"alpha": "0.5", "depth": "3"}, [0.8, 0.4, 0.2], 0.86),
    "deep": ({"alpha": "0.1", "depth": "8"}, [0.7, 0.6, 0.55], 0.64),
}
MANY = 55


@dataclass
class Experiments:
    name: str
    run_ids: dict[str, str]
    many: str


@pytest.fixture(scope="module")
def exps(ui_client: Client) -> Experiments:
    """A small experiment with three runs and one with 55 bare runs (two pages)."""
    tracking = ui_client.tracking
    name = f"ui-exp-{uuid.uuid4().hex[:8]}"
    run_ids = {}
    for run_name, (params, losses, acc) in RUNS.items():
        run = tracking.start_run(name, name=run_name, params=params)
        points = [MetricPoint(key="loss", value=v, step=s) for s, v in enumerate(losses)]
        tracking.log_metrics(run.id, [*points, MetricPoint(key="acc", value=acc, step=2)])
        tracking.end_run(run.id)
        run_ids[run_name] = run.id
    many = f"ui-exp-many-{uuid.uuid4().hex[:8]}"
    for i in range(MANY):
        tracking.start_run(many, name=f"m{i:02d}", params={"i": i})
    return Experiments(name, run_ids, many)


def body_rows(page: Any) -> Any:
    return page.locator("table.runs tbody tr")


def test_experiments_list_links_to_the_runs_table(page: Any, exps: Experiments) -> None:
    page.goto(f"/ui/experiments?q={exps.name}")
    row = page.get_by_role("row", name=exps.name)
    assert row.get_by_role("cell").nth(2).inner_text() == "3"  # runs
    row.get_by_role("link", name=exps.name).click()
    assert page.get_by_role("heading", level=1).inner_text() == exps.name


def test_runs_table_has_param_and_metric_columns(page: Any, exps: Experiments) -> None:
    page.goto(f"/ui/experiments/{exps.name}")
    headers = page.locator("table.runs thead th").all_inner_texts()
    assert [h for h in headers if h.startswith(("param", "metric"))] == [
        "param alpha",
        "param depth",
        "metric acc",
        "metric loss",
    ]
    cells = page.get_by_role("row", name="tuned").get_by_role("cell").all_inner_texts()
    assert cells[-5:-1] == ["0.5", "3", "0.86", "0.2"]  # alpha, depth, acc, last loss
    assert body_rows(page).count() == len(RUNS)


def test_filter_by_metric_narrows_the_table(page: Any, exps: Experiments) -> None:
    page.goto(f"/ui/experiments/{exps.name}")
    page.get_by_label("Filter runs").fill("metrics.acc > 0.7")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**filter=*")
    names = page.locator("table.runs tbody th").all_inner_texts()
    assert sorted(names) == ["base", "tuned"]
    assert page.get_by_label("Filter runs").input_value() == "metrics.acc > 0.7"


def test_bad_filter_is_a_422_page_with_the_message_and_the_filter_kept(
    page: Any, exps: Experiments
) -> None:
    bad = "metrics.acc > 'high'"
    answer = page.goto(f"/ui/experiments/{exps.name}?filter={quote(bad)}")
    assert answer.status == 422
    assert "metrics.acc compares with a number" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Filter runs").input_value() == bad
    assert body_rows(page).count() == 0


def test_sort_by_a_metric_from_its_column_header(page: Any, exps: Experiments) -> None:
    page.goto(f"/ui/experiments/{exps.name}")
    page.get_by_role("link", name="metric acc").click()
    assert page.locator("table.runs tbody th").all_inner_texts() == ["tuned", "base", "deep"]
    assert page.get_by_label("Sort by").input_value() == "metrics.`acc` desc"
    page.get_by_role("link", name="metric acc").click()  # again: lowest first
    assert page.locator("table.runs tbody th").all_inner_texts() == ["deep", "base", "tuned"]


def test_run_page_charts_each_metric_with_its_values_per_step(page: Any, exps: Experiments) -> None:
    page.goto(f"/ui/runs/{exps.run_ids['base']}")
    assert page.get_by_role("heading", level=1).inner_text() == "Run base"
    assert page.get_by_role("link", name=exps.name).first.get_attribute("href") == (
        f"/ui/experiments/{exps.name}"
    )
    figure = page.locator("figure", has=page.locator("figcaption", has_text="loss"))
    assert figure.locator("svg[role=img]").count() == 1
    figure.get_by_text("Data table").click()
    rows = figure.locator("details table tbody tr")
    assert [r.split("\t") for r in rows.all_inner_texts()] == [
        ["0", "0.9"],
        ["1", "0.5"],
        ["2", "0.25"],
    ]
    params = page.get_by_role("table", name="Params of the run")
    assert params.get_by_role("row", name="alpha").inner_text().split("\t") == ["alpha", "0.1"]


def test_run_page_links_its_model_versions_and_datasets(page: Any, ui_client: Client) -> None:
    version = ui_client.get_version("models:/fraud/1")  # the quickstart's, made by a run
    assert version.run_id
    run = ui_client.tracking.get_run(version.run_id)
    page.goto(f"/ui/runs/{run.id}")
    link = page.get_by_role("link", name="fraud v1")
    assert link.get_attribute("href") == "/ui/models/fraud/versions/1"
    for d in run.inputs:
        dataset = page.get_by_role("link", name=f"{d.name} v{d.version}")
        assert dataset.get_attribute("href") == f"/ui/datasets/{d.name}/{d.version}"


def test_compare_two_selected_runs_marks_what_differs(page: Any, exps: Experiments) -> None:
    page.goto(f"/ui/experiments/{exps.name}")
    page.get_by_role("checkbox", name="Select run base").check()
    page.get_by_role("checkbox", name="Select run deep").check()
    page.get_by_role("button", name="Compare selected runs").click()
    page.wait_for_url("**/ui/runs/compare?*")
    table = page.locator("table.compare")
    # in the order of the table they were picked from: newest first
    assert table.locator("thead th").all_inner_texts() == ["Key", "deep", "base"]
    depth = table.get_by_role("row", name="depth")
    assert depth.inner_text().split("\t") == ["depth differs", "8", "3"]
    assert "differs" in (depth.get_attribute("class") or "")
    alpha = table.get_by_role("row", name="alpha")
    assert alpha.inner_text().split("\t") == ["alpha", "0.1", "0.1"]
    loss = page.locator("figure", has=page.locator("figcaption", has_text="loss"))
    assert loss.locator(".legend li").all_inner_texts() == ["deep", "base"]
    loss.get_by_text("Data table").click()
    assert loss.locator("details tbody tr").first.inner_text().split("\t") == ["0", "0.7", "0.9"]


def test_compare_with_one_or_six_runs_says_to_pick_two_to_five(
    page: Any, exps: Experiments
) -> None:
    page.goto(f"/ui/experiments/{exps.name}")
    page.get_by_role("checkbox", name="Select run base").check()
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Compare selected runs").click()
    assert nav.value.status == 422
    assert "select 2 to 5 runs to compare, not 1" in page.get_by_role("alert").inner_text()

    page.goto(f"/ui/experiments/{exps.many}")
    for box in page.get_by_role("checkbox").all()[:6]:
        box.check()
    with page.expect_navigation() as nav:
        page.get_by_role("button", name="Compare selected runs").click()
    assert nav.value.status == 422
    assert "not 6" in page.get_by_role("alert").inner_text()


def test_compare_an_unknown_run_is_a_404_page(ui_server: ServeProcess, exps: Experiments) -> None:
    answer = httpx.get(
        f"{ui_server.url}/ui/runs/compare",
        params={"run": [exps.run_ids["base"], "no-such-run"]},
    )
    assert answer.status_code == 404
    assert "no-such-run" in answer.text


def test_runs_table_pages_by_fifty(page: Any, exps: Experiments) -> None:
    page.goto(f"/ui/experiments/{exps.many}")
    assert body_rows(page).count() == 50
    first = set(page.locator("table.runs tbody th").all_inner_texts())
    page.get_by_role("link", name="Next page").click()
    second = set(page.locator("table.runs tbody th").all_inner_texts())
    assert len(second) == MANY - 50
    assert first | second == {f"m{i:02d}" for i in range(MANY)}
    assert page.get_by_role("link", name="Next page").count() == 0
    page.get_by_role("link", name="First page").click()
    assert body_rows(page).count() == 50


def test_runs_table_fits_a_phone(browser: Any, ui_server: ServeProcess, exps: Experiments) -> None:
    context = browser.new_context(base_url=ui_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(f"/ui/experiments/{exps.name}")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.get_by_role("button", name="Compare selected runs").is_visible()
    finally:
        context.close()


@pytest.fixture
def tracked(workspace: Workspace) -> Iterator[tuple[LiveServer, Workspace]]:
    server = LiveServer(create_app(workspace=workspace))
    yield server, workspace
    server.stop()


def test_runs_page_reads_one_page_of_runs_however_many_there_are(
    tracked: tuple[LiveServer, Workspace],
) -> None:
    server, ws = tracked
    for experiment, count in (("fewer", 60), ("more", 130)):
        for i in range(count):
            run = ws.tracking.start_run(experiment, params={"i": i, "seed": 1})
            ws.tracking.log_metrics(run.id, {"loss": 1 / (i + 1)})
    statements: list[str] = []
    loaded: Counter[str] = Counter()

    def _statement(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    def _loaded(instance: object, _context: object) -> None:
        loaded[type(instance).__name__] += 1

    counts = {}
    event.listen(ws.store.engine, "before_cursor_execute", _statement)
    for table in (RunRow, RunParamRow):
        event.listen(table, "load", _loaded)
    try:
        for experiment in ("fewer", "more"):
            statements.clear()
            loaded.clear()
            answer = httpx.get(
                f"{server.url}/ui/experiments/{experiment}",
                params={"order": "metrics.loss desc"},
            )
            assert answer.status_code == 200
            assert answer.text.count('name="run"') == 50
            counts[experiment] = len(statements)
            # one page (and the row that says there is a next page), two params per run
            assert loaded == {"RunRow": 51, "RunParamRow": 100}
    finally:
        event.remove(ws.store.engine, "before_cursor_execute", _statement)
        for table in (RunRow, RunParamRow):
            event.remove(table, "load", _loaded)
    assert counts["fewer"] == counts["more"]  # no query per run
