"""Page routes: whatever goes wrong, the browser gets an HTML page, never a trace."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from modelyard.errors import Conflict
from modelyard.ui.routing import PREFIX, page_router
from modelyard.workspace import Workspace
from tests.conftest import LiveServer


@pytest.fixture
def pages() -> Iterator[httpx.Client]:
    """Two page routes on a real server: one with a bug, one refusing the user's input."""
    router = page_router()

    @router.get("/bug")
    def bug() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    @router.get("/conflict")
    def conflict() -> None:
        raise Conflict("alert 1 was resolved already")

    app = FastAPI()
    app.include_router(router, prefix=PREFIX)
    server = LiveServer(app)
    with httpx.Client(base_url=server.url) as http:
        yield http
    server.stop()


def test_a_bug_is_a_500_page_with_an_incident_and_no_trace(
    pages: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="modelyard.ui"):
        answer = pages.get("/ui/bug")
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("text/html")
    assert "secret internals" not in answer.text and "Traceback" not in answer.text
    [record] = [r for r in caplog.records if r.name == "modelyard.ui"]
    incident = record.args[1]  # type: ignore[index]
    assert f"incident {incident}" in answer.text
    assert record.exc_info is not None  # the trace is in the log


def test_an_error_of_the_user_keeps_its_status_and_message(pages: httpx.Client) -> None:
    answer = pages.get("/ui/conflict")
    assert answer.status_code == 409 and "alert 1 was resolved already" in answer.text
    fragment = pages.get("/ui/conflict", headers={"hx-request": "true"})
    assert fragment.headers["hx-retarget"] == "#flash"
    assert "<html" not in fragment.text  # a fragment for the status area


def test_building_the_app_again_adds_nothing_to_it(workspace: Workspace) -> None:
    """Each app gets its own dashboard router: built many times in one process (as the
    tests do), the routes and the lifespans it merges must not pile up."""
    from fastapi.routing import iter_route_contexts

    from modelyard.api.app import create_app

    counts = {
        len(list(iter_route_contexts(create_app(workspace=workspace).routes))) for _ in range(3)
    }
    assert len(counts) == 1
    server = LiveServer(create_app(workspace=workspace))  # starts: its lifespan runs
    try:
        assert httpx.get(f"{server.url}/ui/").status_code == 200
    finally:
        server.stop()
