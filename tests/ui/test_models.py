"""The models pages in a real browser: list and search, a model's versions and alias history,
a version's card, lineage and runtime check, and the datasets behind it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from modelyard.client import Client
from modelyard.ui.pages.models import PAGE
from tests.serve_process import ServeProcess
from tests.ui.conftest import PHONE

#: A model of this file's own, with one page of versions and two more.
PAGED = "ui-models-paged"
VERSIONS = PAGE + 2


@pytest.fixture(scope="module")
def paged(ui_client: Client) -> str:
    """``PAGED`` with :data:`VERSIONS` versions (all the quickstart model's files: nothing
    is uploaded) and ``@staging`` moved from v1 to v2 with a reason."""
    digest = ui_client.registry.resolve("models:/fraud/1").manifest_digest
    ui_client.registry.create_model(PAGED, description="versions enough for two pages")
    for _ in range(VERSIONS):
        ui_client.registry.create_version(PAGED, digest)
    ui_client.set_alias(PAGED, "staging", 1)
    ui_client.set_alias(PAGED, "staging", 2, reason="better recall on the holdout")
    return PAGED


def test_models_list_searches_names_and_descriptions(page: Any, ui_client: Client) -> None:
    ui_client.registry.create_model(
        "ui-models-needle", description="ranks support tickets by urgency", tags={"team": "ops"}
    )
    page.goto("/ui/models")
    assert page.get_by_role("row", name="fraud").is_visible()
    page.get_by_label("Search name or description").fill("TICKETS BY")  # case-insensitive
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"q=TICKETS\+BY"))
    row = page.get_by_role("row", name="ui-models-needle")
    assert "ranks support tickets by urgency" in row.inner_text()
    assert page.get_by_role("link", name="fraud", exact=True).count() == 0
    page.goto("/ui/models")
    page.get_by_role("row", name="ui-models-needle").get_by_role("link", name="team=ops").click()
    page.wait_for_url(re.compile(r"tag=team%3Dops"))
    assert page.get_by_label("Tag").input_value() == "team=ops"
    assert page.get_by_role("row", name="ui-models-needle").is_visible()
    assert page.get_by_role("link", name="fraud", exact=True).count() == 0
    page.get_by_label("Tag").fill("")
    page.get_by_label("Search name or description").fill("no-model-is-called-this")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_text("No model's name or description contains").is_visible()


def test_fraud_page_lists_version_1_with_champion(page: Any) -> None:
    page.goto("/ui/models")
    page.get_by_role("link", name="fraud", exact=True).click()
    page.wait_for_url("**/ui/models/fraud")
    assert page.get_by_role("heading", level=1).inner_text() == "fraud"
    row = page.get_by_role("row", name=re.compile(r"^v1\b"))
    assert "@champion" in row.inner_text()
    assert (
        row.get_by_role("link", name=re.compile(r"^[0-9A-Z]{26}$"))
        .get_attribute("href")
        .startswith("/ui/runs/")
    )
    aliases = page.get_by_role("region", name="Aliases")
    assert aliases.get_by_role("heading", name="@champion → v1").is_visible()


def test_alias_history_shows_each_move(page: Any, paged: str) -> None:
    page.goto(f"/ui/models/{paged}")
    history = page.get_by_role("table", name="History of @staging, newest first")
    rows = history.get_by_role("row").all()[1:]
    assert [r.get_by_role("cell").nth(1).inner_text() for r in rows] == ["v1 → v2", "set to v1"]
    assert "better recall on the holdout" in rows[0].inner_text()
    assert "local" in rows[0].inner_text()  # who moved it (auth off: the local user)


def test_versions_page_by_page_newest_first(page: Any, paged: str) -> None:
    page.goto(f"/ui/models/{paged}")
    versions = page.get_by_role("table", name=f"Versions of {paged}, newest first")
    first = versions.locator("tbody th").all_inner_texts()
    assert first == [f"v{n}" for n in range(VERSIONS, VERSIONS - PAGE, -1)]
    page.get_by_role("link", name="Next page").click()
    page.wait_for_url(re.compile(r"page="))
    versions = page.get_by_role("table", name=f"Versions of {paged}, newest first")
    assert versions.locator("tbody th").all_inner_texts() == ["v2", "v1"]
    assert "@staging" in versions.get_by_role("row", name=re.compile(r"^v2\b")).inner_text()
    assert page.get_by_role("link", name="Next page").count() == 0
    page.get_by_role("link", name="First page").click()
    assert page.get_by_role("link", name=f"v{VERSIONS}", exact=True).count() == 2  # latest too


def test_lineage_leads_from_version_to_its_dataset_and_back(page: Any) -> None:
    page.goto("/ui/models/fraud")
    page.get_by_role("link", name="v1", exact=True).first.click()
    page.wait_for_url("**/ui/models/fraud/versions/1")
    lineage = page.get_by_role("region", name="Lineage")
    assert lineage.locator("svg").is_visible()  # the drawing; the list holds the links
    assert lineage.get_by_role("link", name="fraud", exact=True).get_attribute("href") == (
        "/ui/endpoints/fraud"
    )
    assert lineage.get_by_role("link", name="logreg").is_visible()  # the run
    lineage.get_by_role("link", name="fraud-train v1").click()
    page.wait_for_url("**/ui/datasets/fraud-train/1")
    assert page.get_by_role("heading", level=1).inner_text() == "Dataset fraud-train v1"
    assert page.get_by_role("row", name="amount").is_visible()  # its columns
    assert (
        page.get_by_role("region", name="Runs that logged it")
        .get_by_role("link", name="logreg")
        .is_visible()
    )
    trained = page.get_by_role("region", name="Model versions trained or evaluated on it")
    assert "as training" in trained.inner_text()
    trained.get_by_role("link", name="fraud v1").click()
    page.wait_for_url("**/ui/models/fraud/versions/1")


def test_version_page_shows_signature_runtime_check_and_card(page: Any) -> None:
    page.goto("/ui/models/fraud/versions/1")
    inputs = page.get_by_role("table", name=re.compile("^Inputs"))
    assert "float64" in inputs.get_by_role("row", name="amount").inner_text()
    outputs = page.get_by_role("table", name=re.compile("^Outputs"))
    assert "-1 \u00d7 2" in outputs.get_by_role("row", name="probabilities").inner_text()
    # creating the endpoint checked ONNX Runtime against the native model and recorded it
    runtime = page.get_by_role("region", name="Runtime checks")
    assert runtime.get_by_role("heading", name=re.compile("ONNX Runtime")).is_visible()
    assert "sklearn.linear_model" in runtime.inner_text()
    card = page.get_by_role("region", name="Model card")
    assert card.get_by_role("heading", name="Metrics").is_visible()
    assert card.get_by_role("cell", name="account_age_days").is_visible()


def test_card_markdown_is_rendered_and_html_in_it_is_text(
    page: Any, ui_client: Client, paged: str
) -> None:
    ui_client.registry.update_card(
        paged,
        3,
        {
            "summary": "Scores **tickets**. <script>document.title='owned'</script>"
            "<img src=x onerror=alert(1)> [click](javascript:alert(1))"
        },
    )
    page.goto(f"/ui/models/{paged}/versions/3")
    card = page.get_by_role("region", name="Model card")
    assert card.locator("strong", has_text="tickets").is_visible()
    assert "<script>document.title='owned'</script>" in card.inner_text()
    assert card.locator("script, img").count() == 0
    assert card.locator("a[href^='javascript']").count() == 0
    assert page.title() != "owned"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/ui/models/fraud/versions/abc", 404, "a version is a whole number"),
        ("/ui/models/fraud/versions/999", 404, "has no version 999; its latest is 1"),
        ("/ui/models/fraud/versions/0", 422, "version must be between 1 and"),
        ("/ui/datasets/fraud-train/1.5", 404, "a version is a whole number"),
        ("/ui/models/no-such-model", 404, "no model 'no-such-model'"),
        ("/ui/models?tag=team", 422, "a tag filter is key=value"),
        ("/ui/models?page=not-a-token", 422, "page_token is not valid"),
    ],
)
def test_bad_versions_get_an_html_page_saying_what_is_wrong(
    ui_server: ServeProcess, path: str, status: int, message: str
) -> None:
    answer = httpx.get(f"{ui_server.url}{path}")
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert message in answer.text.replace("&#39;", "'")


def test_bad_version_in_the_browser(page: Any) -> None:
    answer = page.goto("/ui/models/fraud/versions/abc")
    assert answer.status == 404
    assert page.get_by_role("alert").inner_text().startswith("model 'fraud' has no version 'abc'")


def test_datasets_list_links_each_version(page: Any) -> None:
    page.goto("/ui/models")
    page.get_by_role("link", name="Datasets").click()
    page.wait_for_url("**/ui/datasets")
    page.get_by_label("Search dataset names").fill("fraud-te")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("link", name="fraud-train v1").count() == 0
    page.get_by_role("link", name="fraud-test v1").click()
    page.wait_for_url("**/ui/datasets/fraud-test/1")
    trained = page.get_by_role("region", name="Model versions trained or evaluated on it")
    assert "as test" in trained.inner_text()


def test_phone_width_pages_fit_the_screen(
    browser: Any, ui_server: ServeProcess, paged: str
) -> None:
    context = browser.new_context(base_url=ui_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        for path in (
            "/ui/models",
            f"/ui/models/{paged}",
            "/ui/models/fraud/versions/1",
            "/ui/datasets/fraud-train/1",
        ):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], path
    finally:
        context.close()


def test_the_dataset_pages_its_two_lists_each_by_its_own_token(ui_server: ServeProcess) -> None:
    base = f"{ui_server.url}/ui/datasets/fraud-train/1"
    for parameter in ("runs_page", "versions_page"):
        answer = httpx.get(base, params={parameter: "not-a-token"})
        assert answer.status_code == 422, parameter  # read under its own name
    assert httpx.get(base, params={"page": "not-a-token"}).status_code == 200  # not theirs
