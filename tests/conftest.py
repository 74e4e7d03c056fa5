"""Shared fixtures: a fresh workspace on SQLite and on the machine's PostgreSQL server."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from modelyard.config import Settings
from modelyard.workspace import Workspace

PG_ADMIN_URL = os.environ.get(
    "MODELYARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


class PostgresDatabases:
    """Creates throwaway databases from one migrated template, dropped after each test."""

    def __init__(self) -> None:
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.template = f"modelyard_tmpl_{uuid.uuid4().hex[:8]}"
        self._execute(f'CREATE DATABASE "{self.template}"')
        from modelyard.store import Store

        store = Store(self.url(self.template))
        store.migrate()
        store.dispose()

    def url(self, name: str) -> str:
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def _execute(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(sql))

    def create(self) -> str:
        name = f"modelyard_t_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.drop(self.template)
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases]:
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; .ci/run starts it")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    dbs = PostgresDatabases()
    yield dbs
    dbs.close()


@pytest.fixture
def pg_url(pg_databases: PostgresDatabases) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database."""
    name = pg_databases.create()
    yield pg_databases.url(name)
    pg_databases.drop(name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a local SQLite workspace in a temporary directory."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
def workspace(settings: Settings) -> Iterator[Workspace]:
    """A migrated workspace on SQLite."""
    ws = Workspace.open(settings)
    yield ws
    ws.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """A migrated workspace, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        settings = Settings(home=tmp_path / "home")
    else:
        url = request.getfixturevalue("pg_url")
        settings = Settings(home=tmp_path / "home", database_url=url)
    ws = Workspace.open(settings)
    yield ws
    ws.close()


class LiveServer:
    """A real uvicorn server on 127.0.0.1 serving ``app`` from a background thread.

    ``options`` go to ``uvicorn.Config`` (``http=GatewayHttpProtocol`` for a gateway).
    """

    def __init__(self, app: object, **options: object) -> None:
        import socket
        import threading

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        options = {"log_level": "warning", "lifespan": "on", **options}
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        import time

        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(workspace: Workspace) -> Iterator[LiveServer]:
    """The control-plane API over ``workspace``, on a real port."""
    from modelyard.api.app import create_app

    server = LiveServer(create_app(workspace=workspace))
    yield server
    server.stop()


@pytest.fixture(params=["local", "http"])
def client(request: pytest.FixtureRequest, workspace: Workspace, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The SDK, once in-process and once over HTTP to a live server, on the same workspace."""
    from modelyard.client import Client

    if request.param == "local":
        c = Client(str(workspace.settings.resolved_home), settings=workspace.settings)
    else:
        server = request.getfixturevalue("live_server")
        c = Client(server.url, settings=Settings(home=tmp_path / "client-home"))
    yield c
    c.close()


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `modelyard ARGS` through the real entry point, in this process (fast), with its own
    home in a temporary directory."""
    from modelyard.cli.main import main

    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("MODELYARD_URI", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, ok: bool = True) -> Result:
        monkeypatch.setattr(sys, "argv", ["modelyard", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        if ok:
            assert code == 0, err
        return Result(code, out, err)

    return run
