"""PII redaction of what a read answers (``?redact=pii``), for every route that answers a
transcript: the reads, the exports and the live stream each redact with these, so the same
text comes out of every one of them in both dialects.

Stored text is never altered here (a character with ``pii_redaction: "store"`` has its turns
redacted before they are written: ``services.sessions.append_turns``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import parse_qsl

from transcripts.domain import SessionRecord
from transcripts.errors import BadRequest
from transcripts.redaction import redact_many, redact_pii

__all__ = [
    "REDACT_PII",
    "redact_record",
    "redact_text",
    "redaction_requested",
    "requested_in_query",
]

REDACT_PII = "pii"
_INVALID = "Must be pii."


def redaction_requested(values: Iterable[str]) -> bool:
    """Whether the ``redact`` query values ask for redaction; any value but ``pii`` is a 400
    (a caller who asked for redaction must never get raw text because of a typo)."""
    given = list(values)
    if any(value != REDACT_PII for value in given):
        raise BadRequest("Invalid redact.", {"redact": [_INVALID]})
    return bool(given)


def requested_in_query(query_string: bytes) -> bool:
    """``redaction_requested`` for a raw query string (an ASGI scope's)."""
    if not query_string:
        return False
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return redaction_requested(value for name, value in pairs if name == "redact")


def redact_record(record: SessionRecord) -> SessionRecord:
    """The record with every turn's text redacted (its metadata and counts as they are)."""
    if record.turns is None or not record.turns.text:
        return record
    return replace(record, turns=record.turns._replace(text=redact_many(record.turns.text)))


def redact_text(text: str) -> str:
    """One turn's text redacted, for answers built turn by turn (the live stream)."""
    return redact_pii(text)
