"""Artifact routes: upload and download content-addressed blobs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from modelyard.api.deps import editor, viewer
from modelyard.api.requests import ApiRoute
from modelyard.api.responses import OctetStreamResponse, problems
from modelyard.artifacts import parse_digest
from modelyard.errors import InvalidInput, PayloadTooLarge
from modelyard.workspace import Workspace

router = APIRouter(tags=["artifacts"], route_class=ApiRoute)


def _digest(value: str) -> str:
    try:
        parse_digest(value)
    except InvalidInput as exc:
        raise ValueError(exc.detail) from None
    return value


#: A blob's digest as a request names it (the store's message when it is not one).
Digest = Annotated[
    str,
    AfterValidator(_digest),
    WithJsonSchema(
        {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$", "description": "sha256:<64 hex>"}
    ),
]


class Uploaded(BaseModel):
    digest: str
    created: bool
    size: int | None = None


@router.put(
    "/artifacts/{digest}",
    status_code=201,
    response_model=Uploaded,
    responses={200: {"model": Uploaded, "description": "stored already"}, **problems(413)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def upload(digest: Digest, request: Request, ws: Workspace = Depends(editor)) -> Response:
    """Store the request body; refused unless it hashes to ``digest``."""
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


@router.head("/artifacts/{digest}", response_class=Response)
def exists(digest: Digest, ws: Workspace = Depends(viewer)) -> Response:
    return Response(status_code=200 if ws.artifacts.exists(digest) else 404)


#: Blobs up to this size are read and checked whole before the answer starts, so that a
#: damaged one gets a clean problem (500, "Artifact corrupted") instead of a connection cut
#: mid-stream; larger ones are checked as they stream.
VERIFY_FIRST_BYTES = 16 * 1024 * 1024


@router.get("/artifacts/{digest}", response_class=OctetStreamResponse)
def download(digest: Digest, ws: Workspace = Depends(viewer)) -> Response:
    """The blob's bytes, checked against the digest."""
    size = ws.artifacts.size(digest)
    if size <= VERIFY_FIRST_BYTES:
        return Response(ws.artifacts.get_bytes(digest), media_type="application/octet-stream")
    chunks: Iterator[bytes] = ws.artifacts.open(digest)
    return StreamingResponse(
        chunks, media_type="application/octet-stream", headers={"content-length": str(size)}
    )
