"""The audit log page: search, pages of older records, a record's before and after, and the
chain check, intact and tampered with."""

from __future__ import annotations

import html
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from modelyard.client import Client
from tests.serve_process import ServeProcess
from tests.ui.conftest import DESKTOP, PHONE, AuthServer, sign_in


def test_audit_finds_a_change_and_pages_back(page: Any, ui_client: Client) -> None:
    name = "ui-audit-churn"
    ui_client.registry.create_model(name, description="first")
    ui_client.registry.update_model(name, description="second")
    page.goto("/ui/audit")
    assert page.locator("tbody tr", has_text=name).count() == 2  # newest first: both on top

    page.get_by_label("Entity type").fill("model")
    page.get_by_label("Entity id").fill(name)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(f"**/ui/audit?*entity_id={name}*")
    rows = page.locator("table.audit > tbody > tr")
    assert rows.count() == 2
    assert [rows.nth(i).locator("td").nth(2).inner_text() for i in range(2)] == [
        "model.update",
        "model.create",
    ]
    newest = rows.first
    newest.locator("summary").click()  # a record opens to its before and after
    diff = newest.get_by_role("row", name=re.compile("^description"))
    assert diff.inner_text().split("\t")[1:] == ['"first"', '"second"']
    assert '"description": "second"' in newest.locator("pre").last.inner_text()

    page.goto(f"/ui/audit?entity_type=model&entity_id={name}&limit=1")
    assert rows.count() == 1 and "model.update" in rows.first.inner_text()
    page.get_by_role("link", name="Older records").click()
    page.wait_for_url("**before=*")
    assert rows.count() == 1 and "model.create" in rows.first.inner_text()
    assert page.get_by_role("link", name="Older records").count() == 0  # the first of it
    page.get_by_role("link", name="Newest").click()
    assert "model.update" in rows.first.inner_text()

    page.get_by_role("link", name="Clear").click()
    page.get_by_role("link", name="model.create").first.click()  # a cell filters by itself
    page.wait_for_url("**/ui/audit?action=model.create")
    assert page.get_by_label("Action").input_value() == "model.create"
    assert all(
        "model.create" in t for t in page.locator("table.audit > tbody > tr").all_inner_texts()
    )


def test_verify_shows_the_chain_intact(page: Any) -> None:
    page.goto("/ui/audit")
    newest = int(page.locator("table.audit > tbody > tr > th").first.inner_text())
    page.get_by_role("button", name="Verify the chain").click()
    page.wait_for_url("**/ui/audit/verify")
    verdict = page.get_by_role("status").filter(has_text="intact").inner_text()
    assert "verified" in verdict
    seen = int(re.search(r"verified up to record (\d+)", verdict).group(1))  # type: ignore[union-attr]
    assert seen >= newest  # more may have been written since the page was read


def test_times_and_pages_that_make_no_sense_are_a_400_not_a_500(ui_server: ServeProcess) -> None:
    for query, says in (
        ("since=yesterday", "'yesterday' is not a time"),
        ("until=2026-13-01T00:00", "is not a time"),
        ("before=abc", "before"),
        ("limit=0", "limit must be between 1"),
    ):
        answer = httpx.get(f"{ui_server.url}/ui/audit?{query}")
        assert 400 <= answer.status_code < 500, query
        assert says in html.unescape(answer.text), query
    within = httpx.get(f"{ui_server.url}/ui/audit?since=2000-01-01T00:00&until=2000-01-02T00:00Z")
    assert within.status_code == 200 and "No records match" in within.text


def test_the_page_fits_a_phone(browser: Any, ui_server: ServeProcess) -> None:
    context = browser.new_context(base_url=ui_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        page.goto("/ui/audit")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.get_by_role("button", name="Search").is_visible()
    finally:
        context.close()


def test_a_tampered_chain_is_shown_broken_at_its_record(browser: Any, tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "home")
    server.start()
    context = browser.new_context(base_url=server.url, viewport=DESKTOP)
    try:
        client = Client(server.url)
        for i in range(3):
            client.registry.create_model(f"tamper-{i}")
        db = sqlite3.connect(tmp_path / "home" / "modelyard.db")
        with db:
            changed = db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2").rowcount
        db.close()
        assert changed == 1
        page = context.new_page()
        page.goto("/ui/audit")
        page.get_by_role("button", name="Verify the chain").click()
        alert = page.get_by_role("alert").inner_text()
        assert "broken at record 2" in alert
        assert "altered" in alert
        assert "Records 1 to 1 verify" in page.inner_text("main")
        page.get_by_role("link", name="here in the log").click()
        assert "mallory" in page.locator("#seq-2").inner_text()
    finally:
        context.close()
        server.stop()


def test_verifying_takes_an_admin(browser: Any, auth_server: AuthServer) -> None:
    context = browser.new_context(base_url=auth_server.url, viewport=DESKTOP)
    try:
        page = context.new_page()
        sign_in(page, auth_server.tokens["carol"], "/ui/audit")
        assert page.locator("table.audit > tbody > tr").count() > 0  # reading is a viewer's
        assert page.get_by_role("button", name="Verify the chain").count() == 0
        assert "takes the admin role" in page.inner_text("main")
    finally:
        context.close()
    with httpx.Client(base_url=auth_server.url) as http:
        http.get("/ui/login")
        csrf = http.cookies["modelyard_csrf"]
        for user, status in (("carol", 403), ("bob", 403), ("admin", 200)):
            cookie = f"modelyard_session={auth_server.tokens[user]}; modelyard_csrf={csrf}"
            answer = http.post(
                "/ui/audit/verify", data={"csrf_token": csrf}, headers={"cookie": cookie}
            )
            assert answer.status_code == status, user
        assert "The chain is intact" in answer.text
