"""``modelyard predict``: batch scoring of a Parquet or CSV file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from modelyard.cli.context import client
from modelyard.cli.output import ok


def predict(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="models:/NAME@ALIAS or models:/NAME/VERSION"),
    input: Path = typer.Option(..., "--input", "-i", help="a .parquet or .csv file"),
    output: Path = typer.Option(..., "--output", "-o", help="a .parquet or .csv file to write"),
    chunk_rows: int = typer.Option(10_000, help="rows predicted at a time", min=1),
    trusted: bool = typer.Option(False, "--trusted", help="allow pickled Python models"),
) -> None:
    """Score every row of a file; interrupted runs resume where they stopped."""
    from modelyard.serving.batch import score_file, total_rows

    c = client(ctx)
    version = c.get_version(model)
    predictor = c.load_model(version, trusted=trusted)
    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("rows", total=total_rows(input))
        result = score_file(
            predictor,
            input,
            output,
            model=f"{version.model} v{version.version}",
            chunk_rows=chunk_rows,
            progress=lambda n: bar.advance(task, n),
        )
    resumed = (
        f", {result.resumed_chunks} chunk(s) reused from an earlier run"
        if (result.resumed_chunks)
        else ""
    )
    ok(
        f"wrote {result.rows} rows to {result.output} with {version.model} v{version.version}"
        f"{resumed}"
    )
