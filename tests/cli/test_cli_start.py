"""A quick start: `modelyard --help` and the everyday listing commands import no heavy library.

`--help` lists the commands from the table in cli/main.py without importing their modules;
a command imports what it needs when it runs. Each case runs in a fresh interpreter, as a
user runs the command, on a fresh SQLite workspace.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from modelyard.cli.main import COMMANDS, app, load_command

HEAVY = ("pandas", "pyarrow", "sklearn", "onnxruntime", "scipy", "optuna", "numpy")
MARK = "imported-modules:"

CODE = f"""
import json, sys
sys.argv = ["modelyard", *sys.argv[1:]]
from modelyard.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print({MARK!r} + json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
"""


def _imported(args: list[str], tmp_path: Path) -> tuple[str, set[str]]:
    env = {**os.environ, "MODELYARD_HOME": str(tmp_path / "home"), "COLUMNS": "120"}
    env.pop("MODELYARD_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", CODE, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out, _, last = proc.stdout.rpartition(MARK)
    found = json.loads(last)
    assert found["code"] in (0, None), proc.stderr
    return out, set(found["modules"])


@pytest.mark.parametrize(
    "args",
    [["--help"], ["models", "list"], ["monitor", "--help"], ["pipelines", "list"]],
    ids=" ".join,
)
def test_commands_import_no_heavy_library(args: list[str], tmp_path: Path) -> None:
    out, modules = _imported(args, tmp_path)
    assert out.strip()
    assert sorted(name for name in HEAVY if name in modules) == []


def test_root_help_imports_no_command(tmp_path: Path) -> None:
    out, modules = _imported(["--help"], tmp_path)
    assert all(name in out for name in COMMANDS)
    assert sorted(m for m in modules if m.startswith("modelyard.cli.")) == [
        "modelyard.cli.context",
        "modelyard.cli.main",
    ]
    assert "modelyard.client" not in modules


def _first_paragraph(command: typer.core.TyperCommand) -> str:
    return inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0].strip()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_help_line_in_the_table_is_the_commands_own(name: str) -> None:
    assert COMMANDS[name].help == _first_paragraph(load_command(name)), (
        f"update the help of {name!r} in COMMANDS (modelyard/cli/main.py) to the first "
        "paragraph of the command's own help"
    )


def test_root_help_is_the_same_once_the_commands_are_loaded(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    group = typer.main.get_command(app)

    def root_help() -> str:
        capsys.readouterr()
        group.main(["--help"], prog_name="modelyard", standalone_mode=False)
        return capsys.readouterr().out

    listed = root_help()
    for name in COMMANDS:
        assert group.get_command(None, name) is not None  # type: ignore[arg-type]
    assert root_help() == listed
    assert "models" in listed and COMMANDS["models"].help in listed
