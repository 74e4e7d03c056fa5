"""Continuous training for a churn model: ingest, validate, train, evaluate, gate, promote.

The pipeline retrains on the newest version of a registered dataset, checks the data, trains a
logistic regression (optionally tuned with optuna), scores the candidate and the serving
champion on the same holdout, and moves the ``champion`` alias only if every quality gate
passes. Registered as a pipeline, it runs on a trigger: a schedule, new data, or a monitoring
alert (see README.md beside this file and tests/e2e/test_continuous_training.py).

``ingest``, ``evaluate`` and ``deploy`` are not cached: they read "the newest" data, compare
with whatever the champion is now, and move an alias. The steps between are cached by the
data they get, so the same data never retrains twice.

    modelyard pipelines register churn-retrain examples.churn_retrain.pipeline:churn_retrain
    modelyard pipelines run churn-retrain --param dataset=churn-train
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from modelyard.pipelines import StepContext, pipeline, step
from modelyard.pipelines.gates import (
    GateReport,
    MetricThreshold,
    NoWorseThanChampion,
    QualityGate,
    evaluate_candidate,
    promote,
)
from modelyard.pipelines.tuning import tune
from modelyard.pipelines.validation import DataChecks, require_valid

FEATURES = ["tenure", "spend", "support_calls", "discount"]
TARGET = "churned"
MODEL = "churn"

CHECKS = DataChecks(
    min_rows=200,
    columns={**dict.fromkeys(FEATURES, "number"), TARGET: "integer"},
    max_missing={"*": 0.05},
    ranges={"support_calls": (0, None), "discount": (0, 1)},
    max_duplicates=0.05,
)
GATE = QualityGate(
    [MetricThreshold("accuracy", ">=", 0.7), NoWorseThanChampion("accuracy", margin=0.02)]
)


def make_data(rows: int, *, seed: int, tenure_shift: float = 0.0) -> pd.DataFrame:
    """Synthetic customers; ``tenure_shift`` moves the tenure distribution (drift)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(24 + tenure_shift, 8, rows),
            "spend": rng.lognormal(3.5, 0.4, rows),
            "support_calls": rng.poisson(2, rows).astype(float),
            "discount": rng.uniform(0, 0.3, rows),
        }
    )
    logit = -0.12 * (frame.tenure - 24 - tenure_shift) + 0.6 * (frame.support_calls - 2)
    frame[TARGET] = (logit + rng.normal(0, 1, rows) > 0).astype(int)
    return frame


@step(stage="ingest", cache=False)
def ingest(dataset: str, ctx: StepContext) -> pd.DataFrame:
    """The newest version of ``dataset``, linked to this run as training data."""
    data = ctx.ws.tracking.load_dataset(dataset)
    ctx.log_dataset(dataset, data)
    ctx.log(f"{dataset}: {len(data)} rows")
    return data


@step(stage="preprocess")
def validate(data: pd.DataFrame) -> pd.DataFrame:
    """Stop the pipeline with a readable report when the data is not fit to train on."""
    require_valid(data, CHECKS)
    return data


@step(stage="preprocess")
def split(data: pd.DataFrame, holdout_share: float = 0.25) -> dict[str, pd.DataFrame]:
    mask = np.random.default_rng(0).random(len(data)) < holdout_share
    return {"train": data[~mask], "holdout": data[mask]}


@step(stage="train")
def train(parts: dict[str, pd.DataFrame], trials: int, ctx: StepContext) -> LogisticRegression:
    """Fit; with ``trials`` > 0, tune C first (every trial recorded as a run)."""
    train_df = parts["train"]
    X, y = train_df[FEATURES], train_df[TARGET]
    c = 1.0
    if trials > 0:

        def objective(params: dict[str, Any]) -> float:
            fitted = LogisticRegression(C=params["C"], max_iter=500).fit(X, y)
            return float(fitted.score(parts["holdout"][FEATURES], parts["holdout"][TARGET]))

        result = tune(
            ctx.ws,
            objective,
            space={"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}},
            n_trials=trials,
            experiment=f"{MODEL}-tuning",
            parent_run_id=ctx.tracking_run_id,
        )
        c = float(result.best_params["C"])
        ctx.log(f"tuned C={c:.4g} ({trials} trials)")
    return LogisticRegression(C=c, max_iter=500).fit(X, y)


@step(stage="train")
def register(model: LogisticRegression, parts: dict[str, pd.DataFrame], ctx: StepContext) -> str:
    """Register the candidate with its lineage (this run, its datasets, the code version)."""
    version = ctx.register_model(model, MODEL, input_example=parts["train"][FEATURES].head(5))
    return version.uri


@step(stage="evaluate", cache=False)
def evaluate(candidate: str, parts: dict[str, pd.DataFrame], ctx: StepContext) -> GateReport:
    report = evaluate_candidate(ctx.ws, candidate, parts["holdout"], TARGET, GATE)
    ctx.log(report.summary())
    return report


@step(stage="deploy", cache=False)
def deploy(report: GateReport, ctx: StepContext) -> dict[str, Any]:
    """Move ``champion`` to the candidate if it passed; the endpoint follows the alias.

    The lead time from the triggering event is taken from the trigger's record of this run.
    """
    promotion = promote(ctx.ws, report, pipeline_run_id=ctx.run_id)
    ctx.log(f"promoted={promotion.promoted} {report.summary()}")
    return {"promoted": promotion.promoted, "version": promotion.version}


@pipeline(name="churn-retrain")
def churn_retrain(dataset: str = "churn-train", trials: int = 0) -> None:
    """Retrain the churn model on the newest data; promote it only through the gates."""
    data = validate(ingest(dataset))
    parts = split(data)
    model = train(parts, trials)
    candidate = register(model, parts)
    deploy(evaluate(candidate, parts))


def main(argv: list[str] | None = None) -> None:
    """Write synthetic customers to a CSV file: ``python -m examples.churn_retrain.pipeline``."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("output", type=Path, help="the .csv file to write")
    parser.add_argument("--rows", type=int, default=3000, help="customers (default 3000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--tenure-shift", type=float, default=0.0, help="months added to tenure (drift)"
    )
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    make_data(args.rows, seed=args.seed, tenure_shift=args.tenure_shift).to_csv(
        args.output, index=False
    )
    print(f"wrote {args.rows} customers to {args.output}")


if __name__ == "__main__":
    main()
