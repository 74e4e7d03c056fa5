"""A real `modelyard serve` with real data, and Debian's chromium driven by Playwright.

The browser is /usr/bin/chromium (apt's package; `.ci/run` installs it when missing), never a
browser Playwright downloads. One server and one browser serve every test of a module set;
each test gets its own browser context (cookies) and page.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.workspace import Workspace
from tests.serve_process import ServeProcess

CHROMIUM = "/usr/bin/chromium"
#: What Chromium needs here: no sandbox as root, and none of its calls to Google's hosts,
#: which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (bash .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def quickstart(home: Path) -> None:
    """`modelyard quickstart` into ``home``: models:/fraud/1 with its run and dataset."""
    subprocess.run(
        [sys.executable, "-m", "modelyard", "quickstart", "--data-dir", str(home / "data")],
        env={**os.environ, "MODELYARD_HOME": str(home), "NO_COLOR": "1"},
        check=True,
        capture_output=True,
        cwd=home,
    )


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`modelyard serve` (auth off) over the quickstart's model, an endpoint ``fraud``
    following ``champion``. Tests add what else they need through :func:`ui_client`."""
    home = tmp_path_factory.mktemp("ui") / "home"
    home.mkdir()
    quickstart(home)
    server = ServeProcess(home, env={"MODELYARD_MONITOR_INTERVAL_SECONDS": "1"})
    server.start()
    Client(server.url).endpoints.create("fraud", "models:/fraud@champion")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ui_client(ui_server: ServeProcess) -> Client:
    return Client(ui_server.url)


@pytest.fixture
def page(browser: Any, ui_server: ServeProcess) -> Iterator[Any]:
    """A new browser context (no cookies) at 1280 px, its base URL the server."""
    context = browser.new_context(base_url=ui_server.url, viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: _console_error(message, errors))
    yield page
    context.close()
    assert not errors, f"errors in the browser's console: {errors}"


def _console_error(message: Any, errors: list[str]) -> None:
    """Keep the console's errors (scripts, blocked by the CSP), not the HTTP statuses a test
    asks for on purpose (a 404 page)."""
    if message.type == "error" and "Failed to load resource" not in message.text:
        errors.append(message.text)


@dataclass
class AuthServer:
    """A `modelyard serve` with auth on, and a token per user: ``tokens[name]``.

    Users: ``admin`` (admin), ``alice`` (editor), ``dave`` (deployer), ``bob`` (approver),
    ``carol`` (viewer).
    """

    server: ServeProcess
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, user: str) -> Client:
        return Client(self.server.url, token=self.tokens[user])


USERS = {
    "admin": "admin",
    "alice": "editor",
    "dave": "deployer",
    "bob": "approver",
    "carol": "viewer",
}


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """`modelyard serve` with ``MODELYARD_AUTH=true`` over the quickstart's model (made
    before auth was on, as the local user) and an endpoint ``fraud``."""
    home = tmp_path_factory.mktemp("ui-auth") / "home"
    home.mkdir()
    quickstart(home)
    env = {"MODELYARD_AUTH": "true", "MODELYARD_MONITOR_INTERVAL_SECONDS": "1"}
    ws = Workspace.open(Settings(home=home, auth=True))
    try:
        tokens = {}
        for name, role in USERS.items():
            ws.identities.create_user(name, role)
            tokens[name] = ws.identities.create_token(name).secret
    finally:
        ws.close()
    server = ServeProcess(home, env=env)
    server.start()
    Client(server.url, token=tokens["admin"]).endpoints.create("fraud", "models:/fraud@champion")
    yield AuthServer(server, tokens)
    server.stop()


def sign_in(page: Any, token: str, path: str = "/ui/") -> None:
    """Sign in through the form, as a user would; ends on ``path``."""
    page.goto(path)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{path}")
