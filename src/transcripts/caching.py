"""Conditional reads of finalized transcripts: ``ETag``, ``If-None-Match`` and 304.

A finalized session's transcript no longer changes (appends after finalize are refused), so
what a read answers is fixed by the session's row: the tag is a digest of that row's fields
(``SessionRecord`` without its turns: counters, times, usage, recording, character), the
representation asked for (dialect, export format, redaction) and the service's version. A
conditional request therefore costs the session row alone, never the turns, and two replicas
or a restarted process agree on every tag. The presigned recording link is made afresh on
every read and is not part of the tag; a JSON read that carries one answers a weak tag
(``W/``), because its bytes differ from one read to the next while its meaning does not.

A session in progress answers no tag and never a 304.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import fields

import orjson
from starlette.responses import Response
from starlette.types import Scope

from transcripts import __version__
from transcripts.domain import SessionRecord

__all__ = [
    "if_none_match",
    "matches",
    "not_modified",
    "private_cache_headers",
    "transcript_etag",
]

# Bump when what a read answers for the same stored row changes within one release.
_REPRESENTATION_VERSION = "1"
_ROW_VALUES = operator.attrgetter(
    *(field.name for field in fields(SessionRecord) if field.name != "turns")
)


def transcript_etag(record: SessionRecord, representation: str, *, weak: bool) -> str | None:
    """The entity tag of ``representation`` of a finalized session; None in progress."""
    if record.finalized_at is None:
        return None
    # A few microseconds: the hot read pays it on every finalized transcript.
    identity = (__version__, _REPRESENTATION_VERSION, representation, _ROW_VALUES(record))
    digest = hashlib.blake2b(orjson.dumps(identity, default=str), digest_size=16).hexdigest()
    return f'W/"{digest}"' if weak else f'"{digest}"'


def if_none_match(scope: Scope) -> str | None:
    """The request's ``If-None-Match`` header, if it sent one."""
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            return str(value.decode("latin-1"))
    return None


def _opaque(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def matches(condition: str, etag: str) -> bool:
    """RFC 9110's weak comparison, which ``If-None-Match`` uses: ``*`` or any listed tag
    whose opaque part equals ``etag``'s."""
    if condition.strip() == "*":
        return True
    wanted = _opaque(etag)
    return any(_opaque(candidate) == wanted for candidate in condition.split(","))


def private_cache_headers(etag: str | None) -> dict[str, str]:
    """What a finalized read answers: its tag, and that only the caller's cache may keep it
    (the answer depends on who asked)."""
    if etag is None:
        return {}
    return {"ETag": etag, "Cache-Control": "private"}


def not_modified(etag: str) -> Response:
    """304: no body, the same tag and caching headers as the 200 it stands for."""
    return Response(status_code=304, headers=private_cache_headers(etag))
