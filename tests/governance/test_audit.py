"""The hash-chained audit log: every registry change is recorded, and tampering is found."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from modelyard.artifacts import digest_of_file
from modelyard.formats import MANIFEST_NAME
from modelyard.governance.audit import record_hash
from modelyard.store.tables import AuditRow
from modelyard.workspace import Workspace


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from modelyard.formats import save_model

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 3))
    y = (x[:, 2] > 0).astype(np.int64)
    path = tmp_path_factory.mktemp("audit") / "model"
    save_model(LogisticRegression().fit(x, y), path, input_example=x[:3])
    return path


def _upload(ws: Workspace, model_dir: Path) -> str:
    for p in model_dir.rglob("*"):
        if p.is_file():
            ws.artifacts.put_file(p)
    return digest_of_file(model_dir / MANIFEST_NAME)


def _history(ws: Workspace) -> list:
    return list(reversed(ws.audit.list(limit=1000).items))


def _make_changes(ws: Workspace, model_dir: Path) -> None:
    alice = ws.as_actor("alice")
    bob = ws.as_actor("bob")
    digest = _upload(ws, model_dir)
    alice.registry.create_model("churn", description="first")
    alice.registry.update_model("churn", description="second", tags={"team": "risk"})
    bob.registry.create_version("churn", digest)
    bob.registry.create_version("churn", digest)
    alice.registry.set_alias("churn", "champion", 1)
    alice.registry.set_alias("churn", "champion", 2)
    bob.registry.delete_alias("churn", "champion")
    alice.registry.archive_model("churn")


def test_every_registry_change_is_audited(any_workspace: Workspace, model_dir: Path) -> None:
    ws = any_workspace
    _make_changes(ws, model_dir)
    records = _history(ws)
    summary = [(r.seq, r.actor, r.action, r.entity_id) for r in records]
    assert summary == [
        (1, "alice", "model.create", "churn"),
        (2, "alice", "model.update", "churn"),
        (3, "bob", "version.create", "churn/1"),
        (4, "bob", "version.create", "churn/2"),
        (5, "alice", "alias.set", "churn@champion"),
        (6, "alice", "alias.set", "churn@champion"),
        (7, "bob", "alias.delete", "churn@champion"),
        (8, "alice", "model.archive", "churn"),
    ]
    by_seq = {r.seq: r for r in records}
    assert by_seq[1].before is None and by_seq[1].after["description"] == "first"
    assert by_seq[2].before["description"] == "first"
    assert by_seq[2].after["description"] == "second"
    assert by_seq[2].after["tags"] == {"team": "risk"}
    assert by_seq[3].after["manifest_digest"] == digest_of_file(model_dir / MANIFEST_NAME)
    assert by_seq[5].before is None and by_seq[5].after == {"version": 1}
    assert by_seq[6].before == {"version": 1} and by_seq[6].after == {"version": 2}
    assert by_seq[7].before == {"version": 2} and by_seq[7].after is None
    assert by_seq[8].before == {"archived": False} and by_seq[8].after == {"archived": True}
    assert len({r.hash for r in records}) == len(records)
    assert all(r.at.tzinfo is not None for r in records)
    # Filters.
    assert [r.seq for r in ws.audit.list(actor="bob").items] == [7, 4, 3]
    assert [r.seq for r in ws.audit.list(action="alias.set").items] == [6, 5]
    assert [r.seq for r in ws.audit.list(before_seq=4, limit=2).items] == [3, 2]
    assert ws.audit.list(before_seq=4, limit=2).next_page_token is not None
    assert [r.seq for r in ws.audit.list(actor="bob", before_seq=4).items] == [3]
    at = by_seq[4].at
    assert {r.seq for r in ws.audit.list(since=at, until=at).items} == {
        r.seq for r in records if r.at == at
    }
    assert ws.audit.list(until=by_seq[1].at - timedelta(seconds=1)).items == []
    result = ws.audit.verify()
    assert result.ok, result.reason
    assert result.records == 8
    assert result.head == records[-1].hash


def test_failed_change_leaves_no_audit_record(any_workspace: Workspace) -> None:
    from modelyard.errors import AlreadyExists

    ws = any_workspace
    ws.registry.create_model("m")
    with pytest.raises(AlreadyExists):
        ws.registry.create_model("m")
    assert [r.action for r in _history(ws)] == ["model.create"]
    assert ws.audit.verify().ok


def _seed(ws: Workspace) -> None:
    for i in range(5):
        ws.registry.create_model(f"m{i}", description=f"d{i}")
    assert ws.audit.verify().ok


def test_altered_record_is_named(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    with ws.store.engine.begin() as conn:
        conn.execute(
            update(AuditRow).where(AuditRow.seq == 3).values(after={"description": "forged"})
        )
    result = ws.audit.verify()
    assert not result.ok
    assert result.broken_at == 3
    assert "altered" in result.reason and "3" in result.reason
    assert result.records == 2


def test_altered_actor_is_named(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    with ws.store.engine.begin() as conn:
        conn.execute(update(AuditRow).where(AuditRow.seq == 5).values(actor="mallory"))
    result = ws.audit.verify()
    assert (result.ok, result.broken_at) == (False, 5)
    assert "altered" in result.reason


def test_deleted_middle_record_is_missing(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    with ws.store.engine.begin() as conn:
        conn.execute(delete(AuditRow).where(AuditRow.seq == 3))
    result = ws.audit.verify()
    assert not result.ok
    assert result.broken_at == 3
    assert "missing" in result.reason


def test_rewritten_record_with_recomputed_hash_breaks_the_next_link(
    any_workspace: Workspace,
) -> None:
    ws = any_workspace
    _seed(ws)
    with ws.store.read() as s:
        row = s.scalars(select(AuditRow).where(AuditRow.seq == 2)).one()
    row.after = {"description": "rewritten"}
    forged = record_hash(row)
    with ws.store.engine.begin() as conn:
        conn.execute(
            update(AuditRow)
            .where(AuditRow.seq == 2)
            .values(after={"description": "rewritten"}, hash=forged)
        )
    result = ws.audit.verify()
    assert not result.ok
    assert result.broken_at == 3
    assert "link" in result.reason
    assert result.records == 2


def test_deleting_the_newest_records_or_all_of_them_is_caught_by_the_head(
    any_workspace: Workspace,
) -> None:
    """The chain alone stays valid without its tail; the head row says how long it was."""
    ws = any_workspace
    _seed(ws)
    with ws.store.engine.begin() as conn:
        conn.execute(delete(AuditRow).where(AuditRow.seq >= 4))
    result = ws.audit.verify()
    assert (result.ok, result.records, result.broken_at) == (False, 3, 4)
    assert "records 4 to 5 are missing" in result.reason
    with ws.store.engine.begin() as conn:
        conn.execute(delete(AuditRow))
    result = ws.audit.verify()
    assert (result.ok, result.records, result.broken_at) == (False, 0, 1)
    assert "missing" in result.reason


def test_a_forged_newest_record_that_links_correctly_is_caught_by_the_head(
    any_workspace: Workspace,
) -> None:
    ws = any_workspace
    _seed(ws)
    with ws.store.read() as s:
        row = s.scalars(select(AuditRow).where(AuditRow.seq == 5)).one()
    row.actor = "mallory"
    forged = record_hash(row)  # links to record 4 and hashes right: only the head knows
    with ws.store.engine.begin() as conn:
        conn.execute(update(AuditRow).where(AuditRow.seq == 5).values(actor="mallory", hash=forged))
    result = ws.audit.verify()
    assert (result.ok, result.broken_at) == (False, 5)
    assert "replaced" in result.reason


def test_one_change_may_carry_thousands_of_records(any_workspace: Workspace) -> None:
    # 7,000 records x 11 columns is past PostgreSQL's 65,535 bind parameters per statement.
    with any_workspace.store.write("bulk") as tx:
        for i in range(7000):
            tx.record("feedback.replace", "feedback", f"ep/r{i}/0", {"label": 0}, {"label": 1})
    report = any_workspace.audit.verify()
    assert report.ok and report.records == 7000
