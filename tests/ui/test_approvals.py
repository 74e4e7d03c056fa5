"""Approvals in the dashboard with auth on: an approver approves, the requester moves the
alias, and nobody else gets a decision through, whatever they send."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelyard.errors import Forbidden
from modelyard.governance.approvals import Approval
from tests.ui.conftest import DESKTOP, PHONE, AuthServer, sign_in


def protected_model(auth_server: AuthServer, name: str) -> None:
    """``name`` with v1 as champion and a v2, then a policy: moving champion takes a deployer
    and one approval (the policy's defaults)."""
    admin = auth_server.client("admin")
    x = np.random.default_rng(7).normal(size=(30, 2))
    model = LogisticRegression().fit(x, x[:, 0] > 0)
    admin.log_model(model, name, input_example=x[:3], alias="champion")
    admin.log_model(model, name, input_example=x[:3])
    admin.policies.set(f"{name}-prod", f"model:{name}")


@contextmanager
def signed_in(browser: Any, auth_server: AuthServer, user: str, path: str) -> Iterator[Any]:
    """A page of a new browser context, signed in as ``user``, on ``path``."""
    context = browser.new_context(base_url=auth_server.url, viewport=DESKTOP)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, auth_server.tokens[user], path)
        yield page
    finally:
        context.close()


def forge(auth_server: AuthServer, user: str, path: str, data: dict[str, str]) -> httpx.Response:
    """POST ``data`` to ``path`` as ``user``'s browser would, with a valid CSRF token: only
    the server's own checks stand in the way."""
    with httpx.Client(base_url=auth_server.url) as http:
        http.get("/ui/login")
        csrf = http.cookies["modelyard_csrf"]
        session = auth_server.tokens[user]
        # the cookies are Secure: httpx sends them over https only, so by hand here
        cookie = f"modelyard_session={session}; modelyard_csrf={csrf}"
        return http.post(path, data={**data, "csrf_token": csrf}, headers={"cookie": cookie})


def test_an_approver_approves_and_the_requester_completes_the_move(
    browser: Any, auth_server: AuthServer
) -> None:
    name = "ui-approve-move"
    protected_model(auth_server, name)
    dave = auth_server.client("dave")
    with pytest.raises(Forbidden, match="needs 1 approval"):
        dave.registry.set_alias(name, "champion", 2)  # the policy holds
    request = dave.approvals.request(f"models:/{name}/2@champion", {"reason": "better recall"})

    with signed_in(browser, auth_server, "bob", "/ui/approvals") as page:
        pending = page.get_by_role("table", name="Pending approval requests, newest first")
        row = pending.get_by_role("row", name=f"models:/{name}/2@champion")
        assert "dave" in row.inner_text()
        assert "0 of 1" in row.inner_text()
        assert "better recall" in row.inner_text()
        row.get_by_role("link", name=f"models:/{name}/2@champion").click()
        page.wait_for_url(f"**/ui/approvals/{request.id}")
        assert "points at v1" in page.locator("#alias-now").inner_text()
        page.get_by_label("Note").fill("holdout looks fine")
        page.get_by_role("button", name="Approve").click()
        page.wait_for_url(f"**/ui/approvals/{request.id}")
        facts = page.get_by_role("region", name="Request").inner_text()
        assert "approved" in facts and "holdout looks fine" in facts
        # the approval clears the move; it does not make it, and bob (no write) cannot
        assert "clears one move" in page.inner_text("main")
        assert page.get_by_role("button", name="Move @champion to v2").count() == 0
        # the reason is the server's own, as the move would be refused
        assert "does not hold role deployer" in page.inner_text("main")
        assert page.get_by_role("button", name="Approve").count() == 0
        history = page.get_by_role("region", name="History").inner_text()
        assert "approval.approve" in history and "bob" in history
    assert dave.registry.get_alias(name, "champion").version == 1

    with signed_in(browser, auth_server, "dave", f"/ui/approvals/{request.id}") as page:
        page.get_by_label("Reason").fill("approved by bob")
        page.get_by_role("button", name="Move @champion to v2").click()
        page.wait_for_url(f"**/ui/approvals/{request.id}")
        assert "points at v2" in page.locator("#alias-now").inner_text()
        assert "cleared the move, made by dave" in page.inner_text("main")
        assert page.get_by_role("button", name=re.compile("^Move")).count() == 0
        link = page.get_by_role("link", name="See the model")
        assert link.get_attribute("href") == f"/ui/models/{name}"
    assert dave.registry.get_alias(name, "champion").version == 2
    history = dave.registry.alias_history(name, "champion", 1)
    assert history.moves[0].approvals == [request.id]
    assert history.moves[0].reason == "approved by bob"


