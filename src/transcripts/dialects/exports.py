"""Transcript exports (WebVTT, SubRip, text, Markdown, JSON Lines), shared by both dialects.

A route reads the session row first, scoped like the transcript read (so a session that is not
the caller's is the same 404 as one that does not exist), answers a conditional request from
that row alone, and otherwise streams the body while it reads the turns a batch at a time:
a 10,000-turn transcript is never held whole, in the database's answer or in the body.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import Path, Query, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response, StreamingResponse

from transcripts.caching import (
    if_none_match,
    matches,
    not_modified,
    private_cache_headers,
    transcript_etag,
)
from transcripts.domain import Credentials
from transcripts.errors import BadRequest, NotFound
from transcripts.exports import (
    EXPORT_FORMATS,
    ExportFormat,
    aiter_export,
    content_disposition,
    export_spec,
)
from transcripts.redaction import redact_pii
from transcripts.state import AppState

__all__ = [
    "BATCH_TURNS",
    "FORMAT_PARAMETER",
    "DownloadQuery",
    "FormatPath",
    "RedactQuery",
    "export_content",
    "export_response",
]

# Turns read per statement while an export streams.
BATCH_TURNS = 500
_QUERY_NAMES = frozenset({"download", "redact"})
_FORMAT_LIST = ", ".join(EXPORT_FORMATS)


class _ExportFormatConvertor(Convertor[str]):
    """A path segment that is one of the export formats, and nothing else: so another route
    under ``…/transcript/`` (``stream``, say) is never taken for an unknown format, whichever
    was declared first. Any other segment matches no route: the dialect's plain 404."""

    regex = "|".join(EXPORT_FORMATS)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("export_format", _ExportFormatConvertor())
# How a route declares the format in its path ("{format}" in the OpenAPI document).
FORMAT_PARAMETER = "{format:export_format}"

FormatPath = Annotated[
    str,
    Path(
        alias="format",
        max_length=16,
        description=f"The export format: one of {_FORMAT_LIST}.",
        json_schema_extra={"enum": list(EXPORT_FORMATS)},
    ),
]
DownloadQuery = Annotated[
    bool,
    Query(description="true (or 1): Content-Disposition: attachment, with a file name."),
]
RedactQuery = Annotated[
    Literal["pii"] | None,
    Query(
        description=(
            "pii: e-mail addresses, phone numbers, card numbers, IBANs and national ids are"
            " replaced by [EMAIL], [PHONE], [CARD], [IBAN], [ID]."
        )
    ),
]


def _format(name: str) -> ExportFormat:
    try:
        return export_spec(name).format
    except ValueError:  # pragma: no cover - the path's convertor admits only the formats
        raise NotFound("Export format not found.") from None


def _refuse_unknown_parameters(request: Request) -> None:
    # A misspelt ?redact would otherwise export the unredacted text without a word.
    unknown = sorted(set(request.query_params) - _QUERY_NAMES)
    if unknown:
        errors = {name: ["Not a parameter of this export."] for name in unknown}
        raise BadRequest(f"Invalid {unknown[0]}.", errors)


async def export_response(
    state: AppState,
    credentials: Credentials,
    session_id: uuid.UUID,
    format_name: str,
    request: Request,
    *,
    dialect: str,
    download: bool,
    redact: Literal["pii"] | None,
) -> Response:
    fmt = _format(format_name)
    _refuse_unknown_parameters(request)
    record = await state.transcripts.session(credentials, session_id, with_turns=False)
    representation = f"{dialect}.export.{fmt}" + (f".redact={redact}" if redact else "")
    etag = transcript_etag(record, representation, weak=False)
    condition = if_none_match(request.scope)
    if etag is not None and condition is not None and matches(condition, etag):
        return not_modified(etag)
    headers = private_cache_headers(etag)
    if download:
        headers["Content-Disposition"] = content_disposition(record.session_id, fmt)
    body = aiter_export(
        record,
        fmt,
        state.transcripts.turn_batches(record, BATCH_TURNS),
        transform=redact_pii if redact == "pii" else None,
    )
    return StreamingResponse(body, media_type=EXPORT_FORMATS[fmt].media_type, headers=headers)


def export_content() -> dict[str, Any]:
    """The 200 answer of an export route in the OpenAPI document: one media type a format."""
    return {
        "description": (
            "The transcript in the format asked for (streamed). A finalized session's answer"
            " carries an ETag and Cache-Control: private."
        ),
        "content": {
            spec.media_type.split(";")[0]: {"schema": {"type": "string"}}
            for spec in EXPORT_FORMATS.values()
        },
    }
