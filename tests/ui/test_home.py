"""The home page and the dashboard's frame, in a real browser."""

from __future__ import annotations

from typing import Any

import httpx

from tests.serve_process import ServeProcess
from tests.ui.conftest import PHONE


def test_home_lists_endpoints_and_links_every_page(page: Any) -> None:
    page.goto("/ui")  # the README's address: redirected to /ui/
    assert page.url.endswith("/ui/")
    row = page.get_by_role("row", name="fraud")
    assert "models:/fraud@champion" in row.inner_text()
    nav = page.get_by_role("navigation", name="Main")
    for label in (
        "Models",
        "Experiments",
        "Endpoints",
        "Monitoring",
        "Pipelines",
        "Approvals",
        "Audit",
    ):
        nav.get_by_role("link", name=label).click()
        assert page.locator("h1").first.is_visible(), label
        assert page.get_by_role("link", name=label).get_attribute("aria-current") == "page"
    page.get_by_role("link", name="modelyard", exact=True).click()
    page.get_by_role("link", name="fraud").first.click()
    assert page.url.endswith("/ui/endpoints/fraud")


def test_keyboard_reaches_content_first(page: Any) -> None:
    page.goto("/ui/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_phone_width_has_no_page_wide_scroll(browser: Any, ui_server: ServeProcess) -> None:
    context = browser.new_context(base_url=ui_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        page.goto("/ui/")
        # wide tables scroll inside their own box; the page itself fits the screen
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.get_by_role("link", name="Audit").is_visible()
    finally:
        context.close()


def test_unknown_page_is_a_404_page_not_json(ui_server: ServeProcess) -> None:
    answer = httpx.get(f"{ui_server.url}/ui/no-such-page")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "there is no page /ui/no-such-page" in answer.text


def test_forms_without_the_csrf_token_are_refused(ui_server: ServeProcess) -> None:
    with httpx.Client(base_url=ui_server.url) as http:
        http.get("/ui/")
        # the cookie is Secure (kept by browsers on loopback); httpx keeps it only for
        # https, so the test sends it by hand
        token = http.cookies["modelyard_csrf"]
        http.cookies.clear()
        cookie = {"cookie": f"modelyard_csrf={token}"}
        for data, headers in (
            ({}, cookie),  # no token in the form
            ({"csrf_token": "x" + token}, cookie),  # not the cookie's token
            ({"csrf_token": token}, {}),  # no cookie
        ):
            answer = http.post("/ui/logout", data=data, headers=headers)
            assert answer.status_code == 403
            assert "reload the page" in answer.text
        answer = http.post(
            "/ui/logout",
            data={"csrf_token": token},
            headers={**cookie, "origin": "http://evil.example"},
        )
        assert answer.status_code == 403
        assert "evil.example" in answer.text
        answer = http.post("/ui/logout", data={"csrf_token": token}, headers=cookie)
        assert answer.status_code == 303


def test_pages_may_not_be_framed_or_cached(ui_server: ServeProcess) -> None:
    answer = httpx.get(f"{ui_server.url}/ui/")
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"


def test_what_routing_refuses_under_ui_is_a_page_and_the_api_keeps_problem_json(
    ui_server: ServeProcess,
) -> None:
    with httpx.Client(base_url=ui_server.url) as http:
        wrong_method = http.post("/ui/models")  # before any CSRF check: no route takes it
        assert wrong_method.status_code == 405
        assert wrong_method.headers["content-type"].startswith("text/html")
        assert "open it as a page" in wrong_method.text
        missing = http.get("/ui/static/nope.css")
        assert missing.status_code == 404 and "there is no page" in missing.text
        api = http.get("/api/v1/nope")
        assert api.status_code == 404
        assert api.headers["content-type"] == "application/problem+json"
        assert http.get("/ui/audit/verify").status_code == 303  # the result's address
