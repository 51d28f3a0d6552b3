"""The write side: characters, sessions, turns and finalize, as the voice worker drives them.

Functions take an ``AsyncSession`` and never commit: the caller (a request, a CLI command,
the demo) owns the transaction and commits once. A failure raises, and the caller rolls
the whole transaction back, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.auth import GeneratedApiKey, generate_api_key
from transcripts.db.repository import SESSION_NOT_FOUND
from transcripts.db.tables import (
    ApiKey,
    Character,
    FormResponse,
    RecordingStatus,
    Session,
    Tenant,
    Turn,
    User,
)
from transcripts.domain import Caller
from transcripts.errors import BadRequest, Conflict, Forbidden, NotAuthenticated, NotFound
from transcripts.pricing import PriceTable, Usage, estimate_cost_micros

__all__ = [
    "NewTurn",
    "RegisteredRecording",
    "append_turns",
    "character_open_to",
    "create_api_key",
    "create_character",
    "create_user",
    "finalize_session",
    "get_or_create_tenant",
    "record_form_response",
    "revoke_api_key",
    "session_for_write",
    "start_session",
    "turn_count",
]

CHARACTER_NOT_FOUND = "Character not found."


@dataclass(frozen=True, slots=True)
class NewTurn:
    turn_index: int
    role: Literal["user", "assistant"]
    text: str
    ts: float
    speaking_duration_seconds: float | None = None
    was_interrupted: bool = False


async def get_or_create_tenant(db: AsyncSession, slug: str, name: str | None = None) -> Tenant:
    tenant = await db.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        tenant = Tenant(slug=slug, name=name or slug)
        db.add(tenant)
        await db.flush()
    return tenant


async def create_user(
    db: AsyncSession, email: str, *, tenant_slug: str | None = None, is_staff: bool = False
) -> User:
    if await db.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("A user with this email already exists.", {"email": ["Already in use."]})
    tenant = await get_or_create_tenant(db, tenant_slug) if tenant_slug else None
    user = User(email=email, tenant_id=tenant.id if tenant else None, is_staff=is_staff)
    db.add(user)
    await db.flush()
    return user


async def create_api_key(
    db: AsyncSession, user_id: int, name: str = "default"
) -> tuple[ApiKey, GeneratedApiKey]:
    if await db.get(User, user_id) is None:
        raise NotFound("User not found.")
    generated = generate_api_key()
    api_key = ApiKey(
        user_id=user_id, name=name, key_hash=generated.key_hash, key_preview=generated.key_preview
    )
    db.add(api_key)
    await db.flush()
    return api_key, generated


async def revoke_api_key(
    db: AsyncSession, api_key_id: int, *, owner_id: int | None = None
) -> ApiKey:
    api_key = await db.get(ApiKey, api_key_id)
    if api_key is None or (owner_id is not None and api_key.user_id != owner_id):
        raise NotFound("API key not found.")
    if api_key.is_active:
        api_key.is_active = False
        api_key.revoked_at = datetime.now(UTC)
    return api_key


async def create_character(
    db: AsyncSession,
    creator: User,
    *,
    slug: str,
    name: str,
    allowed_origins: Sequence[str] = (),
    transcripts_enabled: bool = True,
) -> Character:
    if creator.tenant_id is None:
        raise BadRequest("Only a member of a tenant can create a character.")
    if await db.scalar(select(Character.id).where(Character.slug == slug)) is not None:
        raise Conflict("A character with this slug already exists.", {"slug": ["Already in use."]})
    character = Character(
        slug=slug,
        name=name,
        tenant_id=creator.tenant_id,
        created_by_id=creator.id,
        allowed_origins=list(allowed_origins),
        transcripts_enabled=transcripts_enabled,
    )
    db.add(character)
    await db.flush()
    return character


async def character_open_to(
    db: AsyncSession, slug: str, *, caller: Caller | None, origin: str | None, field: str
) -> Character:
    """The active character ``slug``, if this requester may act for it (start a session,
    submit a form).

    With credentials the caller must own it (or be staff): anything else is the same 404 as
    an unknown slug. Without, the request must come from a browser origin on the character's
    ``allowed_origins`` (Oshara's widget). ``field`` names the slug in the request.
    """
    if caller is None and origin is None:
        raise NotAuthenticated()
    statement = select(Character).where(Character.slug == slug, Character.is_active)
    if caller is not None and not caller.is_staff:
        statement = statement.where(Character.created_by_id == caller.user_id)
    character = await db.scalar(statement)
    if character is None:
        raise NotFound(CHARACTER_NOT_FOUND, {field: [CHARACTER_NOT_FOUND]})
    if caller is None and not _origin_allowed(origin, character.allowed_origins):
        raise Forbidden("This origin may not use this character.")
    return character


def _origin_allowed(origin: str | None, allowed_origins: Sequence[str]) -> bool:
    # Scheme and host are case-insensitive; browsers send them lowercased, people may not.
    return origin is not None and origin.lower() in {entry.lower() for entry in allowed_origins}


async def start_session(
    db: AsyncSession,
    character: Character,
    *,
    user_id: int | None,
    origin_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    room_name: str | None = None,
    client_label: str | None = None,
    started_at: datetime | None = None,
) -> Session:
    if not character.is_active:
        raise NotFound("Character not found.")
    session = Session(
        session_id=uuid.uuid4(),
        tenant_id=character.tenant_id,
        character_id=character.id,
        user_id=user_id,
        room_name=room_name or f"oshara-voice-{character.slug}-{secrets.token_hex(4)}",
        origin_url=origin_url,
        metadata_=metadata or {},
        client_label=client_label,
        transcripts_enabled=character.transcripts_enabled,
        created_at=started_at or datetime.now(UTC),
    )
    db.add(session)
    await db.flush()
    return session


async def session_for_write(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> Session:
    """The caller's session, locked until the transaction ends.

    Appends and finalize of one session take this lock first, so they run one at a time:
    an append waiting behind a finalize sees ``finalized_at`` once it gets the lock.
    Not the caller's session: the same 404 as an unknown id.
    """
    if db.get_bind().dialect.name == "sqlite":
        # SQLite has no row locks, and its driver begins a transaction only at the first
        # write: a no-op write takes the database's write lock before the session is read.
        await db.execute(
            update(Session)
            .where(Session.session_id == session_id)
            .values(id=Session.id)
            .execution_options(synchronize_session=False)
        )
    statement = (
        select(Session)
        .join(Character, Character.id == Session.character_id)
        .where(Session.session_id == session_id)
        .with_for_update(of=Session)
        # The row as it is now, even if an older copy is in this session's identity map.
        .execution_options(populate_existing=True)
    )
    if not caller.is_staff:
        statement = statement.where(Character.created_by_id == caller.user_id)
    session = await db.scalar(statement)
    if session is None:
        raise NotFound(SESSION_NOT_FOUND)
    return session


async def append_turns(db: AsyncSession, session: Session, turns: Sequence[NewTurn]) -> int:
    """Store a batch of turns; returns how many were new.

    Idempotent on (session, turn_index): a retried turn is skipped, a different text for a
    stored index is a conflict and the whole batch is refused. ``session`` comes from
    ``session_for_write`` (or was started in this transaction).
    """
    if session.finalized_at is not None:
        raise Conflict("The session is finalized; no more turns can be added.")
    if not turns:
        return 0
    _refuse_duplicates_within(turns)
    rows = [
        {
            "session_pk": session.id,
            "turn_index": turn.turn_index,
            "role": turn.role,
            "text": turn.text,
            "ts": turn.ts,
            "speaking_duration_seconds": turn.speaking_duration_seconds,
            "was_interrupted": turn.was_interrupted,
            "created_at": datetime.now(UTC),
        }
        for turn in turns
    ]
    insert = postgres_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Turn).on_conflict_do_nothing(index_elements=["session_pk", "turn_index"])
    result = await db.execute(statement.returning(Turn.turn_index), rows)
    inserted = {row[0] for row in result}
    retried = [turn for turn in turns if turn.turn_index not in inserted]
    if retried:
        await _refuse_rewrites(db, session, retried)
    return len(inserted)


def _refuse_duplicates_within(turns: Iterable[NewTurn]) -> None:
    seen: dict[int, NewTurn] = {}
    for turn in turns:
        earlier = seen.setdefault(turn.turn_index, turn)
        if earlier != turn:
            raise Conflict(
                f"Turn {turn.turn_index} appears twice in the batch with different content.",
                {"turn_index": [f"Turn {turn.turn_index} is given twice with different content."]},
            )


async def _refuse_rewrites(db: AsyncSession, session: Session, retried: Sequence[NewTurn]) -> None:
    stored = {
        turn.turn_index: turn
        for turn in await db.scalars(
            select(Turn).where(
                Turn.session_pk == session.id,
                Turn.turn_index.in_([turn.turn_index for turn in retried]),
            )
        )
    }
    for turn in retried:
        existing = stored[turn.turn_index]
        if (existing.role, existing.text) != (turn.role, turn.text) or existing.ts != turn.ts:
            raise Conflict(
                f"Turn {turn.turn_index} is already stored with different content.",
                {
                    "turn_index": [
                        f"Turn {turn.turn_index} is already stored with different content."
                    ]
                },
            )


async def finalize_session(
    db: AsyncSession,
    session: Session,
    usage: Usage,
    prices: PriceTable,
    *,
    ended_at: datetime | None = None,
    recording: RegisteredRecording | None = None,
) -> Session:
    """Record usage and cost, once. A repeated finalize returns the stored result unchanged,
    except that it may register the recording again, to move its status on.

    ``session`` comes from ``session_for_write`` (or was started in this transaction).
    """
    if session.finalized_at is not None:
        if recording is not None:
            register_recording(session, recording)
            await db.flush()
        return session
    now = datetime.now(UTC)
    if ended_at is not None and ended_at < session.created_at:
        raise BadRequest(
            "The session cannot end before it started.",
            {"ended_at": ["Must not be before the session started."]},
        )
    session.ended_at = ended_at or now
    session.finalized_at = now
    session.llm_input_tokens = usage.llm_input_tokens
    session.llm_output_tokens = usage.llm_output_tokens
    session.llm_model = usage.llm_model
    session.llm_provider = usage.llm_provider
    session.stt_audio_seconds = usage.stt_audio_seconds
    session.stt_provider = usage.stt_provider
    session.tts_characters = usage.tts_characters
    session.tts_provider = usage.tts_provider
    session.estimated_cost_micros = estimate_cost_micros(usage, prices)
    if recording is not None:
        register_recording(session, recording)
    await db.flush()
    return session


@dataclass(frozen=True, slots=True)
class RegisteredRecording:
    """A recording URI with the status its store found when it was registered."""

    url: str
    status: RecordingStatus


def register_recording(session: Session, recording: RegisteredRecording) -> None:
    # A READY recording stays as it is unless a different one is registered.
    if session.recording_url == recording.url and session.recording_status == RecordingStatus.READY:
        return
    session.recording_url = recording.url
    session.recording_status = recording.status


async def turn_count(db: AsyncSession, session: Session) -> int:
    return await db.scalar(select(func.count()).where(Turn.session_pk == session.id)) or 0


async def record_form_response(
    db: AsyncSession,
    character: Character,
    session_id: uuid.UUID,
    *,
    form_id: str,
    values: dict[str, Any],
) -> FormResponse:
    """Store a form a visitor filled in during one of ``character``'s sessions."""
    session_pk = await db.scalar(
        select(Session.id).where(
            Session.session_id == session_id, Session.character_id == character.id
        )
    )
    if session_pk is None:
        raise NotFound(SESSION_NOT_FOUND, {"session_id": [SESSION_NOT_FOUND]})
    response = FormResponse(
        character_id=character.id, session_pk=session_pk, form_id=form_id, values=values
    )
    db.add(response)
    await db.flush()
    return response
