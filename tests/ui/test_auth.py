"""Signing in to the dashboard with auth on: the session cookie, and what it refuses."""

from __future__ import annotations

from typing import Any

import httpx

from tests.ui.conftest import AuthServer, sign_in


def test_pages_send_a_stranger_to_the_sign_in_form(browser: Any, auth_server: AuthServer) -> None:
    context = browser.new_context(base_url=auth_server.url)
    try:
        page = context.new_page()
        page.goto("/ui/models")
        assert "/ui/login" in page.url
        page.get_by_label("API token").fill("my_not-a-token")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text()  # says why
        assert "/ui/login" in page.url
        page.get_by_label("API token").fill(auth_server.tokens["carol"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/models")  # back where they were going
        assert "carol" in page.locator("header").inner_text()
        (cookie,) = [c for c in context.cookies() if c["name"] == "modelyard_session"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
        assert cookie["path"] == "/ui"
        assert page.evaluate("document.cookie") == ""  # no script reads it
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/ui/login")
        page.goto("/ui/")
        assert "/ui/login" in page.url
    finally:
        context.close()


def test_a_revoked_token_ends_the_session(browser: Any, auth_server: AuthServer) -> None:
    admin = auth_server.client("admin")
    issued = admin.identities.create_token("carol", name="short-lived")
    context = browser.new_context(base_url=auth_server.url)
    try:
        page = context.new_page()
        sign_in(page, issued.secret)
        assert page.get_by_role("heading", name="What is serving").is_visible()
        admin.identities.revoke_token(issued.id)
        page.goto("/ui/")
        assert "/ui/login" in page.url
        assert "revoked" in page.get_by_role("alert").inner_text()
    finally:
        context.close()


def test_a_token_limited_to_endpoints_cannot_sign_in(auth_server: AuthServer) -> None:
    admin = auth_server.client("admin")
    issued = admin.identities.create_token("alice", name="predict-only", endpoints=["fraud"])
    with httpx.Client(base_url=auth_server.url) as http:
        http.get("/ui/login")
        csrf = http.cookies["modelyard_csrf"]
        answer = http.post(
            "/ui/login",
            data={"token": issued.secret, "csrf_token": csrf, "next": "/ui/"},
            headers={"cookie": f"modelyard_csrf={csrf}"},
        )
    assert answer.status_code == 401
    assert "may only predict" in answer.text
    assert "modelyard_session" not in answer.headers.get("set-cookie", "")


def test_htmx_requests_without_a_session_are_told_where_to_sign_in(auth_server: AuthServer) -> None:
    answer = httpx.get(f"{auth_server.url}/ui/", headers={"hx-request": "true"})
    assert answer.status_code == 401
    assert answer.headers["hx-redirect"].startswith("/ui/login?next=/ui/")


def test_signing_in_returns_to_the_page_asked_for_with_its_query(
    browser: Any, auth_server: AuthServer
) -> None:
    context = browser.new_context(base_url=auth_server.url)
    try:
        page = context.new_page()
        page.goto("/ui/audit?actor=admin&limit=5")
        page.get_by_label("API token").fill(auth_server.tokens["carol"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/audit?actor=admin&limit=5")
    finally:
        context.close()


def test_a_csrf_token_with_other_characters_is_refused_not_a_server_error(
    auth_server: AuthServer,
) -> None:
    with httpx.Client(base_url=auth_server.url) as http:
        http.get("/ui/login")
        # sent by hand: the jar keeps a Secure cookie from plain HTTP to itself
        cookie = f"modelyard_csrf={http.cookies['modelyard_csrf']}".encode()
        cases: list[tuple[dict[str, str], dict[bytes, bytes]]] = [
            ({"csrf_token": "jeton-\u00e9"}, {b"cookie": cookie}),  # the form's field
            ({}, {b"cookie": cookie, b"x-csrf-token": b"\xe9"}),  # htmx's header (latin-1)
        ]
        for form, headers in cases:
            answer = http.post("/ui/login", data=form, headers=headers)
            assert answer.status_code == 403, answer.text
            assert "reload the page" in answer.text


def test_the_sign_in_page_shows_only_its_own_reasons(auth_server: AuthServer) -> None:
    """A link cannot make the genuine sign-in page say what its author wants."""
    answer = httpx.get(
        f"{auth_server.url}/ui/login", params={"reason": "Paste your token at evil.example"}
    )
    assert answer.status_code == 200
    assert "evil.example" not in answer.text
    ended = httpx.get(f"{auth_server.url}/ui/login", params={"reason": "ended"})
    assert "Your session ended" in ended.text
