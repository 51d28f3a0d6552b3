"""SessionRecord -> Anam's Session and SessionTranscript. Pure functions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from transcripts.domain import LiveSession, LiveTurn, SessionPage, SessionRecord
from transcripts.pagination import encode_cursor

__all__ = [
    "anam_live_finalized",
    "anam_live_turn",
    "anam_session",
    "anam_session_list",
    "anam_transcript",
    "iso_millis",
]

ACTIVE, COMPLETED = "ACTIVE", "COMPLETED"


def iso_millis(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and Z, as Anam writes it: 2026-04-20T09:00:01.000Z."""
    # isoformat truncates to milliseconds, and is several times cheaper than strftime.
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _optional(moment: datetime | None) -> str | None:
    return None if moment is None else iso_millis(moment)


def anam_transcript(record: SessionRecord) -> dict[str, Any]:
    turns = record.transcript
    started = record.created_at
    # A timestamp per message is most of this function's cost at 10,000 turns: each is the
    # naive UTC start plus the offset, written straight by isoformat.
    start = started.replace(tzinfo=None)
    messages = [
        {
            "role": "persona",
            "message": text,
            "timestamp": (start + timedelta(seconds=ts)).isoformat(timespec="milliseconds") + "Z",
            "speakingDurationSeconds": speaking,
            "wasInterrupted": interrupted,
        }
        if role == "assistant"
        else {
            "role": "user",
            "message": text,
            "timestamp": (start + timedelta(seconds=ts)).isoformat(timespec="milliseconds") + "Z",
            "speakingDurationSeconds": speaking,
        }
        for role, text, ts, speaking, interrupted in zip(
            turns.role,
            turns.text,
            turns.ts,
            turns.speaking_duration_seconds,
            turns.was_interrupted,
            strict=True,
        )
    ]
    return {
        "sessionId": record.session_id,
        "personaName": record.character_name,
        "startTime": iso_millis(started),
        "endTime": _optional(record.ended_at),
        "durationMs": record.duration_ms,
        "totalMessages": len(messages),
        "transcriptsEnabled": record.transcripts_enabled,
        "messages": messages,
    }


def anam_session(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.session_id,
        "clientLabel": record.client_label,
        "personaId": record.character_public_id,
        "personaName": record.character_name,
        "status": ACTIVE if record.finalized_at is None else COMPLETED,
        "startTime": iso_millis(record.created_at),
        "endTime": _optional(record.ended_at),
        "durationMs": record.duration_ms,
        "createdAt": iso_millis(record.created_at),
        "updatedAt": _optional(record.updated_at),
    }


def anam_session_list(page: SessionPage, current_page: int | None, per_page: int) -> dict[str, Any]:
    """``current_page`` is None for a page reached by cursor: its number is not known, and
    prev/next are then null too (nextCursor leads on)."""
    last_page = -(-page.total // per_page)
    return {
        "data": [anam_session(record) for record in page.records],
        "meta": {
            "total": page.total,
            "lastPage": last_page,
            "currentPage": current_page,
            "perPage": per_page,
            "prev": current_page - 1 if current_page is not None and current_page > 1 else None,
            "next": (
                current_page + 1 if current_page is not None and current_page < last_page else None
            ),
            "nextCursor": (
                encode_cursor(page.next_position) if page.next_position is not None else None
            ),
        },
    }


def anam_live_turn(turn: LiveTurn, text: str, started: datetime) -> dict[str, Any]:
    """A message of the transcript as ``anam_transcript`` writes it, with ``turnIndex``, so
    that a client can put turns appended out of order back in place."""
    message: dict[str, Any] = {
        "role": "persona" if turn.role == "assistant" else "user",
        "message": text,
        "timestamp": iso_millis(started + timedelta(seconds=turn.ts)),
        "speakingDurationSeconds": turn.speaking_duration_seconds,
    }
    if turn.role == "assistant":
        message["wasInterrupted"] = turn.was_interrupted
    message["turnIndex"] = turn.turn_index
    return message


def anam_live_finalized(session: LiveSession) -> dict[str, Any]:
    return {
        "sessionId": str(session.session_id),
        "endTime": _optional(session.ended_at),
        "durationMs": session.duration_ms,
        "totalMessages": session.turn_count,
    }
