"""The `modelyard` command, run as a user runs it: a subprocess with its own home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_entry_point_as_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "MODELYARD_HOME": str(tmp_path / "home")}
    env.pop("MODELYARD_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "modelyard", "models", "show", "ghost"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert proc.stderr.strip() == (
        "error: no model 'ghost'; `modelyard models list` shows the registered ones"
    )
    assert proc.stdout == ""


def test_quickstart_then_registry_commands(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run("quickstart", "--rows", "400").stdout
    assert "models:/fraud/1" in out and "champion" in out
    # The demo data the README's serving and monitoring blocks use.
    import pandas as pd

    data = tmp_path / "fraud-data"
    assert len(pd.read_parquet(data / "train.parquet")) == 300
    payments = pd.read_csv(data / "payments.csv")
    assert list(payments.columns) == ["amount", "hour", "account_age_days", "foreign"]
    labels = pd.read_csv(data / "labels.csv")
    assert list(labels.columns) == ["request_id", "row", "label"]
    assert set(labels.request_id) == {"payments-1"}
    assert labels.row.tolist() == list(range(len(payments)))
    assert set(labels.label) == {0, 1}

    models = json.loads(run("models", "list", "--json").stdout)
    assert [(m["name"], m["aliases"], m["project"]) for m in models] == [
        ("fraud", {"champion": 1}, "fraud-detection")
    ]

    version = json.loads(run("models", "show", "models:/fraud@champion", "--json").stdout)
    assert version["version"] == 1 and version["format"] == "sklearn"
    assert {d["role"] for d in version["datasets"]} == {"training", "test"}

    lineage = json.loads(run("models", "lineage", "models:/fraud/1", "--json").stdout)
    assert lineage["experiment"] == "quickstart" and lineage["params"]["C"] == "1.0"

    card = json.loads(
        run("models", "card", "models:/fraud/1", "--set", "limitations=demo only", "--json").stdout
    )
    assert card["limitations"] == "demo only" and "roc_auc" in card["metrics"]

    run("models", "register", "fraud-copy", "models:/fraud/1", "--alias", "challenger")
    assert (
        json.loads(run("models", "alias", "get", "fraud-copy", "challenger", "--json").stdout)[
            "version"
        ]
        == 1
    )

    assert "audit chain intact" in run("audit", "verify").stdout
    actions = [r["action"] for r in json.loads(run("audit", "list", "--json").stdout)]
    assert "alias.set" in actions and "card.update" in actions


def test_errors_print_one_line_and_exit_non_zero(run) -> None:  # type: ignore[no-untyped-def]
    proc = run("models", "show", "ghost", ok=False)
    assert proc.returncode == 3 and "no model 'ghost'" in proc.stderr

    proc = run("models", "show", "models:/ghost/zero", ok=False)
    assert proc.returncode == 2 and "not a model URI" in proc.stderr

    proc = run("models", "create", "x", "--tag", "novalue", ok=False)
    assert proc.returncode == 2 and "key=value" in proc.stderr

    proc = run("models", "register", "m", "/does/not/exist", ok=False)
    assert proc.returncode == 2 and "not a directory" in proc.stderr


def test_tracking_and_projects_commands(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run(
        "projects",
        "create",
        "churn",
        "--objective",
        "keep customers",
        "--kpi",
        "recall:0.8:maximize",
        "--stakeholder",
        "ana:owner",
    )
    project = json.loads(run("projects", "show", "churn", "--json").stdout)
    assert project["kpis"][0]["direction"] == "maximize"
    bad = run("projects", "create", "p2", "--kpi", "recall:high:maximize", ok=False)
    assert bad.returncode == 2 and "number" in bad.stderr

    run_id = run("runs", "start", "exp1", "--param", "alpha=0.1").stdout.strip()
    run("runs", "log", run_id, "--metric", "rmse=0.5", "--step", "1")
    run("runs", "log", run_id, "--metric", "rmse=0.4", "--step", "2")
    history = json.loads(run("runs", "history", run_id, "rmse", "--json").stdout)
    assert [h["value"] for h in history] == [0.5, 0.4]
    conflict = run("runs", "log", run_id, "--param", "alpha=0.2", ok=False)
    assert conflict.returncode == 4
    run("runs", "end", run_id)

    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,x\n2,y\n3,x\n")
    ds = json.loads(run("datasets", "log", "small", str(csv), "--json").stdout)
    assert ds["num_rows"] == 3 and ds["version"] == 1


def test_every_command_has_help(run) -> None:  # type: ignore[no-untyped-def]
    for group in (
        "models",
        "models alias",
        "runs",
        "experiments",
        "datasets",
        "projects",
        "users",
        "tokens",
        "audit",
    ):
        out = run(*group.split(), "--help").stdout
        assert "Usage" in out and "Commands" in out
    assert "--port" in run("server", "--help").stdout
    assert "--rows" in run("quickstart", "--help").stdout


def test_usage_errors_exit_2_without_traceback(run) -> None:  # type: ignore[no-untyped-def]
    proc = run("models", "show", ok=False)
    assert proc.returncode == 2 and "Missing argument" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("models", "frobnicate", ok=False)
    assert proc.returncode == 2 and "No such command" in proc.stderr


def test_audit_verify_exits_1_when_the_chain_was_tampered_with(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    run("models", "create", "a")
    run("models", "create", "b")
    assert run("audit", "verify").returncode == 0
    db = sqlite3.connect(tmp_path / "home" / "modelyard.db")
    db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    db.commit()
    db.close()
    proc = run("audit", "verify", ok=False)
    assert proc.returncode == 1
    assert "broken" in proc.stdout and "record 1" in proc.stdout


def test_a_setting_with_a_refused_value_is_one_line_naming_the_variable(run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MODELYARD_PORT", "99999")
    proc = run("models", "list", ok=False)
    assert proc.returncode == 2
    assert "invalid setting: MODELYARD_PORT" in proc.stderr and "65535" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("serve", "--port", "70000", ok=False)
    assert proc.returncode == 2 and "--port" in proc.stderr
