"""How the CLI shows results: rich tables on a terminal, JSON with ``--json``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(_plain(value), option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    return str(value)


def table(rows: Iterable[Any], columns: Sequence[str], *, as_json: bool, title: str = "") -> None:
    """Rows (entities or dicts) as a table, or as a JSON list."""
    items = [_plain(r) for r in rows]
    if as_json:
        emit_json(items)
        return
    t = Table(title=title or None)
    for c in columns:
        # an id is what the next command needs: whole, never cut to fit the terminal
        identifier = c == "id" or c.endswith("_id")
        t.add_column(c, no_wrap=identifier, min_width=26 if identifier else None)
    for item in items:
        t.add_row(*(_cell(item.get(c)) for c in columns))
    console.print(t)


def record(value: Any, *, as_json: bool, fields: Sequence[str] | None = None) -> None:
    """One entity as ``key: value`` lines, or as a JSON object."""
    data = _plain(value)
    if as_json:
        emit_json(data)
        return
    for key in fields or data.keys():
        console.print(f"[bold]{key}[/bold]: {_cell(data.get(key))}", highlight=False)


def ok(message: str) -> None:
    console.print(message, highlight=False)
