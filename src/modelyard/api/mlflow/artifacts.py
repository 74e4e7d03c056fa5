"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts``) over modelyard's files.

MLflow's client uploads and downloads every ``mlflow-artifacts:/`` file here:
``GET /artifacts?path=<dir>`` lists a directory, ``GET``/``PUT``/``DELETE
/artifacts/<path>`` read, write and delete a file (a delete takes a directory with it). The
paths are the locations the tracking and registry routes hand out
(modelyard.tracking.locations): a run's files, a logged model's, a registered version's
(read-only). Files land in modelyard's artifact store, content-addressed.

Multipart uploads (``/mpu/...``) are answered "not supported", the answer on which MLflow's
client falls back to one ``PUT``: its client only tries them for files of 500 MB and more,
and only when told to.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from modelyard.api.artifacts import VERIFY_FIRST_BYTES
from modelyard.api.deps import editor, viewer
from modelyard.api.mlflow.protocol import INVALID_PARAMETER_VALUE, MlflowError, MlflowRoute
from modelyard.api.mlflow.protocol import error_response as mlflow_error
from modelyard.artifacts.scratch import scratch_name
from modelyard.errors import PayloadTooLarge
from modelyard.tracking.locations import (
    ArtifactFile,
    check_writable,
    delete_files,
    file_at,
    list_directory,
    parse_artifact_path,
    store_file,
)
from modelyard.workspace import Workspace

log = logging.getLogger("modelyard.api.mlflow")

# The prefix is on the router itself: ``install`` copies these routes under a router built
# with ``routes=``, which keeps each route's path as it is (its own prefix is not applied).
router = APIRouter(route_class=MlflowRoute)

#: An upload up to this size is held in memory; a larger one is spooled to a scratch file.
MEMORY_BODY_BYTES = 8 * 1024 * 1024
#: MLflow's client falls back to a single PUT on exactly this message (its
#: ``_UnsupportedMultipartUploadException.MESSAGE``).
MULTIPART_UNSUPPORTED = "Multipart upload is not supported for the current artifact repository"


def _ok() -> Response:
    return JSONResponse({})


@router.get("/artifacts")
def list_artifacts(path: str | None = Query(None), ws: Workspace = Depends(viewer)) -> Response:
    """The directory ``path`` one level down: ``{"files": [{path, is_dir, file_size}]}``."""
    if not path:
        raise MlflowError(
            INVALID_PARAMETER_VALUE,
            "give the directory to list as path=<experiment>/<run id>/artifacts[/<dir>] "
            "(or a logged model's or a registered version's); the root is not listed",
        )
    entries = list_directory(ws, parse_artifact_path(path))
    files: list[dict[str, Any]] = [
        {"path": e.name, "is_dir": True}
        if e.is_dir
        else {"path": e.name, "is_dir": False, "file_size": e.size}
        for e in entries
    ]
    # MLflow's server leaves an empty list out (protobuf JSON); its client reads either
    return JSONResponse({"files": files} if files else {})


@router.get("/artifacts/{path:path}")
def download(path: str, ws: Workspace = Depends(viewer)) -> Response:
    """The bytes of one file, checked against its digest."""
    return file_response(ws, file_at(ws, parse_artifact_path(path)))


def file_response(ws: Workspace, found: ArtifactFile) -> Response:
    """A stored file's bytes: read and verified whole when small (a damaged blob is then a
    clean error), else streamed and verified on the way."""
    headers = {"x-content-type-options": "nosniff"}
    if found.size <= VERIFY_FIRST_BYTES:
        body = ws.artifacts.get_bytes(found.digest)
        return Response(body, media_type="application/octet-stream", headers=headers)
    return StreamingResponse(
        ws.artifacts.open(found.digest),
        media_type="application/octet-stream",
        headers={**headers, "content-length": str(found.size)},
    )


@router.put("/artifacts/{path:path}")
async def upload(path: str, request: Request, ws: Workspace = Depends(editor)) -> Response:
    """Store the body as the file ``path`` of a run or a logged model."""
    loc = parse_artifact_path(path)
    if not loc.path:
        raise MlflowError(INVALID_PARAMETER_VALUE, f"give a file path inside {loc} to upload to")
    # Refused before the body is read: a missing run, a read-only version, an oversized body.
    await run_in_threadpool(check_writable, ws, loc)
    limit = ws.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"upload of {declared} bytes is over the {limit} byte limit; "
            "raise MODELYARD_MAX_UPLOAD_BYTES on the server to accept it"
        )
    with contextlib.ExitStack() as stack:
        try:
            data = await _receive(request, limit, ws.settings.staging_dir, stack)
        except ClientDisconnect:  # an upload cancelled: not a server fault, nothing stored
            log.info("client disconnected during the upload of %s", path)
            return Response(status_code=400)
        await run_in_threadpool(store_file, ws, loc, data)
    return _ok()


async def _receive(
    request: Request, limit: int, scratch: Path, stack: contextlib.ExitStack
) -> bytes | os.PathLike[str]:
    """The request body: bytes when small, else the path of a scratch file holding it
    (removed when ``stack`` closes; a killed process leaves it for the next sweep)."""
    chunks: list[bytes] = []
    held = 0
    spool: Any = None
    spool_path: Path | None = None
    async for chunk in request.stream():
        held += len(chunk)
        if held > limit:
            raise PayloadTooLarge(
                f"upload is over the {limit} byte limit; raise MODELYARD_MAX_UPLOAD_BYTES"
            )
        if spool is None and held > MEMORY_BODY_BYTES:
            scratch.mkdir(parents=True, exist_ok=True)
            spool_path = scratch / scratch_name("mlflow-upload")
            stack.callback(spool_path.unlink, missing_ok=True)
            spool = stack.enter_context(spool_path.open("wb"))
            spool.writelines(chunks)
            chunks = []
        if spool is not None:
            spool.write(chunk)
        else:
            chunks.append(chunk)
    if spool is None:
        return b"".join(chunks)
    spool.close()
    assert spool_path is not None
    return spool_path


@router.delete("/artifacts/{path:path}")
def delete(path: str, ws: Workspace = Depends(editor)) -> Response:
    """Delete the file ``path``, or everything under it."""
    delete_files(ws, parse_artifact_path(path))
    return _ok()


@router.post("/mpu/{step}/{path:path}")
def multipart(step: str, path: str, ws: Workspace = Depends(editor)) -> Response:
    """Multipart uploads are not offered: MLflow's client then uploads with one PUT."""
    return mlflow_error("NOT_IMPLEMENTED", MULTIPART_UNSUPPORTED, 501)
