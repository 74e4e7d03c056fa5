"""Reading an MLflow tracking server over its REST API (``/api/2.0/mlflow/...``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from modelyard.errors import InvalidInput, Unauthenticated
from modelyard.interop.mlflow_source import (
    MlflowArtifact,
    MlflowExperiment,
    MlflowModel,
    MlflowPoint,
    MlflowReadError,
    MlflowRun,
    MlflowUnreachable,
    MlflowVersion,
    copy_tree,
    inside,
    local_dir,
    millis,
)

PAGE = 1000
HISTORY_PAGE = 25000


def _pairs(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {i["key"]: i.get("value", "") for i in items or []}


def _artifact_proxy_path(uri: str) -> str | None:
    """The path under the server's artifact proxy of an ``mlflow-artifacts:`` URI."""
    if not uri.startswith("mlflow-artifacts:"):
        return None
    return urlsplit(uri).path.lstrip("/")


class MlflowServer:
    """An MLflow tracking server, read over its REST API (``/api/2.0/mlflow/...``)."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        parts = urlsplit(url.rstrip("/"))
        # credentials given in the URL (http://user:password@host) are sent, never shown
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        self.location = parts._replace(netloc=host).geturl()
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        self.http = httpx.Client(
            base_url=self.location, auth=auth, timeout=timeout, follow_redirects=True
        )
        try:
            self._probe()
        except BaseException:
            self.http.close()
            raise

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise MlflowUnreachable(
                f"cannot reach the MLflow server at {self.location} ({exc}); is `mlflow "
                "server` running there? Check the URL given to --from"
            ) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise MlflowReadError(
                f"MLflow at {self.location} answered {method} {path} with "
                f"{response.status_code}: {_message(response)}"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise MlflowReadError(
                f"MLflow at {self.location} answered {path} with something other than JSON"
            )
        return body

    def _probe(self) -> None:
        path = "/api/2.0/mlflow/experiments/search"
        response = self._send("POST", path, json={"max_results": 1})
        if response.status_code in (401, 403):
            raise Unauthenticated(
                f"the MLflow server at {self.location} refused the request "
                f"({response.status_code}: {_message(response)}); put its credentials in "
                "the URL: http://USER:PASSWORD@host:port"
            )
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        # an MLflow server with no experiment at all answers {}
        if not isinstance(body, dict) or (body and "experiments" not in body):
            raise InvalidInput(
                f"{self.location} is not an MLflow tracking server: {path} answered "
                f"{response.status_code}; give the URL `mlflow server` prints"
            )

    def _pages(
        self, method: str, path: str, key: str, body: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            request = {**body, **({"page_token": token} if token else {})}
            if method == "GET":
                page = self._json("GET", path, params=request)
            else:
                page = self._json("POST", path, json=request)
            yield from page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return

    def experiments(self) -> list[MlflowExperiment]:
        return [
            MlflowExperiment(
                id=str(e["experiment_id"]),
                name=e["name"],
                deleted=e.get("lifecycle_stage") == "deleted",
                tags=_pairs(e.get("tags")),
            )
            for e in self._pages(
                "POST",
                "/api/2.0/mlflow/experiments/search",
                "experiments",
                {"max_results": PAGE, "view_type": "ALL"},
            )
        ]

    def runs(self, experiment: MlflowExperiment) -> list[MlflowRun]:
        body = {
            "experiment_ids": [experiment.id],
            "run_view_type": "ALL",
            "max_results": PAGE,
            "order_by": ["attributes.start_time ASC"],
        }
        runs = []
        for r in self._pages("POST", "/api/2.0/mlflow/runs/search", "runs", body):
            info, data = r["info"], r.get("data", {})
            run_id = info.get("run_id") or info["run_uuid"]
            tags = _pairs(data.get("tags"))
            inputs = (r.get("inputs") or {}).get("dataset_inputs") or []
            outputs = (r.get("outputs") or {}).get("model_outputs") or []
            runs.append(
                MlflowRun(
                    id=run_id,
                    experiment_id=str(info["experiment_id"]),
                    name=info.get("run_name") or tags.get("mlflow.runName", ""),
                    status=info.get("status", "FINISHED"),
                    start_time=millis(info.get("start_time")),
                    end_time=millis(info.get("end_time")),
                    deleted=info.get("lifecycle_stage") == "deleted",
                    artifact_uri=info.get("artifact_uri", ""),
                    params=_pairs(data.get("params")),
                    tags=tags,
                    metric_keys=sorted({m["key"] for m in data.get("metrics", [])}),
                    dataset_inputs=[d.get("dataset", {}).get("name", "?") for d in inputs],
                    logged_models=[o["model_id"] for o in outputs if o.get("model_id")],
                )
            )
        return runs

    def metric_history(self, run: MlflowRun, key: str) -> list[MlflowPoint]:
        body = {"run_id": run.id, "metric_key": key, "max_results": HISTORY_PAGE}
        return [
            MlflowPoint(
                key=key,
                value=float(m.get("value", 0.0)),
                step=int(m.get("step", 0)),
                timestamp=int(m.get("timestamp", 0)),
            )
            for m in self._pages("GET", "/api/2.0/mlflow/metrics/get-history", "metrics", body)
        ]

    def artifacts(self, run: MlflowRun) -> list[MlflowArtifact]:
        return self._run_files(run.id, "")

    def _run_files(self, run_id: str, prefix: str) -> list[MlflowArtifact]:
        """Every file under ``prefix`` of a run's artifacts (paths from the run's root)."""
        found: list[MlflowArtifact] = []
        folders = [prefix]
        while folders:
            folder = folders.pop()
            params = {"run_id": run_id, **({"path": folder} if folder else {})}
            listing = self._json("GET", "/api/2.0/mlflow/artifacts/list", params=params)
            for f in listing.get("files", []):
                if f.get("is_dir"):
                    folders.append(f["path"])
                else:
                    size = f.get("file_size")
                    found.append(MlflowArtifact(f["path"], None if size is None else int(size)))
        return sorted(found, key=lambda a: a.path)

    def artifact_file(self, run: MlflowRun, path: str, scratch: Path) -> Path:
        target = scratch / "artifact"
        self._download("/get-artifact", target, params={"run_id": run.id, "path": path})
        return target

    def _download(self, path: str, target: Path, **kwargs: Any) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.http.stream("GET", path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise MlflowReadError(
                        f"MLflow at {self.location} answered GET {path} with "
                        f"{response.status_code}: {_message(response)}"
                    )
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise MlflowUnreachable(
                f"cannot reach the MLflow server at {self.location} ({exc}); is it still running?"
            ) from None

    def models(self) -> list[MlflowModel]:
        models = []
        for m in self._pages(
            "GET",
            "/api/2.0/mlflow/registered-models/search",
            "registered_models",
            {"max_results": PAGE},
        ):
            # search leaves the aliases out; get has them
            full = self._json(
                "GET", "/api/2.0/mlflow/registered-models/get", params={"name": m["name"]}
            )["registered_model"]
            models.append(
                MlflowModel(
                    name=full["name"],
                    description=full.get("description") or "",
                    tags=_pairs(full.get("tags")),
                    aliases={a["alias"]: int(a["version"]) for a in full.get("aliases", [])},
                )
            )
        return models

    def versions(self, model: MlflowModel) -> list[MlflowVersion]:
        quote_char = '"' if "'" in model.name else "'"
        body = {"filter": f"name={quote_char}{model.name}{quote_char}", "max_results": PAGE}
        versions = [
            MlflowVersion(
                name=v["name"],
                version=int(v["version"]),
                source=v.get("source", ""),
                run_id=v.get("run_id") or "",
                status=v.get("status", "READY"),
                description=v.get("description") or "",
                stage=v.get("current_stage") or "None",
                tags=_pairs(v.get("tags")),
            )
            for v in self._pages(
                "GET", "/api/2.0/mlflow/model-versions/search", "model_versions", body
            )
        ]
        return sorted(versions, key=lambda v: v.version)

    def download_version(self, version: MlflowVersion, dest: Path) -> None:
        uri = self._json(
            "GET",
            "/api/2.0/mlflow/model-versions/get-download-uri",
            params={"name": version.name, "version": str(version.version)},
        ).get("artifact_uri", "")
        proxied = _artifact_proxy_path(uri)
        if proxied is not None:
            count = self._download_proxied(proxied, dest)
        elif version.source.startswith("runs:/"):
            count = self._download_run_folder(version.source, dest)
        elif local_dir(uri) is not None:  # a server on this machine, on local files
            count = copy_tree(local_dir(uri), dest)  # type: ignore[arg-type]
        else:
            raise MlflowReadError(
                f"the files of {version.name} version {version.version} are at {uri!r}, which "
                "the server does not serve; start the MLflow server with its artifact proxy "
                "(--artifacts-destination) or copy the files where it serves them"
            )
        if count == 0:
            raise MlflowReadError(
                f"MLflow has no files for {version.name} version {version.version} at "
                f"{uri or version.source}: they were deleted or never uploaded"
            )

    def _download_proxied(self, folder: str, dest: Path) -> int:
        """Download every file under ``folder`` of the artifact proxy into ``dest``."""
        count = 0
        pending = [""]
        while pending:
            sub = pending.pop()
            where = f"{folder}/{sub}".rstrip("/")
            listing = self._json(
                "GET", "/api/2.0/mlflow-artifacts/artifacts", params={"path": where}
            )
            for f in listing.get("files", []):
                rel = f"{sub}/{f['path']}".lstrip("/")
                if f.get("is_dir"):
                    pending.append(rel)
                    continue
                url = "/api/2.0/mlflow-artifacts/artifacts/" + quote(f"{folder}/{rel}")
                self._download(url, inside(dest, rel))
                count += 1
        return count

    def _download_run_folder(self, source: str, dest: Path) -> int:
        run_id, _, sub = source[len("runs:/") :].partition("/")
        count = 0
        prefix = sub.strip("/")
        for artifact in self._run_files(run_id, prefix):
            rel = artifact.path[len(prefix) :].lstrip("/") if prefix else artifact.path
            self._download(
                "/get-artifact", inside(dest, rel), params={"run_id": run_id, "path": artifact.path}
            )
            count += 1
        return count


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.text[:200]
