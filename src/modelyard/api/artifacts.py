"""Artifact routes: upload and download content-addressed blobs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from modelyard.api.deps import editor, viewer
from modelyard.artifacts import parse_digest
from modelyard.errors import PayloadTooLarge
from modelyard.workspace import Workspace

router = APIRouter(tags=["artifacts"])


@router.put("/artifacts/{digest}", status_code=201)
async def upload(digest: str, request: Request, ws: Workspace = Depends(editor)) -> Response:
    """Store the request body; refused unless it hashes to ``digest``."""
    parse_digest(digest)
    limit = ws.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"upload of {declared} bytes is over the {limit} byte limit; "
            "raise MODELYARD_MAX_UPLOAD_BYTES on the server to accept it"
        )
    if await run_in_threadpool(ws.artifacts.exists, digest):
        # Drain the body so the connection stays usable, then skip the write.
        async for _ in request.stream():
            pass
        return JSONResponse({"digest": digest, "created": False}, status_code=200)
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"upload is over the {limit} byte limit; raise MODELYARD_MAX_UPLOAD_BYTES"
                )
            spool.write(chunk)
        spool.seek(0)
        await run_in_threadpool(ws.artifacts.put, spool, expected=digest)
    return JSONResponse({"digest": digest, "created": True, "size": size}, status_code=201)


@router.head("/artifacts/{digest}")
def exists(digest: str, ws: Workspace = Depends(viewer)) -> Response:
    return Response(status_code=200 if ws.artifacts.exists(digest) else 404)


@router.get("/artifacts/{digest}")
def download(digest: str, ws: Workspace = Depends(viewer)) -> StreamingResponse:
    """The blob's bytes; the stream is checked against the digest as it is read."""
    size = ws.artifacts.size(digest)
    chunks: Iterator[bytes] = ws.artifacts.open(digest)
    return StreamingResponse(
        chunks, media_type="application/octet-stream", headers={"content-length": str(size)}
    )
