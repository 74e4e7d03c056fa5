"""Tracking over HTTP: experiments, runs, params, metrics, run artifacts, datasets.

The class mirrors :class:`~modelyard.tracking.service.TrackingService` method for method
(see ``http.py``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import TypeAdapter

from modelyard import errors
from modelyard.client.http_transport import HttpTransport, _q
from modelyard.page import Page
from modelyard.tracking.entities import (
    Dataset,
    Experiment,
    MetricPoint,
    Run,
    RunArtifact,
    RunComparison,
)

if TYPE_CHECKING:
    from modelyard.client.http import HttpArtifacts


class HttpTracking:
    """:class:`~modelyard.tracking.service.TrackingService` over HTTP."""

    def __init__(self, t: HttpTransport, artifacts: HttpArtifacts) -> None:
        self.t = t
        self.artifacts = artifacts

    def create_experiment(
        self, name: str, *, description: str = "", project: str | None = None
    ) -> Experiment:
        body = {"name": name, "description": description, "project": project}
        return self.t.send("POST", "/experiments", Experiment, body)

    def get_experiment(self, name_or_id: str) -> Experiment:
        return self.t.get(f"/experiments/{_q(name_or_id)}", Experiment)

    def list_experiments(
        self,
        *,
        q: str | None = None,
        project: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        return self.t.get(
            "/experiments",
            Page[Experiment],
            q=q,
            project=project,
            limit=limit,
            page_token=page_token,
        )

    def start_run(
        self,
        experiment: str,
        *,
        name: str = "",
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Run:
        body = {
            "experiment": experiment,
            "name": name,
            "tags": dict(tags or {}),
            "params": dict(params or {}),
        }
        return self.t.send("POST", "/runs", Run, body)

    def get_run(self, run_id: str) -> Run:
        return self.t.get(f"/runs/{_q(run_id)}", Run)

    def end_run(self, run_id: str, status: str = "finished") -> Run:
        return self.t.send("POST", f"/runs/{_q(run_id)}/end", Run, {"status": status})

    def search_runs(
        self,
        experiment: str,
        *,
        filter_string: str = "",
        order_by: str | list[str] | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        order = [order_by] if isinstance(order_by, str) else list(order_by or [])
        return self.t.get(
            "/runs",
            Page[Run],
            experiment=experiment,
            filter=filter_string,
            order_by=order,
            limit=limit,
            page_token=page_token,
        )

    def compare_runs(self, run_ids: Iterable[str]) -> RunComparison:
        return self.t.get("/runs/compare", RunComparison, run_id=list(run_ids))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self.t.request("POST", f"/runs/{_q(run_id)}/params", json={"values": dict(params)})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.t.request("POST", f"/runs/{_q(run_id)}/tags", json={"values": dict(tags)})

    def log_metrics(
        self,
        run_id: str,
        metrics: Iterable[MetricPoint | Mapping[str, Any]] | Mapping[str, Any],
        *,
        step: int = 0,
    ) -> None:
        if isinstance(metrics, Mapping):
            points = [{"key": k, "value": v, "step": step} for k, v in metrics.items()]
        else:
            points = [
                m.model_dump(mode="json", exclude_none=True)
                if isinstance(m, MetricPoint)
                else dict(m)
                for m in metrics
            ]
        self.t.request("POST", f"/runs/{_q(run_id)}/metrics", json={"metrics": points})

    def get_metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        return TypeAdapter(list[MetricPoint]).validate_json(
            self.t.request("GET", f"/runs/{_q(run_id)}/metrics/{_q(key)}").content
        )

    def log_artifact(
        self, run_id: str, path: str, data: bytes | str | os.PathLike[str]
    ) -> RunArtifact:
        content = data if isinstance(data, bytes) else Path(data).read_bytes()
        return RunArtifact.model_validate_json(
            self.t.request(
                "PUT", f"/runs/{_q(run_id)}/artifacts/{quote(path)}", content=content
            ).content
        )

    def list_artifacts(self, run_id: str) -> list[RunArtifact]:
        return TypeAdapter(list[RunArtifact]).validate_json(
            self.t.request("GET", f"/runs/{_q(run_id)}/artifacts").content
        )

    def get_artifact(self, run_id: str, path: str) -> bytes:
        return self.t.request("GET", f"/runs/{_q(run_id)}/artifacts/{quote(path)}").content

    def log_dataset(
        self,
        name: str,
        data: Any,
        *,
        source: str = "",
        run_id: str | None = None,
        context: str = "training",
    ) -> Dataset:
        """Upload the data as Parquet (or the given .csv/.parquet file), then register it."""
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            if isinstance(data, pd.DataFrame):
                path = Path(tmp) / "data.parquet"
                data.to_parquet(path, index=False)
            else:
                path = Path(data)
            fmt = "csv" if path.suffix.lower() == ".csv" else "parquet"
            digest = self.artifacts.put_file(path)
        body = {
            "name": name,
            "artifact_digest": digest,
            "file_format": fmt,
            "source": source,
            "run_id": run_id,
            "context": context,
        }
        return self.t.send("POST", "/datasets", Dataset, body)

    def get_dataset(self, name: str, version: int | None = None) -> Dataset:
        return self.t.get(f"/datasets/{_q(name)}", Dataset, version=version)

    def get_dataset_by_id(self, dataset_id: str) -> Dataset:
        return self.t.get(f"/datasets/by-id/{_q(dataset_id)}", Dataset)

    def list_datasets(
        self,
        *,
        name: str | None = None,
        q: str | None = None,
        limit: int = 100,
        page_token: str | None = None,
    ) -> Page[Dataset]:
        return self.t.get(
            "/datasets", Page[Dataset], name=name, q=q, limit=limit, page_token=page_token
        )

    def load_dataset(self, name: str, version: int | None = None) -> Any:
        import pandas as pd

        ds = self.get_dataset(name, version)
        if ds.artifact_digest is None:
            raise errors.NotFound(f"dataset {name} v{ds.version} was registered without its data")
        with tempfile.TemporaryDirectory() as tmp:
            path = self.artifacts.get_file(ds.artifact_digest, Path(tmp) / "data.parquet")
            return pd.read_parquet(path)
