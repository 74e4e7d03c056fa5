"""A minimal hand-written FastAPI endpoint: POST /invocations with MLflow's ``dataframe_split``
body, validated by pydantic, predicted by scikit-learn, answered as JSON.

The model is a joblib file named by ``BENCH_MODEL_PATH``:

    BENCH_MODEL_PATH=model.joblib uvicorn fastapi_app:app --app-dir bench/serving
"""

from __future__ import annotations

import os

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

MODEL = joblib.load(os.environ["BENCH_MODEL_PATH"])


class DataframeSplit(BaseModel):
    columns: list[str]
    data: list[list[float]]


class Body(BaseModel):
    dataframe_split: DataframeSplit


app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/invocations")
def invocations(body: Body) -> dict:
    df = pd.DataFrame(body.dataframe_split.data, columns=body.dataframe_split.columns)
    return {"predictions": MODEL.predict(df).tolist()}
