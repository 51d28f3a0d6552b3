"""The local store's signed links: ``GET /recordings/{bucket}/{key}?expires=…&signature=…``.

Not part of either dialect (no credentials: the signature is the credential), so not in the
schema. A wrong or expired signature is a 403, as S3 answers; ``Range`` is honoured.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import FileResponse, Response

from transcripts.errors import Forbidden, NotFound
from transcripts.recordings import LOCAL_ROUTE, LocalRecordingStore
from transcripts.state import app_state

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

MEDIA_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".mp4": "audio/mp4",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".webm": "audio/webm",
}


@router.get(LOCAL_ROUTE + "/{bucket}/{key:path}")
async def download_recording(
    request: Request,
    bucket: str,
    key: str,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(max_length=64)],
) -> Response:
    store = app_state(request.app).recordings
    if not isinstance(store, LocalRecordingStore):
        raise NotFound()
    if not store.verify(bucket, key, expires, signature):
        raise Forbidden("The link is invalid or has expired.")
    path = store.path_for(bucket, key)
    if path is None or not path.is_file():
        raise NotFound("Recording not found.")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=300"},
    )
