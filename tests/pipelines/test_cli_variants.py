"""``modelyard models variants create`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

from modelyard import Client
from tests.pipelines.test_variants import CALLS, seed


def test_variants_create_prints_parent_and_variant_side_by_side(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Client(str(tmp_path / "home")) as local:
        parent = seed(local)
    out = run(
        "models", "variants", "create", parent, "--distill", "logistic", "--calls", str(CALLS)
    ).stdout
    assert "registered models:/fraud/2 (sklearn): logistic regression distilled from" in out
    assert "measured on fraud-test v1 (test), 150 rows" in out
    lines = out.splitlines()
    header = next(line for line in lines if "accuracy" in line)
    assert "p50 1 row" in header and "p50 64 rows" in header and "size" in header
    assert any("parent" in line and "models:/fraud/1" in line and " ms" in line for line in lines)
    assert any("variant" in line and "models:/fraud/2" in line for line in lines)
    assert "attached to no endpoint" in out

    report = json.loads(
        run(
            "models",
            "variants",
            "create",
            "models:/fraud/1",
            "--distill",
            "tree",
            "--max-depth",
            "2",
            "--name",
            "fraud-small",
            "--calls",
            str(CALLS),
            "--json",
        ).stdout
    )
    assert report["version"]["model"] == "fraud-small" and report["parent"] == parent
    shown = json.loads(run("models", "show", "models:/fraud-small/1", "--json").stdout)
    assert shown["tags"]["modelyard.variant.of"] == parent
    assert shown["tags"]["modelyard.variant.kind"] == "distilled-tree"


def test_variants_create_errors_are_one_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Client(str(tmp_path / "home")) as local:
        parent = seed(local)
    for args, words in [
        ((), "exactly one of quantize"),
        (("--quantize", "int8", "--distill", "tree"), "not both"),
        (("--distill", "forest"), "unknown distillation 'forest'"),
        (("--quantize", "int8"), "try --distill tree"),
    ]:
        result = run("models", "variants", "create", parent, *args, ok=False)
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 3  # one message, wrapped at most
    missing = run("models", "variants", "create", "models:/ghost/1", "--distill", "tree", ok=False)
    assert missing.returncode == 3
    help_text = run("models", "variants", "create", "--help").stdout
    assert "--quantize" in help_text and "--distill" in help_text and "holdout" in help_text
    assert "create" in run("models", "variants", "--help").stdout


def test_variants_create_against_a_server(run, workspace, live_server) -> None:  # type: ignore[no-untyped-def]
    with Client(str(workspace.settings.resolved_home), settings=workspace.settings) as local:
        parent = seed(local, alias="champion")
    out = run(
        "--uri",
        live_server.url,
        "models",
        "variants",
        "create",
        "models:/fraud@champion",
        "--distill",
        "tree",
        "--calls",
        str(CALLS),
    ).stdout
    assert (
        f"registered models:/fraud/2 (sklearn): decision tree (depth <= 6) distilled from {parent}"
        in out
    )
    assert workspace.registry.get_version("fraud", 2).tags["modelyard.variant.of"] == parent
