"""SessionRecord -> AgentSessionSummary (the ``data`` of the envelope). Pure functions."""

from __future__ import annotations

from typing import Any

import orjson

from transcripts.domain import SessionRecord, SignedUrl

__all__ = ["session_summary"]

ROLE_LABELS = {"assistant": "Assistant", "user": "User"}


def session_summary(record: SessionRecord, recording: SignedUrl | None) -> dict[str, Any]:
    turns = record.transcript
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
