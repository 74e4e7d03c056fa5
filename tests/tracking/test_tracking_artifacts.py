"""Run artifacts on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelyard.errors import InvalidInput, NotFound
from modelyard.workspace import Workspace


def test_log_bytes_and_file_then_read_back(any_workspace: Workspace, tmp_path: Path) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    art = ws.tracking.log_artifact(run.id, "plots/./loss.txt", b"hello")
    assert art.path == "plots/loss.txt"
    assert art.digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert art.size == 5
    local = tmp_path / "model.bin"
    local.write_bytes(b"\x00" * 1000)
    from_file = ws.tracking.log_artifact(run.id, "model.bin", local)
    assert from_file.size == 1000
    assert ws.tracking.log_artifact(run.id, "m2.bin", str(local)).digest == from_file.digest
    assert [a.path for a in ws.tracking.list_artifacts(run.id)] == [
        "m2.bin",
        "model.bin",
        "plots/loss.txt",
    ]
    assert ws.tracking.get_artifact(run.id, "plots/loss.txt") == b"hello"
    assert ws.tracking.get_run(run.id).artifacts == ws.tracking.list_artifacts(run.id)


def test_relogging_a_path_replaces_it_and_is_audited(any_workspace: Workspace) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    ws.tracking.log_artifact(run.id, "notes.txt", b"v1")
    ws.tracking.end_run(run.id)  # artifacts may be added after the run ended
    ws.tracking.log_artifact(run.id, "notes.txt", b"v2")
    assert ws.tracking.get_artifact(run.id, "notes.txt") == b"v2"
    records = ws.audit.list(action="run.log_artifact").items
    assert [r.after["size"] for r in records if r.after] == [2, 2]
    assert records[0].before is not None
    assert records[0].before["digest"] == "sha256:" + hashlib.sha256(b"v1").hexdigest()
    assert ws.audit.verify().ok


def test_artifact_errors(any_workspace: Workspace, tmp_path: Path) -> None:
    ws = any_workspace
    run = ws.tracking.start_run("e")
    for bad in ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "./"]:
        with pytest.raises(InvalidInput, match="artifact path"):
            ws.tracking.log_artifact(run.id, bad, b"x")
    with pytest.raises(InvalidInput, match="no file at"):
        ws.tracking.log_artifact(run.id, "x", tmp_path / "missing.bin")
    with pytest.raises(NotFound, match="no run"):
        ws.tracking.log_artifact("missing", "x", b"x")
    with pytest.raises(NotFound, match=r"has no artifact 'nope\.txt'"):
        ws.tracking.get_artifact(run.id, "nope.txt")
    with pytest.raises(NotFound):
        ws.tracking.list_artifacts("missing")
