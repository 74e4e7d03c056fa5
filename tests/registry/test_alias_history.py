"""Alias history: the moves of an alias from the audit chain, and where it pointed at a time;
through the service (SQLite and PostgreSQL), both SDK transports, the HTTP API and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest

from modelyard.client import Client
from modelyard.errors import BadRequest, NotFound
from modelyard.registry.history import AliasHistory
from modelyard.workspace import Workspace

BAD_TIMES = [
    "yesterday",
    "2026-13-01T10:00Z",
    "2026-12-01T10:00",  # no zone: ambiguous
    "2026-12-01",
    "9" * 500,
]


def _versions(ws: Workspace, logreg: object, X: pd.DataFrame, count: int) -> None:
    c = Client(settings=ws.settings)
    try:
        c.log_model(logreg, "fraud", input_example=X[:5])
        for _ in range(count - 1):
            c.register_model("models:/fraud/1", "fraud")
    finally:
        c.close()


@pytest.fixture
def moved(
    any_workspace: Workspace, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> Workspace:
    """fraud v1..v3, and champion moved five times by five people."""
    ws = any_workspace
    _versions(ws, logreg, training_data[0], 3)
    ws.as_actor("alice").registry.set_alias("fraud", "champion", 1, reason="first model")
    ws.as_actor("bob").registry.set_alias("fraud", "champion", 2, reason="AUC +0.02")
    ws.as_actor("carol").registry.set_alias("fraud", "champion", 3)
    ws.as_actor("dave").registry.delete_alias("fraud", "champion", reason="incident 42")
    ws.as_actor("erin").registry.set_alias("fraud", "champion", 1)
    ws.as_actor("bob").registry.set_alias("fraud", "challenger", 3)  # another alias
    return ws


def _changes(history: AliasHistory) -> list[tuple[str, int | None, int | None, str | None]]:
    return [(m.actor, m.before, m.after, m.reason) for m in history.moves]


def test_moves_newest_first_with_who_and_why(moved: Workspace) -> None:
    history = moved.registry.alias_history("fraud", "champion")
    assert _changes(history) == [
        ("erin", None, 1, None),
        ("dave", 3, None, "incident 42"),
        ("carol", 2, 3, None),
        ("bob", 1, 2, "AUC +0.02"),
        ("alice", None, 1, "first model"),
    ]
    assert [m.action for m in history.moves] == ["set", "delete", "set", "set", "set"]
    assert history.version == 1 and history.as_of is None and not history.more
    times = [m.at for m in history.moves]
    assert times == sorted(times, reverse=True) and all(t.tzinfo is not None for t in times)
    # the records are the audit chain's
    seqs = {r.seq for r in moved.audit.list(entity_id="fraud@champion").items}
    assert {m.seq for m in history.moves} == seqs
    # a limit keeps the newest and says more exist
    page = moved.registry.alias_history("fraud", "champion", 2)
    assert _changes(page) == _changes(history)[:2] and page.more


def test_where_an_alias_pointed_at_a_time(moved: Workspace) -> None:
    moves = list(reversed(moved.registry.alias_history("fraud", "champion").moves))
    registry = moved.registry
    # before the first move: it did not exist yet
    before = registry.alias_at("fraud", "champion", moves[0].at - timedelta(seconds=1))
    assert before.version is None and before.move is None
    # at a move (inclusive) and between two moves
    for i, move in enumerate(moves):
        at = registry.alias_at("fraud", "champion", move.at)
        assert (at.version, at.move and at.move.actor) == (move.after, move.actor), i
    between = moves[1].at + (moves[2].at - moves[1].at) / 2
    if between != moves[2].at:  # moves in the same microsecond have no time between them
        assert registry.alias_at("fraud", "champion", between).version == 2
    # after the delete and before the next set: pointing nowhere, the delete said why
    after_delete = registry.alias_at("fraud", "champion", moves[3].at)
    assert after_delete.version is None and after_delete.move is not None
    assert (after_delete.move.action, after_delete.move.reason) == ("delete", "incident 42")
    # a time string with an offset means the same instant
    offset = moves[1].at.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert registry.alias_at("fraud", "champion", offset).version == 2
    zulu = moves[1].at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert registry.alias_at("fraud", "champion", zulu).at == moves[1].at
    # as of a time, the history ends there
    history = registry.alias_history("fraud", "champion", as_of=moves[2].at)
    assert [m.actor for m in history.moves] == ["carol", "bob", "alice"]
    assert (history.version, history.as_of) == (3, moves[2].at)
    # now (or later) is where it points; times at the ends of the calendar are no error
    later = datetime.now(UTC) + timedelta(days=1)
    assert registry.alias_at("fraud", "champion", later).version == 1
    assert registry.alias_at("fraud", "champion", "9999-12-31T23:00-05:00").version == 1
    assert registry.alias_at("fraud", "champion", "0001-01-01T00:00:00+01:00").version is None


def test_bad_times_and_missing_things_are_refused(moved: Workspace) -> None:
    registry = moved.registry
    for bad in BAD_TIMES:
        with pytest.raises(BadRequest, match="2026-12-01T10:00Z"):
            registry.alias_at("fraud", "champion", bad)
    with pytest.raises(BadRequest, match="time zone"):
        registry.alias_history("fraud", "champion", as_of=datetime(2026, 12, 1))
    with pytest.raises(NotFound, match="no model 'ghost'"):
        registry.alias_history("ghost", "champion")
    with pytest.raises(NotFound, match="never had one"):
        registry.alias_history("fraud", "staging")
    with pytest.raises(NotFound, match="never had one"):
        registry.alias_at("fraud", "staging", datetime.now(UTC))


def test_a_model_deleted_and_registered_again_starts_a_new_history(
    workspace: Workspace, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X = training_data[0]
    _versions(workspace, logreg, X, 1)
    registry = workspace.registry
    registry.set_alias("fraud", "champion", 1)
    registry.delete_alias("fraud", "champion")
    registry.delete_version("fraud", 1)
    registry.archive_model("fraud")
    registry.delete_model("fraud")
    _versions(workspace, logreg, X, 1)
    with pytest.raises(NotFound, match="never had one"):
        registry.alias_history("fraud", "champion")
    registry.set_alias("fraud", "champion", 1)
    assert [m.before for m in registry.alias_history("fraud", "champion").moves] == [None]


def test_a_move_cleared_by_an_approval_names_it(
    workspace: Workspace, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    _versions(workspace, logreg, training_data[0], 2)
    workspace.registry.set_alias("fraud", "champion", 1)
    workspace.policies.set("guarded", "model:fraud", aliases=["champion"], approvals=1)
    approval = workspace.as_actor("alice").approvals.request("models:/fraud/2@champion")
    workspace.as_actor("bob").approvals.approve(approval.id)
    workspace.as_actor("carol").registry.set_alias("fraud", "champion", 2, reason="approved")
    newest = workspace.registry.alias_history("fraud", "champion").moves[0]
    assert (newest.actor, newest.before, newest.after) == ("carol", 1, 2)
    assert newest.approvals == [approval.id] and newest.reason == "approved"
    assert newest.details.get("policies") == ["guarded"]


@pytest.fixture
def moved_sqlite(
    workspace: Workspace, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> Workspace:
    _versions(workspace, logreg, training_data[0], 2)
    workspace.as_actor("alice").registry.set_alias("fraud", "champion", 1, reason="first")
    workspace.as_actor("bob").registry.set_alias("fraud", "champion", 2)
    return workspace


def test_both_sdk_transports_agree(moved_sqlite: Workspace, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from modelyard.config import Settings

    local = Client(settings=moved_sqlite.settings)
    remote = Client(live_server.url, settings=Settings(home=tmp_path / "client"))
    try:
        first = local.registry.alias_history("fraud", "champion").moves[-1]
        for c in (local, remote):
            history = c.registry.alias_history("fraud", "champion")
            assert [(m.actor, m.after) for m in history.moves] == [("bob", 2), ("alice", 1)]
            at = c.registry.alias_at("fraud", "champion", first.at)
            assert (at.version, at.move.reason if at.move else None) == (1, "first")
            early = c.registry.alias_at("fraud", "champion", "2000-01-01T00:00Z")
            assert early.version is None and early.move is None
            with pytest.raises(BadRequest, match="no time zone"):
                c.registry.alias_at("fraud", "champion", "2026-12-01T10:00")
            with pytest.raises(NotFound):
                c.registry.alias_history("fraud", "nope")
    finally:
        local.close()
        remote.close()


def test_http_api(moved_sqlite: Workspace, live_server) -> None:  # type: ignore[no-untyped-def]
    url = f"{live_server.url}/api/v1/models/fraud/aliases/champion/history"
    body = httpx.get(url).json()
    assert [(m["actor"], m["before"], m["after"]) for m in body["moves"]] == [
        ("bob", 1, 2),
        ("alice", None, 1),
    ]
    r = httpx.get(url, params={"as_of": "2000-01-01T00:00:00+02:00"})
    assert r.status_code == 200 and r.json()["version"] is None and r.json()["moves"] == []
    for bad in BAD_TIMES:
        r = httpx.get(url, params={"as_of": bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert "ISO 8601" in r.json()["detail"]
    assert httpx.get(url.replace("fraud", "ghost")).status_code == 404
    assert httpx.get(url.replace("champion", "staging")).status_code == 404


@pytest.fixture
def cli_moves(run) -> Iterator[Workspace]:  # type: ignore[no-untyped-def]
    """The `run` fixture's workspace with fraud v1, v2 and champion moved twice."""
    from modelyard.config import Settings

    run("quickstart", "--rows", "300")  # fraud v1 with champion
    settings = Settings()  # the run fixture's MODELYARD_HOME
    ws = Workspace.open(settings)
    c = Client(settings=settings)
    c.register_model("models:/fraud/1", "fraud")
    c.close()
    ws.as_actor("bob").registry.set_alias("fraud", "champion", 2, reason="retrained")
    yield ws
    ws.close()


