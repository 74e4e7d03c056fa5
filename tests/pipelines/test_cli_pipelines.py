"""``modelyard pipelines``: run, show, runs, list, register, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

from modelyard.pipelines import pipeline, step


@step(stage="ingest")
def numbers(n: int) -> list[int]:
    print(f"{n} numbers")
    return list(range(n))


@step(stage="evaluate")
def total(xs: list[int]) -> dict[str, float]:
    return {"total": float(sum(xs))}


@step
def explode(xs: list[int]) -> int:
    raise ValueError("no good")


@pipeline(name="nums")
def nums_pipeline(n: int = 3) -> None:
    total(numbers(n))


def _yaml(tmp_path: Path, name: str, last: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""
name: {name}
params: {{n: 4}}
steps:
  - {{name: numbers, function: "{__name__}:numbers", inputs: {{n: "${{params.n}}"}}}}
  - {{name: last, function: "{__name__}:{last}", inputs: {{xs: "${{steps.numbers}}"}}}}
"""
    )
    return path


def test_run_show_and_list_runs(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = _yaml(tmp_path, "counting", "total")
    result = json.loads(run("pipelines", "run", str(source), "--param", "n=3", "--json").stdout)
    assert result["status"] == "succeeded" and result["params"] == {"n": 3}
    assert [(s["name"], s["status"], s["stage"]) for s in result["steps"]] == [
        ("numbers", "succeeded", "ingest"),
        ("last", "succeeded", "evaluate"),
    ]
    run_id = result["id"]

    shown = run("pipelines", "show", run_id).stdout
    assert f"counting run {run_id}: succeeded" in shown
    assert "numbers" in shown and "└ last" in shown and "ingest" in shown
    assert "latency: ingest " in shown and "overhead" in shown
    assert "3 numbers" in run("pipelines", "show", run_id, "--logs").stdout
    assert json.loads(run("pipelines", "show", run_id, "--json").stdout)["id"] == run_id

    runs = json.loads(run("pipelines", "runs", "--pipeline", "counting", "--json").stdout)
    assert [r["id"] for r in runs] == [run_id]
    assert "counting" in run("pipelines", "runs").stdout

    table = run("pipelines", "run", str(source), "-p", "n=3", "--executor", "inprocess").stdout
    assert "cached" in table and "succeeded" not in table.split("latency")[0].split("steps")[1]


def test_register_and_run_by_name(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = _yaml(tmp_path, "counting", "total")
    assert (
        "registered pipeline counting"
        in run("pipelines", "register", "counting", str(source)).stdout
    )
    listed = json.loads(run("pipelines", "list", "--json").stdout)
    assert [(p["name"], p["source"]) for p in listed] == [("counting", str(source.resolve()))]
    first = json.loads(run("pipelines", "run", "counting", "--json").stdout)
    assert first["params"] == {"n": 4}
    again = json.loads(run("pipelines", "run", "counting", "--json").stdout)
    assert {s["status"] for s in again["steps"]} == {"cached"}
    forced = json.loads(run("pipelines", "run", "counting", "--force", "--json").stdout)
    assert {s["status"] for s in forced["steps"]} == {"succeeded"}


def test_errors_are_one_line_with_a_non_zero_exit(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    failing = run("pipelines", "run", str(_yaml(tmp_path, "failing", "explode")), ok=False)
    assert failing.returncode == 1
    [line] = failing.stderr.strip().splitlines()
    assert line.startswith("error: pipeline failing run ")
    assert line.endswith("failed: step 'last' raised ValueError: no good")
    assert "skipped" not in failing.stdout and "failed" in failing.stdout

    ghost = run("pipelines", "run", "ghost", ok=False)
    assert ghost.returncode == 3
    assert ghost.stderr.strip() == (
        "error: no pipeline 'ghost'; register it, or give 'package.module:attr' or a .yaml file"
    )
    bad = run("pipelines", "run", str(tmp_path / "counting.yaml"), ok=False)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1
    source = _yaml(tmp_path, "counting", "total")
    for args, message in (
        (("-p", "n"), "'n' must look like key=value"),
        (("-p", "m=1"), "has no parameter m"),
        (("--executor", "spark"), "unknown executor 'spark'"),
    ):
        result = run("pipelines", "run", str(source), *args, ok=False)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert message in result.stderr
    shown = run("pipelines", "show", "nope", ok=False)
    assert shown.returncode == 3 and "no pipeline run 'nope'" in shown.stderr


def test_triggers_delivery_maturity_and_approvals_commands(run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    mod = __name__
    run("pipelines", "register", "nums", f"{mod}:nums_pipeline")
    out = run(
        "pipelines", "triggers", "create", "nightly", "--pipeline", "nums", "--cron", "0 3 * * *"
    ).stdout
    assert "trigger nightly: schedule -> pipeline nums" in out
    bad = run(
        "pipelines",
        "triggers",
        "create",
        "both",
        "--pipeline",
        "nums",
        "--cron",
        "0 3 * * *",
        "--on-dataset",
        "x",
        ok=False,
    )
    assert bad.returncode != 0 and "exactly one" in bad.stderr
    bad = run(
        "pipelines",
        "triggers",
        "create",
        "typo",
        "--pipeline",
        "nums",
        "--cron",
        "not a cron",
        ok=False,
    )
    assert bad.returncode != 0
    listed = json.loads(run("pipelines", "triggers", "list", "--json").stdout)
    assert [t["name"] for t in listed] == ["nightly"]
    assert json.loads(run("pipelines", "triggers", "events", "--json").stdout) == []
    assert json.loads(run("pipelines", "delivery", "--json").stdout)["models"] == []
    maturity = json.loads(run("pipelines", "maturity", "--json").stdout)
    assert maturity["level"] == 0 and maturity["next_steps"]
    assert json.loads(run("approvals", "list", "--json").stdout) == []
    missing = run("approvals", "approve", "01ARZ3NDEKTSV4RRFFQ69G5FAV", ok=False)
    assert missing.returncode != 0
    run("pipelines", "triggers", "delete", "nightly")
    assert json.loads(run("pipelines", "triggers", "list", "--json").stdout) == []
