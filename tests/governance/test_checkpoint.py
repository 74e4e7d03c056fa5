"""Signed audit checkpoints: what the chain cannot tell on its own, a checkpoint kept
elsewhere can (newest records deleted with the head moved back, the head row deleted,
everything deleted, the chain rewritten)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select, update

from modelyard.errors import Conflict, InvalidInput
from modelyard.governance.audit import GENESIS, Checkpoint, read_checkpoint, record_hash
from modelyard.store.tables import AuditHeadRow, AuditRow
from modelyard.workspace import Workspace


def _seed(ws: Workspace, models: int = 6) -> None:
    """A key (record 1) and ``models`` models (records 2...)."""
    ws.signing.create_key(name="audit")
    for i in range(models):
        ws.registry.create_model(f"m{i}", description=f"d{i}")


def _truncate(ws: Workspace, keep: int, *, move_head: bool) -> None:
    """Delete the records after ``keep``; ``move_head``: as a careful intruder, also set the
    head row back to the new end so that the chain alone looks whole."""
    with ws.store.read() as s:
        last = s.scalar(select(AuditRow.hash).where(AuditRow.seq == keep)) if keep else GENESIS
    with ws.store.engine.begin() as conn:
        conn.execute(delete(AuditRow).where(AuditRow.seq > keep))
        if move_head:
            conn.execute(update(AuditHeadRow).values(seq=keep, hash=last))


def test_a_checkpoint_of_an_intact_chain_verifies(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    key = ws.signing.list_keys()[0]
    assert (checkpoint.seq, checkpoint.key_id) == (7, key.id)
    assert checkpoint.at_text.endswith("Z") and checkpoint.at.tzinfo is not None
    ws.registry.create_model("later")  # the chain grows past the checkpoint: still fine
    result = ws.audit.verify(checkpoint)
    assert result.ok, result.reason
    assert result.records == 8
    assert "still holds its record" in result.checkpoint
    assert ws.audit.verify(checkpoint.model_dump(mode="json")).ok  # as parsed from its JSON


def test_deleted_newest_records_are_named_even_with_the_head_moved_back(
    any_workspace: Workspace,
) -> None:
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    _truncate(ws, 4, move_head=True)
    assert ws.audit.verify().ok  # the chain alone cannot tell
    result = ws.audit.verify(checkpoint)
    assert (result.ok, result.records, result.broken_at) == (False, 4, 5)
    assert result.reason == (
        f"the chain ends at record 4 but checkpoint {checkpoint.at_text} saw record 7: "
        "3 records were deleted"
    )
    assert "contradicted" in result.checkpoint


def test_deleted_newest_records_with_the_head_left_alone(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    _truncate(ws, 6, move_head=False)
    result = ws.audit.verify(checkpoint)
    assert (result.ok, result.broken_at) == (False, 7)
    assert result.reason.startswith(
        f"the chain ends at record 6 but checkpoint {checkpoint.at_text}"
    )
    assert "1 record was deleted" in result.reason
    assert "records 7 to 7 are missing" in result.reason  # what the head row says too


def test_a_deleted_head_row_is_named(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    with ws.store.engine.begin() as conn:
        conn.execute(delete(AuditHeadRow))
    result = ws.audit.verify()  # no checkpoint: still named, not a crash
    assert (result.ok, result.records) == (False, 7)
    assert "head row (audit_head) is missing" in result.reason
    result = ws.audit.verify(checkpoint)
    assert not result.ok
    assert "head row (audit_head) is missing" in result.reason
    assert "still holds its record" in result.checkpoint


def test_everything_deleted_is_named(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    with ws.store.engine.begin() as conn:
        conn.execute(delete(AuditRow))
        conn.execute(delete(AuditHeadRow))
    result = ws.audit.verify(checkpoint)
    assert (result.ok, result.records, result.broken_at) == (False, 0, 1)
    assert result.reason.startswith(
        f"the chain is empty but checkpoint {checkpoint.at_text} saw record 7: "
        "7 records were deleted"
    )
    assert "head row (audit_head) is missing" in result.reason


def test_a_chain_rewritten_before_the_checkpoint_is_named(any_workspace: Workspace) -> None:
    """Record 3 rewritten and every later hash recomputed, head included: the chain is
    consistent again, only the checkpoint's hash gives it away."""
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    with ws.store.read() as s:
        rows = s.scalars(select(AuditRow).order_by(AuditRow.seq)).all()
    prev = rows[1].hash
    with ws.store.engine.begin() as conn:
        for row in rows[2:]:
            if row.seq == 3:
                row.after = {"description": "forged"}
            row.prev_hash = prev
            row.hash = prev = record_hash(row)
            conn.execute(
                update(AuditRow)
                .where(AuditRow.seq == row.seq)
                .values(after=row.after, prev_hash=row.prev_hash, hash=row.hash)
            )
        conn.execute(update(AuditHeadRow).values(hash=prev))
    assert ws.audit.verify().ok
    result = ws.audit.verify(checkpoint)
    assert (result.ok, result.broken_at) == (False, 7)
    assert f"record 7 is not the one checkpoint {checkpoint.at_text} saw" in result.reason
    assert "rewritten at or before record 7" in result.reason


