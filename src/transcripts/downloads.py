"""The local store's signed links: ``/recordings/{bucket}/{key}?expires=…&signature=…``.

``GET`` (and ``HEAD``, the same headers without the body) serves a recording, honouring
``Range``; ``PUT`` stores one, through the link ``POST …/recording/upload/`` hands out. A
link's signature covers its method, so a link to read cannot write. Not part of either
dialect (no credentials: the signature is the credential), so not in the schema. A wrong or
expired signature is a 403, as S3 answers.

An upload is streamed to a temporary file beside its destination and moved into place only
when complete, so a reader never sees half a recording and a refused upload leaves nothing.
Uploads are capped at ``RECORDINGS_MAX_UPLOAD_BYTES`` (413). An upload link stays valid for
its whole lifetime, but once its session has registered the recording ``READY`` an upload
to it is a 409: a settled recording is never replaced.
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from starlette.responses import FileResponse, Response

from transcripts.errors import Forbidden, NotFound, PayloadTooLarge
from transcripts.recordings import LOCAL_ROUTE, LocalRecordingStore, media_type
from transcripts.services.sessions import refuse_overwriting_a_ready_recording
from transcripts.state import app_state

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

LINK_PATH = LOCAL_ROUTE + "/{bucket}/{key:path}"
Expires = Annotated[int, Query()]
Signature = Annotated[str, Query(max_length=64)]


def _verified(
    request: Request, bucket: str, key: str, expires: int, signature: str
) -> LocalRecordingStore:
    store = app_state(request.app).recordings
    if not isinstance(store, LocalRecordingStore):
        raise NotFound()
    if not store.verify(request.method, bucket, key, expires, signature):
        raise Forbidden("The link is invalid or has expired.")
    return store


@router.api_route(LINK_PATH, methods=["GET", "HEAD"])
async def download_recording(
    request: Request, bucket: str, key: str, expires: Expires, signature: Signature
) -> Response:
    store = _verified(request, bucket, key, expires, signature)
    path = store.path_for(bucket, key)
    if path is None or not path.is_file():
        raise NotFound("Recording not found.")
    return FileResponse(
        path, media_type=media_type(key), headers={"Cache-Control": "private, max-age=300"}
    )


async def _refuse_a_settled_recording(request: Request, bucket: str, key: str) -> None:
    # A short transaction of its own each time: no pooled connection is held while an
    # upload of up to RECORDINGS_MAX_UPLOAD_BYTES streams in.
    async with app_state(request.app).database.sessionmaker() as db:
        await refuse_overwriting_a_ready_recording(db, bucket, key)


@router.put(LINK_PATH)
async def upload_recording(
    request: Request, bucket: str, key: str, expires: Expires, signature: Signature
) -> Response:
    store = _verified(request, bucket, key, expires, signature)
    path = store.path_for(bucket, key)
    if path is None:
        raise NotFound()
    await _refuse_a_settled_recording(request, bucket, key)
    limit = store.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"A recording may not exceed {limit} bytes.")
    await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
    try:
        received = 0
        async with await anyio.open_file(partial, "wb") as file:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLarge(f"A recording may not exceed {limit} bytes.")
                await file.write(chunk)
        # Again: the session may have registered its recording while this one streamed in.
        await _refuse_a_settled_recording(request, bucket, key)
        await anyio.to_thread.run_sync(os.replace, partial, path)
    finally:
        await anyio.Path(partial).unlink(missing_ok=True)
    return Response(status_code=200)
