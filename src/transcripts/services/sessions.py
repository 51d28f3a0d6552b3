"""The voice worker's write path: a session started, its turns appended, then finalized.

A recording is registered at finalize, and only one that belongs to the session
(``transcripts.recording_keys``): the rule runs before the store is asked anything, so a key
that is not the caller's is never checked, signed or stored. ``recording_upload`` hands out
the one key outside the tenant's prefix that a session may register, with a presigned PUT.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.dashboard import load_session_record
from transcripts.db.deletions import DeletionRepository
from transcripts.db.live import announce_finalized, announce_turns
from transcripts.db.sessions import SessionRepository
from transcripts.db.usage import UsageRollups
from transcripts.domain import (
    AppendResult,
    Caller,
    CharacterRecord,
    FormResponseRecord,
    NewTurn,
    RecordingStatus,
    SessionLimits,
    SessionRecord,
    SessionRef,
    SignedUpload,
    UsageTotals,
)
from transcripts.errors import (
    SESSION_NOT_FOUND,
    BadRequest,
    Conflict,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)
from transcripts.pricing import PriceTable, Usage, estimate_cost_micros
from transcripts.recording_keys import RecordingKeys, S3Location, upload_session_id
from transcripts.redaction import redact_many
from transcripts.services import webhooks
from transcripts.validation import as_utc

__all__ = [
    "CONCURRENCY_RETRY_AFTER_SECONDS",
    "UNLIMITED",
    "ConcurrencyLimit",
    "RecordingChecker",
    "RecordingUploads",
    "RegisteredRecording",
    "append",
    "append_turns",
    "finalize",
    "finalize_session",
    "record_form_response",
    "recording_upload",
    "redact_turns",
    "session_for_write",
    "session_ids_created_by",
    "start_session",
]


# For seeding and tests that write outside a request: the routes pass the settings' limits.
UNLIMITED = SessionLimits(max_turns=2**31 - 1, max_text_bytes=2**63 - 1)


class RecordingChecker(Protocol):
    async def check(self, recording_url: str) -> RecordingStatus:
        """READY if the object is there, PENDING if not yet, FAILED if it never can be."""


class RecordingUploads(Protocol):
    async def sign_upload(self, recording_url: str) -> SignedUpload | None:
        """A fresh presigned PUT of the recording, or None (logged) when it cannot be signed."""


@dataclass(frozen=True, slots=True)
class RegisteredRecording:
    """A recording URI with the status its store found when it was registered."""

    url: str
    status: RecordingStatus


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most ``sessions`` sessions of a character in progress at once. A session is in
    progress until it is finalized, or until ``window`` after it started: a worker that died
    mid-call never finalizes, and its sessions must not hold the slots for good."""

    sessions: int
    window: timedelta


# A slot frees when any of the character's calls ends: a hint, not a promise.
CONCURRENCY_RETRY_AFTER_SECONDS = 30


async def start_session(
    db: AsyncSession,
    character: CharacterRecord,
    *,
    user_id: int | None,
    origin_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    room_name: str | None = None,
    client_label: str | None = None,
    started_at: datetime | None = None,
    concurrency: ConcurrencyLimit | None = None,
    session_id: uuid.UUID | None = None,
) -> SessionRef:
    """A new session of ``character``; with ``concurrency``, refused (429) when the
    character already has as many sessions in progress (Oshara's documented 429).

    ``session_id`` (imports, tests; the API always draws a new one) may not be the id of a
    deleted session: a tombstoned id stays not found and nothing is recreated under it."""
    if not character.is_active:
        raise NotFound("Character not found.")
    if session_id is not None and await DeletionRepository(db).is_tombstoned(session_id):
        raise NotFound(SESSION_NOT_FOUND)
    sessions = SessionRepository(db)
    now = datetime.now(UTC)
    if concurrency is not None:
        # Two starts at the limit must not both see a free slot: the count and the insert
        # run under the character's lock, held until the transaction commits.
        await sessions.lock_character(character.id)
        started_after = now - concurrency.window
        if await sessions.open_session_count(character.id, started_after=started_after) >= (
            concurrency.sessions
        ):
            raise RateLimited(
                f"Concurrent session limit reached: this character has {concurrency.sessions}"
                " sessions in progress.",
                retry_after=CONCURRENCY_RETRY_AFTER_SECONDS,
            )
    session = await sessions.add(
        character,
        user_id=user_id,
        room_name=room_name or f"oshara-voice-{character.slug}-{secrets.token_hex(4)}",
        origin_url=origin_url,
        metadata=metadata or {},
        client_label=client_label,
        created_at=started_at or now,
        session_id=session_id,
    )
    # Counted from its start: a session never finalized is in Session History's totals too.
    await _count_usage(db, session, UsageTotals(1, 0, 0, 0.0, 0, 0))
    started = {
        "session_id": str(session.session_id),
        "character_slug": character.slug,
        "room_name": session.room_name,
        "user": user_id,
        "origin_url": origin_url,
        "metadata": metadata or {},
        "client_label": client_label,
        "created_at": session.created_at,
    }
    await webhooks.emit(db, "session.started", started, session_owner_id=session.owner_id)
    return session


