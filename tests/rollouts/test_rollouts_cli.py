"""``modelyard rollouts``: the plan from flags and files, the timeline, the hand controls,
the controller pass, and one-line errors with their exit codes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from modelyard.rollouts import Rollout
from modelyard.rollouts.service import RolloutService
from modelyard.workspace import Workspace
from tests.conftest import LiveServer
from tests.rollouts.conftest import Traffic, send

Run = Any  # the `run` fixture of tests/conftest.py


def started(run: Run, *args: str) -> Rollout:
    r = run("rollouts", "start", "fraud", "--to", "models:/fraud/2", *args, "--json")
    return Rollout.model_validate_json(r.stdout)


@pytest.mark.parametrize(
    "command", ["", "start", "status", "list", "pause", "resume", "promote", "abort", "run"]
)
def test_every_command_has_help(run: Run, command: str) -> None:
    out = run("rollouts", *([command] if command else []), "--help").stdout
    assert "Usage" in out and "rollouts" in out  # (rich may style or wrap the usage line)


def test_flags_make_the_plan(run: Run, fraud_sqlite: Workspace) -> None:
    r = started(
        run,
        *("--steps", "10,50,100", "--interval", "15s", "--min-requests", "20"),
        *("--shadow", "500", "--max-failures", "2", "--max-inconclusive", "4"),
        *("--deadline", "2h", "--finish", "endpoint", "--sticky-field", "user_id"),
        *("--webhook", "http://127.0.0.1:9/a", "--webhook", "https://hooks.example/b"),
        *("--alpha", "0.05", "--error-margin", "0.02", "--max-p99-ms", "250"),
        "--no-early-errors",
    )
    plan = r.plan
    assert (plan.steps, plan.interval_seconds, plan.min_requests) == ([10, 50, 100], 15, 20)
    assert (plan.shadow_requests, plan.max_failures, plan.max_inconclusive) == (500, 2, 4)
    assert (plan.deadline_seconds, plan.finish, plan.early_errors) == (7200, "endpoint", False)
    assert plan.sticky is not None and plan.sticky.field == "user_id"
    assert plan.webhooks == ["http://127.0.0.1:9/a", "https://hooks.example/b"]
    thresholds = plan.thresholds
    assert (thresholds.alpha, thresholds.error_rate_margin, thresholds.max_p99_ms) == (
        0.05,
        0.02,
        250,
    )
    assert r.phase == "shadow" and fraud_sqlite.rollouts.get("fraud") == r


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_plan_file_with_flags_over_it(run: Run, fraud_sqlite: Workspace, suffix: str) -> None:
    plan = {
        "steps": [20, 100],
        "interval_seconds": 5,
        "alias": "champion",
        "thresholds": {"alpha": 0.05, "output_psi": 0.3},
    }
    path = Path(f"plan.{suffix}")
    if suffix == "json":
        path.write_text(json.dumps(plan))
    else:
        path.write_text(
            "steps: [20, 100]\ninterval_seconds: 5\nalias: champion\n"
            "thresholds:\n  alpha: 0.05\n  output_psi: 0.3\n"
        )
    r = started(run, "--plan", str(path), "--interval", "1m", "--alpha", "0.02")
    assert (r.plan.steps, r.plan.interval_seconds, r.plan.alias) == ([20, 100], 60, "champion")
    assert (r.plan.thresholds.alpha, r.plan.thresholds.output_psi) == (0.02, 0.3)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--steps", "50,20"], 2, "--steps 50,20: steps must increase, e.g. [5, 25, 50, 100]"),
        (["--steps", "5,a"], 2, "--steps '5,a': write the canary's percentages"),
        (["--interval", "0"], 2, "--interval 0: Input should be greater than or equal to 1"),
        (["--interval", "3x"], 2, "--interval '3x' is not a duration"),
        (["--deadline", "soon"], 2, "--deadline 'soon' is not a duration"),
        (["--alpha", "0.7"], 2, "--alpha 0.7: Input should be less than 0.5"),
        (["--finish", "now"], 2, "--finish now: Input should be 'alias' or 'endpoint'"),
        (["--alias", "bad alias"], 2, "--alias bad alias: alias 'bad alias' is not valid"),
        (["--steps", "100"], 2, "the plan: a first step of 100 % leaves no baseline"),
        (["--steps", ",".join(["1"] * 5000)], 2, "--steps 1,1,1,1"),
        (["--sticky-header", "a", "--sticky-field", "b"], 2, "give one of them"),
        (["--sticky-header", "x_user"], 2, "--sticky-header x_user: String should match"),
        (["--webhook", "ftp://x.example"], 2, "--webhook ftp://x.example: String should"),
        (["--plan", "missing.yaml"], 2, "--plan missing.yaml: cannot read it"),
        (["--to", "models:/fraud/9"], 3, "fraud"),
        (["--to", "models:/fraud/1"], 4, "already serves models:/fraud/1"),
    ],
)
def test_bad_starts_are_one_line_and_exit_non_zero(
    run: Run, fraud_sqlite: Workspace, args: list[str], code: int, needle: str
) -> None:
    base = ["rollouts", "start", "fraud", "--to", "models:/fraud/2"]
    r = run(*base, *args, ok=False)
    assert r.returncode == code, r.stderr
    assert r.stderr.startswith("error: ") and needle in r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout == ""
    assert fraud_sqlite.rollouts.list() == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[1, 2]", "must hold a mapping of plan fields"),
        ("steps: [5, 25\n", "is not valid JSON or YAML"),
        ("intervall: 10\n", "unknown field 'intervall'; did you mean interval_seconds?"),
        ("thresholds: {p99: 3}\n", "thresholds: unknown field 'p99'; the fields: alpha,"),
        ("steps: [50, 20]\n", "plan.yaml: steps: steps must increase"),
    ],
)
def test_a_bad_plan_file_says_what_to_fix(
    run: Run, fraud_sqlite: Workspace, text: str, needle: str
) -> None:
    Path("plan.yaml").write_text(text)
    base = ["rollouts", "start", "fraud", "--to", "models:/fraud/2", "--plan", "plan.yaml"]
    r = run(*base, ok=False)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


def test_status_prints_the_timeline(run: Run, fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    r = started(run, "--interval", "10", "--min-requests", "50")
    send(ws, Traffic(seed=1), at=r.step_started_at)
    assert "step 2" in ws.rollouts.tick(r.id, r.next_analysis_at + timedelta(seconds=1))
    run("rollouts", "pause", "fraud", "--reason", "checking [the] dashboards")
    out = run("rollouts", "status", "fraud").stdout
    lines = out.splitlines()
    assert lines[0] == f"rollout {r.id} on fraud"
    assert lines[1].strip() == "models:/fraud@champion (v1 at the start) -> models:/fraud/2"
    assert lines[2].strip() == "phase: canary (paused), step 2/4 at 25 %"
    assert lines[3].strip().startswith("started by local at ")

    def at(text: str) -> int:
        found = [i for i, line in enumerate(lines) if text in line]
        assert found, f"{text!r} not in\n{out}"
        return found[0]

    checks = ws.rollouts.get(r.id).analyses[0].checks
    assert [c.name for c in checks][:3] == ["errors", "latency", "outputs"]
    order = [
        at("started     local: models:/fraud/2 against models:/fraud@champion"),
        at("analysis    canary 5 %: pass (baseline"),
        *(at(c.summary) for c in checks),
        at("step        rollouts: 5 % passed; canary at 25 %"),
    ]
    assert order == sorted(order), out
    at("paused      local: checking [the] dashboards")  # (before: the analysis time is made up)
    as_json = run("rollouts", "status", r.id, "--json").stdout
    assert Rollout.model_validate_json(as_json) == ws.rollouts.get(r.id)


def test_a_rollback_on_a_terminal_is_red(
    run: Run, fraud_sqlite: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = fraud_sqlite
    r = started(run, "--interval", "10", "--no-early-errors")
    send(ws, Traffic(canary_errors=0.3, seed=2), at=r.step_started_at)
    assert ws.rollouts.tick(r.id, r.next_analysis_at + timedelta(seconds=1)).startswith(
        "rolled back"
    )
    out = run("rollouts", "status", "fraud").stdout
    assert "phase: rolled_back, canary at 0 %" in out and "reason: " in out
    assert "analysis    canary 5 %: fail" in out
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, color_system="standard", width=1000)
    monkeypatch.setattr("modelyard.cli.rollouts.console", terminal)
    run("rollouts", "status", "fraud")
    painted = screen.getvalue()
    checks = ws.rollouts.get(r.id).analyses[-1].checks
    failed = next(c for c in checks if c.verdict == "fail")
    passed = next(c for c in checks if c.verdict == "pass")
    assert "\x1b[31mfail" in painted and "\x1b[31mrolled_back" in painted
    assert f"\x1b[31m{failed.summary}" in painted and f"\x1b[32m{passed.summary}" in painted


def test_list_and_the_hand_controls(run: Run, fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    r = started(run)
    listed = run("rollouts", "list").stdout
    assert r.id in listed and "models:/fraud/2" in listed
    row = next(line for line in listed.splitlines() if r.id in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]][1:7] == [
        "fraud",
        "models:/fraud/2",
        "canary",
        "1/4",
        "5 %",
        "",
    ]
    assert r.id in run("rollouts", "list", "--active", "--endpoint", "fraud").stdout
    assert r.id not in run("rollouts", "list", "--endpoint", "other").stdout
    assert json.loads(run("rollouts", "list", "--json").stdout)[0]["id"] == r.id

    out = run("rollouts", "pause", "fraud", "--reason", "wait").stdout
    assert out.strip() == f"rollout {r.id} on fraud: canary (paused), step 1/4 at 5 %"
    again = run("rollouts", "pause", "fraud", ok=False)
    assert again.returncode == 4 and "paused already" in again.stderr
    assert "canary, step 1/4" in run("rollouts", "resume", r.id).stdout
    out = run("rollouts", "promote", "fraud").stdout
    assert "succeeded" in out and "@champion moved to v2" in out
    assert ws.registry.get_alias("fraud", "champion").version == 2
    ended = run("rollouts", "abort", "fraud", ok=False)
    assert ended.returncode == 4 and "has ended (succeeded)" in ended.stderr
    assert run("rollouts", "list", "--active").stdout.count(r.id) == 0

    second = run("rollouts", "start", "fraud", "--to", "models:/fraud/1").stdout
    assert "started rollout" in second and "step 1/4 at 5 %" in second
    out = run("rollouts", "abort", "fraud", "--reason", "wrong one", "--json").stdout
    assert Rollout.model_validate_json(out).reason == "aborted by local: wrong one"
    missing = run("rollouts", "status", "nope", ok=False)
    assert missing.returncode == 3 and "no rollout 'nope'" in missing.stderr


def test_run_is_one_controller_pass(run: Run, fraud_sqlite: Workspace) -> None:
    ws = fraud_sqlite
    assert run("rollouts", "run").stdout.strip() == "nothing to do: no running rollout was due"
    started(run, "--deadline", "1")
    time.sleep(1.1)
    out = run("rollouts", "run").stdout
    assert out.strip() == "fraud: rolled back: the deadline passed (1 s after the start)"
    assert ws.rollouts.get("fraud").phase == "rolled_back"
    # the CLI gave the lease up: a server's controller acts at once (with a rollout to run)
    started(run)
    server = RolloutService(ws, owner="server")
    assert not server.run_once().skipped
    held = run("rollouts", "run", "--json").stdout
    assert json.loads(held) == {"acted": [], "errors": [], "skipped": True}
    assert "another process holds the rollouts lease" in run("rollouts", "run").stdout


def test_run_watch_acts_until_ctrl_c(run: Run, fraud_sqlite: Workspace, tmp_path: Path) -> None:
    started(run, "--deadline", "1")
    env = {**os.environ, "MODELYARD_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("MODELYARD_URI", None)
    code = "from modelyard.cli.main import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "rollouts", "run", "--watch", "--every", "0.2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # waits for the pass that acts
        assert line.startswith("fraud: rolled back: the deadline passed"), line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert fraud_sqlite.rollouts.get("fraud").phase == "rolled_back"
    assert not RolloutService(fraud_sqlite, owner="server").run_once().skipped  # released


def test_the_commands_work_through_a_server(
    run: Run, fraud_sqlite: Workspace, live_server: LiveServer
) -> None:
    uri = ("--uri", live_server.url)
    out = run(*uri, "rollouts", "start", "fraud", "--to", "models:/fraud/2", "--steps", "20,100")
    assert "step 1/2 at 20 %" in out.stdout
    assert "phase: canary, step 1/2 at 20 %" in run(*uri, "rollouts", "status", "fraud").stdout
    assert "nothing to do" in run(*uri, "rollouts", "run").stdout
    bad = run(*uri, "rollouts", "start", "fraud", "--to", "models:/fraud/2", ok=False)
    assert bad.returncode == 4 and "has rollout" in bad.stderr
    assert "aborted" in run(*uri, "rollouts", "abort", "fraud").stdout
    assert fraud_sqlite.rollouts.get("fraud").phase == "aborted"
