"""Domain and stored objects -> the ``data`` of the envelope. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from transcripts.domain import (
    ApiKeyRecord,
    CharacterRecord,
    FormResponseRecord,
    LiveSession,
    LiveTurn,
    SessionHistoryPage,
    SessionRecord,
    SignedUrl,
    Turns,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from transcripts.pagination import encode_cursor

__all__ = [
    "api_key_data",
    "character_data",
    "form_response_data",
    "live_finalized_data",
    "live_turn_data",
    "session_history",
    "session_summary",
    "webhook_delivery_data",
    "webhook_endpoint_data",
]

ROLE_LABELS = {"assistant": "Assistant", "user": "User"}


def session_summary(record: SessionRecord, recording: SignedUrl | None) -> dict[str, Any]:
    """The AgentSessionSummary; a record read without its turns has an empty transcript
    (its counts are the session row's)."""
    turns = record.turns or Turns.empty()
    transcript = [
        {"role": role, "text": text, "turn_index": turn_index, "ts": ts}
        for turn_index, role, text, ts in zip(
            turns.turn_index, turns.role, turns.text, turns.ts, strict=True
        )
    ]
    transcript_text = "\n".join(
        f"{ROLE_LABELS[role]}: {text}" for role, text in zip(turns.role, turns.text, strict=True)
    )
    return {
        "id": record.id,
        "session_id": record.session_id,
        "tenant_id": record.tenant_slug,
        "character_slug": record.character_slug,
        "user": record.user_id,
        "room_name": record.room_name,
        "origin_url": record.origin_url,
        "metadata": orjson.Fragment(record.metadata_json),
        "session_duration_seconds": record.duration_seconds,
        "turn_count": record.turn_count,
        "interruption_count": record.interruption_count,
        "llm_input_tokens": record.llm_input_tokens,
        "llm_output_tokens": record.llm_output_tokens,
        "llm_model": record.llm_model,
        "llm_provider": record.llm_provider,
        "stt_audio_seconds": record.stt_audio_seconds,
        "stt_provider": record.stt_provider,
        "tts_characters": record.tts_characters,
        "tts_provider": record.tts_provider,
        "estimated_cost_usd": str(record.estimated_cost_usd),
        "finalized_at": record.finalized_at,
        "recording_status": record.recording_status,
        "recording_url": record.recording_url,
        "recording_presigned_url": recording.url if recording else None,
        "recording_presigned_url_expires_at": recording.expires_at if recording else None,
        "transcript": transcript,
        "transcript_text": transcript_text,
        "created_at": record.created_at,
    }


def webhook_summary(record: SessionRecord) -> dict[str, Any]:
    """What session.finalized carries: the summary as the read answers it, less the
    presigned recording link (it would expire; the read signs a fresh one)."""
    return session_summary(record, None)


def session_history(
    history: SessionHistoryPage, links: Sequence[SignedUrl | None], *, page: int | None
) -> dict[str, Any]:
    """Session History's data; ``page`` is null when the page was reached by cursor."""
    totals = history.totals
    return {
        "total_sessions": totals.sessions,
        "total_llm_input_tokens": totals.llm_input_tokens,
        "total_llm_output_tokens": totals.llm_output_tokens,
        # Summing floats leaves noise in the last digits; no usage is measured finer than 1 ms.
        "total_stt_audio_seconds": round(totals.stt_audio_seconds, 3),
        "total_tts_characters": totals.tts_characters,
        "total_estimated_cost_usd": str(totals.estimated_cost_usd),
        "page": page,
        "page_size": history.page_size,
        "total_pages": history.total_pages,
        "next_cursor": (
            encode_cursor(history.next_position) if history.next_position is not None else None
        ),
        "sessions": [
            session_summary(record, link)
            for record, link in zip(history.records, links, strict=True)
        ],
    }


def api_key_data(api_key: ApiKeyRecord) -> dict[str, Any]:
    """A key as listings show it: never the key itself, nor its hash."""
    return {
        "id": api_key.id,
        "name": api_key.name,
        "key_preview": api_key.key_preview,
        "is_active": api_key.is_active,
        "last_used_at": api_key.last_used_at,
        "created_at": api_key.created_at,
    }


def form_response_data(response: FormResponseRecord) -> dict[str, Any]:
    return {
        "id": response.id,
        "form_id": response.form_id,
        "session_id": str(response.session_id),
        "values": response.values,
        "created_at": response.created_at,
    }


def character_data(character: CharacterRecord) -> dict[str, Any]:
    return {
        "slug": character.slug,
        "name": character.name,
        "allowed_origins": character.allowed_origins,
        "is_active": character.is_active,
        "transcripts_enabled": character.transcripts_enabled,
        "retention_days": character.retention_days,
        "pii_redaction": character.pii_redaction,
        "created_at": character.created_at,
    }


def live_turn_data(turn: LiveTurn, text: str) -> dict[str, Any]:
    """A turn of the live stream: the item of the summary's ``transcript``."""
    return {"role": turn.role, "text": text, "turn_index": turn.turn_index, "ts": turn.ts}


def live_finalized_data(session: LiveSession) -> dict[str, Any]:
    return {
        "session_id": str(session.session_id),
        "finalized_at": session.finalized_at,
        "turn_count": session.turn_count,
    }


def webhook_endpoint_data(endpoint: WebhookEndpointRecord) -> dict[str, Any]:
    """An endpoint; its secret only in the answers that create or rotate it."""
    data: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "is_active": endpoint.is_active,
        "failing_since": endpoint.failing_since,
        "created_at": endpoint.created_at,
    }
    if endpoint.secret is not None:
        data["secret"] = endpoint.secret
    return data


def webhook_delivery_data(delivery: WebhookDeliveryRecord) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "last_response_code": delivery.last_response_code,
        "last_error": delivery.last_error,
        "attempt_log": [
            {
                "at": attempt.at,
                "response_code": attempt.response_code,
                "error": attempt.error,
                "duration_ms": attempt.duration_ms,
            }
            for attempt in delivery.attempt_log
        ],
        "created_at": delivery.created_at,
    }