async def _count_usage(db: AsyncSession, session: SessionRef, change: UsageTotals) -> None:
    await UsageRollups(db).add(
        session_pk=session.id,
        character_id=session.character_id,
        owner_id=session.owner_id,
        tenant_id=session.tenant_id,
        started_at=session.created_at,
        change=change,
    )


async def session_for_write(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> SessionRef:
    """The caller's session, locked until the transaction ends.

    Appends and finalize of one session take this lock first, so they run one at a time:
    an append waiting behind a finalize sees ``finalized_at`` once it gets the lock.
    Not the caller's session: the same 404 as an unknown id.
    """
    session = await SessionRepository(db).lock_for_write(caller, session_id)
    if session is None:
        raise NotFound(SESSION_NOT_FOUND)
    return session


async def append(
    db: AsyncSession,
    caller: Caller,
    session_id: uuid.UUID,
    turns: Sequence[NewTurn],
    limits: SessionLimits = UNLIMITED,
) -> AppendResult:
    """The append route's work: lock the caller's session, store the batch, count."""
    session = await session_for_write(db, caller, session_id)
    inserted = await append_turns(db, session, turns, limits)
    return AppendResult(
        session_id=session.session_id,
        received=len(turns),
        inserted=inserted,
        turn_count=session.turn_count + inserted,
    )


async def append_turns(
    db: AsyncSession,
    session: SessionRef,
    turns: Sequence[NewTurn],
    limits: SessionLimits = UNLIMITED,
) -> int:
    """Store a batch of turns; returns how many were new.

    Idempotent on (session, turn_index): a retried turn is skipped, a different text for a
    stored index is a conflict and the whole batch is refused, and so is a batch that would
    take the session past ``limits``. ``session`` comes from ``session_for_write`` (or was
    started in this transaction).
    """
    if session.finalized_at is not None:
        raise Conflict("The session is finalized; no more turns can be added.")
    if not turns or not session.transcripts_enabled:
        # A character with transcripts disabled keeps none: the text never reaches storage.
        return 0
    if session.pii_redaction == "store":
        # Before anything else sees the text: what is stored, counted and compared with a
        # retried turn is the redacted text (redaction is deterministic, so a retry of the
        # same raw turn matches what was stored).
        turns = redact_turns(turns)
    _refuse_duplicates_within(turns)
    sessions = SessionRepository(db)
    # Under session_for_write's lock, so two appends never number their turns alike.
    after_seq = await sessions.reserve_append_seqs(session.id, len(turns))
    inserted = await sessions.insert_turns(
        session.id, turns, now=datetime.now(UTC), after_seq=after_seq
    )
    retried = [turn for turn in turns if turn.turn_index not in inserted]
    if retried:
        stored = await sessions.stored_turns(session.id, (turn.turn_index for turn in retried))
        _refuse_rewrites(stored, retried)
    if inserted:
        added = [turn for turn in turns if turn.turn_index in inserted]
        added_bytes = sum(len(turn.text.encode()) for turn in added)
        _refuse_past_limits(session, len(inserted), added_bytes, limits)
        interruptions = sum(
            1 for turn in added if turn.was_interrupted and turn.role == "assistant"
        )
        await sessions.count_appended(session.id, len(inserted), added_bytes, interruptions)
        appended = {
            "session_id": str(session.session_id),
            "turns": [
                {
                    "turn_index": turn.turn_index,
                    "role": turn.role,
                    "text": turn.text,
                    "ts": turn.ts,
                    "speaking_duration_seconds": turn.speaking_duration_seconds,
                    "was_interrupted": turn.was_interrupted,
                }
                for turn in sorted(added, key=lambda turn: turn.turn_index)
            ],
            "turn_count": session.turn_count + len(inserted),
        }
        await webhooks.emit(db, "turns.appended", appended, session_owner_id=session.owner_id)
        # In this transaction: a rolled-back append announces nothing.
        await announce_turns(db, session.session_id, max(inserted.values()))
    return len(inserted)


def redact_turns(turns: Sequence[NewTurn]) -> list[NewTurn]:
    """The turns with their PII replaced by tags (``transcripts.redaction``)."""
    texts = redact_many([turn.text for turn in turns])
    return [replace(turn, text=text) for turn, text in zip(turns, texts, strict=True)]


def _refuse_past_limits(
    session: SessionRef, added_turns: int, added_bytes: int, limits: SessionLimits
) -> None:
    if session.turn_count + added_turns > limits.max_turns:
        message = f"A session holds at most {limits.max_turns} turns."
        raise Conflict(message, {"body": [message]})
    if session.text_bytes + added_bytes > limits.max_text_bytes:
        message = f"A session's transcript holds at most {limits.max_text_bytes} bytes of text."
        raise Conflict(message, {"body": [message]})


def _refuse_duplicates_within(turns: Iterable[NewTurn]) -> None:
    seen: dict[int, NewTurn] = {}
    for turn in turns:
        earlier = seen.setdefault(turn.turn_index, turn)
        if earlier != turn:
            raise Conflict(
                f"Turn {turn.turn_index} appears twice in the batch with different content.",
                {"turn_index": [f"Turn {turn.turn_index} is given twice with different content."]},
            )


def _refuse_rewrites(stored: dict[int, NewTurn], retried: Sequence[NewTurn]) -> None:
    for turn in retried:
        existing = stored[turn.turn_index]
        if (existing.role, existing.text) != (turn.role, turn.text) or existing.ts != turn.ts:
            message = f"Turn {turn.turn_index} is already stored with different content."
            raise Conflict(message, {"turn_index": [message]})


async def finalize(
    db: AsyncSession,
    caller: Caller,
    session_id: uuid.UUID,
    usage: Usage,
    prices: PriceTable,
    recordings: RecordingChecker,
    keys: RecordingKeys,
    *,
    ended_at: datetime | None = None,
    recording_url: str | None = None,
) -> SessionRecord:
    """The finalize route's work: lock the caller's session, settle the recording's status
    (checked once, here; reads never look at the object again), record usage and cost, and
    answer the session as it now stands. An ``ended_at`` without an offset is UTC.

    ``recording_url`` must belong to the session (``keys``), or the whole finalize is a 400
    and the store is never asked about it.

    The first finalize emits ``session.finalized`` in this transaction (its body, the
    session's summary, is rendered by the deliverer: ``webhooks.emit_finalized``)."""
    session = await session_for_write(db, caller, session_id)
    ended_at = as_utc(ended_at, "ended_at")
    recording = None
    if recording_url is not None:
        await _refuse_foreign_recording(db, session, keys, recording_url)
        recording = RegisteredRecording(recording_url, await recordings.check(recording_url))
    await finalize_session(db, session, usage, prices, ended_at=ended_at, recording=recording)
    if session.finalized_at is None:
        await webhooks.emit_finalized(db, session.session_id, session_owner_id=session.owner_id)
    return await load_session_record(db, session.id)


async def finalize_session(
    db: AsyncSession,
    session: SessionRef,
    usage: Usage,
    prices: PriceTable,
    *,
    ended_at: datetime | None = None,
    recording: RegisteredRecording | None = None,
) -> SessionRef:
    """Record usage and cost, once. A repeated finalize leaves the stored result unchanged,
    except that it may register the recording again, to move its status on.

    ``session`` comes from ``session_for_write`` (or was started in this transaction); the
    answer is the session as it now stands.
    """
    sessions = SessionRepository(db)
    changes: dict[str, Any] = {}
    if recording is not None and not _registered(session, recording):
        changes.update(recording_url=recording.url, recording_status=recording.status)
    if session.finalized_at is not None:
        if changes:
            await sessions.update(session.id, **changes)
        return replace(session, **changes)
    now = datetime.now(UTC)
    if ended_at is not None and ended_at < session.created_at:
        raise BadRequest(
            "The session cannot end before it started.",
            {"ended_at": ["Must not be before the session started."]},
        )
    cost_micros = estimate_cost_micros(usage, prices)
    await sessions.update(
        session.id,
        ended_at=ended_at or now,
        finalized_at=now,
        llm_input_tokens=usage.llm_input_tokens,
        llm_output_tokens=usage.llm_output_tokens,
        llm_model=usage.llm_model,
        llm_provider=usage.llm_provider,
        stt_audio_seconds=usage.stt_audio_seconds,
        stt_provider=usage.stt_provider,
        tts_characters=usage.tts_characters,
        tts_provider=usage.tts_provider,
        estimated_cost_micros=cost_micros,
        **changes,
    )
    await _count_usage(
        db,
        session,
        UsageTotals(
            sessions=0,
            llm_input_tokens=usage.llm_input_tokens,
            llm_output_tokens=usage.llm_output_tokens,
            stt_audio_seconds=usage.stt_audio_seconds,
            tts_characters=usage.tts_characters,
            estimated_cost_micros=cost_micros,
        ),
    )
    await announce_finalized(db, session.session_id)
    return replace(session, finalized_at=now, **changes)


async def _refuse_foreign_recording(
    db: AsyncSession, session: SessionRef, keys: RecordingKeys, recording_url: str
) -> None:
    tenant_slug = await SessionRepository(db).tenant_slug(session.tenant_id)
    handed_out = session.recording_upload_url
    if keys.may_register(recording_url, tenant_slug=tenant_slug, handed_out=handed_out):
        return
    prefix = keys.tenant_prefix(tenant_slug)
    allowed = "the key handed out for this session by POST …/{session_id}/recording/upload/"
    if prefix is not None:
        allowed = f"an s3:// URI under {prefix.uri}, or {allowed}"
    raise BadRequest("Invalid recording_url.", {"recording_url": [f"Must be {allowed}."]})


RECORDING_SETTLED = "The session's recording is already registered and ready."


async def recording_upload(
    db: AsyncSession,
    caller: Caller,
    session_id: uuid.UUID,
    uploads: RecordingUploads,
    keys: RecordingKeys,
    *,
    extension: str,
) -> SignedUpload:
    """Hand out the key the session may register, with a presigned PUT of it.

    Allowed until the session's recording is READY (then 409: the recording is settled and
    the link would overwrite it), before or after finalize. The key is recorded on the
    session; asking again for the same format answers the same key with a fresh link.
    """
    session = await session_for_write(db, caller, session_id)
    if session.recording_status == RecordingStatus.READY:
        raise Conflict(RECORDING_SETTLED)
    sessions = SessionRepository(db)
    location = keys.upload_key(
        tenant_slug=await sessions.tenant_slug(session.tenant_id),
        session_id=session.session_id,
        extension=extension,
        handed_out=session.recording_upload_url,
    )
    upload = await uploads.sign_upload(location.uri)
    if upload is None:
        raise ServiceUnavailable("Recording uploads are not available: the store cannot sign.")
    if location.uri != session.recording_upload_url:
        await sessions.update(session.id, recording_upload_url=location.uri)
    return upload


async def refuse_overwriting_a_ready_recording(db: AsyncSession, bucket: str, key: str) -> None:
    """409 for an upload to a handed-out key its session has registered ``READY``: an upload
    link stays valid for its whole lifetime, and must not replace a settled recording."""
    session_id = upload_session_id(key)
    if session_id is None:
        return
    if await SessionRepository(db).recording_ready(session_id, S3Location(bucket, key).uri):
        raise Conflict(RECORDING_SETTLED)


def _registered(session: SessionRef, recording: RegisteredRecording) -> bool:
    """Whether registering ``recording`` would change nothing: it is the one stored, with
    the same status, or already READY (which stays as it is unless another is registered)."""
    if session.recording_url != recording.url:
        return False
    return session.recording_status in {recording.status, RecordingStatus.READY}


async def record_form_response(
    db: AsyncSession,
    character: CharacterRecord,
    session_id: uuid.UUID,
    *,
    form_id: str,
    values: dict[str, Any],
) -> FormResponseRecord:
    """Store a form a visitor filled in during one of ``character``'s sessions."""
    sessions = SessionRepository(db)
    session_pk = await sessions.session_pk_of_character(session_id, character.id)
    if session_pk is None:
        raise NotFound(SESSION_NOT_FOUND, {"session_id": [SESSION_NOT_FOUND]})
    return await sessions.add_form_response(
        character_id=character.id,
        session_pk=session_pk,
        session_id=session_id,
        form_id=form_id,
        values=values,
    )


async def session_ids_created_by(db: AsyncSession, user_id: int) -> list[uuid.UUID]:
    return await SessionRepository(db).session_ids_created_by(user_id)