def test_an_altered_record_before_the_checkpoint_is_named(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    with ws.store.engine.begin() as conn:
        conn.execute(update(AuditRow).where(AuditRow.seq == 3).values(actor="mallory"))
    result = ws.audit.verify(checkpoint)
    assert (result.ok, result.broken_at) == (False, 3)
    assert "record 3 was altered" in result.reason
    assert "broken before it" in result.checkpoint


def test_forged_checkpoints_are_refused(any_workspace: Workspace) -> None:
    ws = any_workspace
    _seed(ws)
    checkpoint = ws.audit.checkpoint()
    for forged in (
        checkpoint.model_copy(update={"seq": 3}),  # claims less: would hide a truncation
        checkpoint.model_copy(update={"at": datetime(2030, 1, 1, tzinfo=UTC)}),
        checkpoint.model_copy(update={"signature": "AAAA" + checkpoint.signature[4:]}),
    ):
        result = ws.audit.verify(forged)
        assert not result.ok
        assert "does not verify" in result.reason and result.reason.startswith("checkpoint")
    unknown = checkpoint.model_copy(update={"key_id": "0123456789abcdef"})
    assert "does not trust" in ws.audit.verify(unknown).reason
    ws.signing.revoke_key(checkpoint.key_id)
    assert "revoked" in ws.audit.verify(checkpoint).reason
    with pytest.raises(InvalidInput, match="seq"):
        ws.audit.verify({"seq": "x", "hash": checkpoint.hash})


def test_a_checkpoint_needs_a_key_and_an_intact_chain(any_workspace: Workspace) -> None:
    ws = any_workspace
    ws.registry.create_model("m")
    with pytest.raises(Conflict, match="keys create"):
        ws.audit.checkpoint()
    _seed(ws, models=2)
    with ws.store.engine.begin() as conn:
        conn.execute(delete(AuditRow).where(AuditRow.seq == 2))
    with pytest.raises(Conflict, match="record 2 is missing"):
        ws.audit.checkpoint()


def test_cli_checkpoint_to_a_file_and_an_fsspec_url(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("keys", "create", "--name", "ops")
    run("models", "create", "fraud")
    out = tmp_path / "checkpoint.json"
    assert "written to" in run("audit", "checkpoint", "-o", str(out)).stdout
    saved = json.loads(out.read_text())
    assert set(saved) == {"seq", "hash", "at", "key_id", "signature"} and saved["seq"] == 2
    run("audit", "checkpoint", "--to", "memory://audit/cp.json")
    assert read_checkpoint("memory://audit/cp.json").seq == 2
    printed = json.loads(run("audit", "checkpoint").stdout)
    assert Checkpoint.parse(printed).seq == 2

    result = run("audit", "verify", "--checkpoint", str(out))
    assert "still holds its record" in result.stdout
    run("models", "create", "other")
    ws = Workspace.open(_settings(tmp_path))
    try:
        _truncate(ws, 1, move_head=True)
    finally:
        ws.close()
    result = run("audit", "verify", "--checkpoint", "memory://audit/cp.json", ok=False)
    assert result.returncode == 1
    assert "the chain ends at record 1 but checkpoint" in result.stdout
    assert "1 record was deleted" in result.stdout
    saved["seq"] = 1
    out.write_text(json.dumps(saved))
    result = run("audit", "verify", "--checkpoint", str(out), ok=False)
    assert result.returncode == 1 and "checkpoint refused" in result.stdout
    out.write_text("{}")
    result = run("audit", "verify", "--checkpoint", str(out), ok=False)
    assert result.returncode == 2 and "not a modelyard audit checkpoint" in result.stderr


def _settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    from modelyard.config import Settings

    return Settings(home=tmp_path / "home")


def test_http_api_and_sdk_checkpoint(client, workspace: Workspace) -> None:  # type: ignore[no-untyped-def]
    client.keys.create_key(name="server")
    client.registry.create_model("fraud")
    checkpoint = client.audit.checkpoint()
    assert checkpoint.seq == 2
    assert client.audit.verify(checkpoint).ok
    _truncate(workspace, 1, move_head=True)
    result = client.audit.verify(checkpoint)
    assert not result.ok and "1 record was deleted" in result.reason


def test_api_routes(live_server, workspace: Workspace) -> None:  # type: ignore[no-untyped-def]
    api = f"{live_server.url}/api/v1"
    assert httpx.post(f"{api}/audit/checkpoint").status_code == 409  # no key yet
    assert httpx.post(f"{api}/keys", json={"name": "server"}).status_code == 201
    response = httpx.post(f"{api}/audit/checkpoint")
    assert response.status_code == 200
    body = response.json()
    assert httpx.post(f"{api}/audit/verify", json=body).json()["ok"] is True
    body["seq"] += 1
    refused = httpx.post(f"{api}/audit/verify", json=body).json()
    assert refused["ok"] is False and "does not verify" in refused["reason"]
    bad = httpx.post(f"{api}/audit/verify", json={"seq": 1})
    assert bad.status_code == 422