def test_a_viewer_is_offered_no_decision_and_a_forged_one_is_refused(
    browser: Any, auth_server: AuthServer
) -> None:
    name = "ui-approve-viewer"
    protected_model(auth_server, name)
    request = auth_server.client("dave").approvals.request(f"models:/{name}/2@champion")
    with signed_in(browser, auth_server, "carol", f"/ui/approvals/{request.id}") as page:
        assert page.get_by_role("heading", name=f"Approval of models:/{name}/2@champion").count()
        assert page.get_by_role("button", name="Approve").count() == 0
        assert page.get_by_role("button", name="Reject").count() == 0
        assert "takes the approve permission" in page.inner_text("main")
    for action in ("approve", "reject"):
        answer = forge(auth_server, "carol", f"/ui/approvals/{request.id}/{action}", {"note": ""})
        assert answer.status_code == 403, answer.text
        assert "approve permission" in answer.text
    answer = forge(auth_server, "carol", f"/ui/approvals/{request.id}/move", {})
    assert answer.status_code == 403
    still = auth_server.client("admin").approvals.get(request.id)
    assert (still.status, still.approved_by) == ("pending", [])


def test_the_requester_may_not_approve_their_own_request(
    browser: Any, auth_server: AuthServer
) -> None:
    name = "ui-approve-own"
    protected_model(auth_server, name)
    # the admin holds the approve permission: only the four-eyes rule stops them
    request = auth_server.client("admin").approvals.request(f"models:/{name}/2@champion")
    with signed_in(browser, auth_server, "admin", f"/ui/approvals/{request.id}") as page:
        assert page.get_by_role("button", name="Approve").count() == 0
        assert page.get_by_role("button", name="Withdraw").is_visible()
        assert "another person must approve it (four eyes)" in page.inner_text("main")
    answer = forge(auth_server, "admin", f"/ui/approvals/{request.id}/approve", {"note": "me"})
    assert answer.status_code == 403
    assert "four-eyes" in answer.text
    still: Approval = auth_server.client("admin").approvals.get(request.id)
    assert (still.status, still.approved_by) == ("pending", [])
    # a deployer's request: dave holds no approve permission at all
    other = auth_server.client("dave").approvals.request(f"models:/{name}/1@champion")
    answer = forge(auth_server, "dave", f"/ui/approvals/{other.id}/approve", {})
    assert answer.status_code == 403
    assert auth_server.client("admin").approvals.get(other.id).status == "pending"


def test_the_list_filters_by_status_and_shows_more(browser: Any, auth_server: AuthServer) -> None:
    name = "ui-approve-list"
    protected_model(auth_server, name)
    dave = auth_server.client("dave")
    first = dave.approvals.request(f"models:/{name}/1@champion")
    second = dave.approvals.request(f"models:/{name}/2@champion")
    dave.approvals.request(f"models:/{name}/2@staging")
    auth_server.client("bob").approvals.reject(first.id, note="not this one")
    with signed_in(browser, auth_server, "carol", "/ui/approvals") as page:
        page.goto("/ui/approvals?status=rejected")
        decided = page.get_by_role("table", name="Decided approval requests, newest first")
        row = decided.get_by_role("row", name=f"models:/{name}/1@champion")
        assert "rejected" in row.inner_text() and "bob" in row.inner_text()
        assert decided.get_by_role("row", name=f"models:/{name}/2@champion").count() == 0
        assert page.get_by_role("table", name=re.compile("Pending")).count() == 0
        page.get_by_label("Status").select_option("pending")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**/ui/approvals?status=pending")
        pending = page.get_by_role("table", name=re.compile("Pending"))
        assert pending.get_by_role("row", name=f"models:/{name}/2@champion").count() == 1
        page.goto("/ui/approvals?limit=1")
        assert (
            page.get_by_role("table", name=re.compile("Pending")).locator("tbody tr").count() == 1
        )
        page.get_by_role("link", name="Show more").click()
        page.wait_for_url("**/ui/approvals?status=&limit=2")
        assert f"/ui/approvals/{second.id}" in page.content()
        page.goto("/ui/approvals?status=bogus")
        assert "status must be one of pending, approved, rejected" in page.inner_text("main")
    with httpx.Client(base_url=auth_server.url) as http:
        cookie = {"cookie": f"modelyard_session={auth_server.tokens['carol']}"}
        assert http.get("/ui/approvals?status=bogus", headers=cookie).status_code == 422
        assert http.get("/ui/approvals/no-such-id", headers=cookie).status_code == 404


def test_a_request_of_no_alias_move_has_nothing_to_move(
    browser: Any, auth_server: AuthServer
) -> None:
    request = auth_server.client("alice").approvals.request("release:ui-approvals-4.2")
    auth_server.client("bob").approvals.approve(request.id)
    context = browser.new_context(base_url=auth_server.url, viewport=PHONE)
    try:
        page = context.new_page()
        sign_in(page, auth_server.tokens["alice"], f"/ui/approvals/{request.id}")
        assert "approved" in page.get_by_role("region", name="Request").inner_text()
        assert page.get_by_role("region", name="The move it clears").count() == 0
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.goto("/ui/approvals")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()
    answer = forge(auth_server, "alice", f"/ui/approvals/{request.id}/move", {})
    assert answer.status_code == 422
    assert "not of an alias move" in answer.text