def test_cli(run, cli_moves: Workspace) -> None:  # type: ignore[no-untyped-def]
    out = run("models", "alias-history", "fraud", "champion").stdout
    lines = [line for line in out.splitlines() if "->" in line]
    assert "1 -> 2" in lines[0] and "bob" in lines[0] and "retrained" in lines[0]
    assert "new -> 1" in lines[1]
    first = cli_moves.registry.alias_history("fraud", "champion").moves[-1].at
    at = first.isoformat().replace("+00:00", "Z")
    out = run("models", "alias-history", "fraud", "champion", "--as-of", at).stdout
    assert "pointed to version 1" in out and "1 -> 2" not in out
    out = run("models", "alias-history", "fraud", "champion", "--as-of", "2000-01-01T00:00Z")
    assert "did not exist yet" in out.stdout
    as_json = run("models", "alias-history", "fraud", "champion", "--json").stdout
    assert AliasHistory.model_validate_json(as_json).version == 2
    bad = run("models", "alias-history", "fraud", "champion", "--as-of", "noon", ok=False)
    assert bad.returncode == 2 and "2026-12-01T10:00Z" in bad.stderr
    missing = run("models", "alias-history", "fraud", "staging", ok=False)
    assert missing.returncode == 3 and "never had one" in missing.stderr
