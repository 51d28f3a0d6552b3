"""The schema. One Alembic history (``migrations/``) builds it on PostgreSQL and SQLite alike."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from transcripts.db.types import BigIntPK, UTCDateTime
from transcripts.domain import RecordingStatus

__all__ = [
    "ROLLUP_MEASURES",
    "ApiKey",
    "Base",
    "Character",
    "FormResponse",
    "RecordingDeletion",
    "Session",
    "SessionTombstone",
    "Tenant",
    "Turn",
    "UsageByCharacterDay",
    "UsageByDay",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # SHA-256 of the whole key: the key is 256 random bits, so a slow hash would add nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_preview: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Character(Base):
    __tablename__ = "characters"
    __table_args__ = (
        CheckConstraint("pii_redaction IN ('none', 'store')", name="pii_redaction"),
        CheckConstraint("retention_days >= 1", name="retention_days_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # Anam's personaId.
    public_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    transcripts_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Browser origins allowed to start a session without credentials (the widget).
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Days a session is kept after it started; None: the service's RETENTION_DAYS (unset: kept).
    retention_days: Mapped[int | None] = mapped_column(Integer)
    # "store": turns are redacted before they are written, so raw text never reaches the table.
    pii_redaction: Mapped[str] = mapped_column(String(16), default="none", server_default="none")


class Session(Base):
    __tablename__ = "sessions"
    # Each listing's scope, then its order (newest first, id breaking ties): a page is a
    # range of one of these, however many sessions the scope holds.
    __table_args__ = (
        Index("ix_sessions_owner_id_created_at_id", "owner_id", "created_at", "id"),
        Index("ix_sessions_character_id_created_at_id", "character_id", "created_at", "id"),
        Index("ix_sessions_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_sessions_created_at_id", "created_at", "id"),
        # Anam's search by a part of the label (PostgreSQL; SQLite matches plainly), within
        # an owner, a character, both or neither: a multicolumn GIN index (btree_gin for the
        # ids) serves any subset of its columns in one scan, so the owner's scope costs its
        # matches, not all its sessions.
        Index(
            "ix_sessions_owner_id_character_id_client_label_trgm",
            "owner_id",
            "character_id",
            "client_label",
            postgresql_using="gin",
            postgresql_ops={"client_label": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    # Who may read it: the character's creator when the session started.
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    room_name: Mapped[str] = mapped_column(String(200))
    origin_url: Mapped[str | None] = mapped_column(String(2048))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    client_label: Mapped[str | None] = mapped_column(String(200))
    transcripts_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # When the session started; Oshara calls it created_at.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(onupdate=utcnow)
    ended_at: Mapped[datetime | None]
    finalized_at: Mapped[datetime | None]
    llm_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    llm_output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    llm_model: Mapped[str | None] = mapped_column(String(100))
    llm_provider: Mapped[str | None] = mapped_column(String(100))
    stt_audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    stt_provider: Mapped[str | None] = mapped_column(String(100))
    tts_characters: Mapped[int] = mapped_column(Integer, default=0)
    tts_provider: Mapped[str | None] = mapped_column(String(100))
    # Millionths of a dollar: exact on both databases (SQLite has no decimal type).
    estimated_cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    recording_status: Mapped[RecordingStatus] = mapped_column(
        Enum(RecordingStatus, native_enum=False, length=16, validate_strings=True),
        default=RecordingStatus.NONE,
    )
    recording_url: Mapped[str | None] = mapped_column(String(2048))
    # The s3:// key last handed out by POST …/recording/upload/: the one key outside the
    # tenant's prefix that this session may register.
    recording_upload_url: Mapped[str | None] = mapped_column(String(2048))
    # What the session holds, kept by every append: the caps are checked against these, and
    # listings show them, without counting the turns again.
    turn_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    text_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    interruption_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The append_seq of the session's last appended turn (the live stream's event ids).
    last_append_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant')", name="role"),
        CheckConstraint("turn_index >= 0", name="turn_index_non_negative"),
        CheckConstraint("ts >= 0", name="ts_non_negative"),
        # A live stream resumes "after this id": the session's turns in the order appended.
        Index("ix_turns_session_pk_append_seq", "session_pk", "append_seq", unique=True),
    )

    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    turn_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    ts: Mapped[float] = mapped_column(Float)
    speaking_duration_seconds: Mapped[float | None] = mapped_column(Float)
    was_interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Its place in the order the session's turns were appended (which a worker may append
    # out of turn_index order), numbered from the session's last_append_seq.
    append_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")


class FormResponse(Base):
    """What a visitor entered in a form the character showed during a session."""

    __tablename__ = "form_responses"
    __table_args__ = (
        Index("ix_form_responses_character_id_created_at", "character_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id"))
    session_pk: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    form_id: Mapped[str] = mapped_column(String(100))
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class _UsageMeasures:
    """What Session History totals, summed: one more session, or one session's usage."""

    sessions: Mapped[int] = mapped_column(BigInteger, default=0)
    llm_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    llm_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    stt_audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    tts_characters: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)


# The columns of _UsageMeasures, in its order (the rollup indexes cover them).
ROLLUP_MEASURES = (
    "sessions",
    "llm_input_tokens",
    "llm_output_tokens",
    "stt_audio_seconds",
    "tts_characters",
    "estimated_cost_micros",
)


class UsageByCharacterDay(_UsageMeasures, Base):
    """Session History's totals per character and UTC day, kept in the transactions that
    start, finalize and delete sessions; an owner's or a tenant's totals sum these rows."""

    __tablename__ = "usage_by_character_day"
    __table_args__ = (
        # Covering (PostgreSQL): an owner's or a tenant's totals are a sum over one row per
        # character and day, a year of them thousands of rows scattered over the heap; with
        # the measures in the index the sum is an index-only scan of a few leaf pages.
        Index(
            "ix_usage_by_character_day_owner_id_day",
            "owner_id",
            "day",
            postgresql_include=list(ROLLUP_MEASURES),
        ),
        Index(
            "ix_usage_by_character_day_tenant_id_day",
            "tenant_id",
            "day",
            postgresql_include=list(ROLLUP_MEASURES),
        ),
    )

    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))


class UsageByDay(_UsageMeasures, Base):
    """Everyone's totals per UTC day (staff), in a few rows a day so that concurrent
    sessions seldom wait on one row: a session counts in the shard of its id."""

    __tablename__ = "usage_by_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)


class SessionTombstone(Base):
    """What is left of a deleted session: its id, so that a late append, finalize or form
    response answers 404 and recreates nothing, and its owner, so that deleting it again is
    answered as the owner expects (204) and anyone else gets the not-found of an unknown id."""

    __tablename__ = "session_tombstones"

    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    deleted_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecordingDeletion(Base):
    """A recording object still to delete. Written in the transaction that deletes its
    session, deleted once the store has removed the object: a failure (the store unreachable)
    leaves the row to be tried again at ``next_attempt_at``, so no object is ever forgotten."""

    __tablename__ = "recording_deletions"
    __table_args__ = (Index("ix_recording_deletions_next_attempt_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    recording_url: Mapped[str] = mapped_column(String(2048))
    session_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(Base):
    """Where a user's events are sent (DESIGN.md, "Webhooks")."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(500))
    # The whsec_ signing secret. Stored as it is: signing needs it, a hash would not do.
    secret: Mapped[str] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # When the run of failed attempts that is still going on began: five days of it
    # disable the endpoint; any success clears it.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """The outbox: an event, written in the transaction of the change that caused it."""

    __tablename__ = "webhook_events"

    # The webhook-id header, msg_...: the same on every attempt and every replay.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    # The exact body that is signed and sent: stored as text so every retry sends (and
    # signs) the same bytes. None until first claimed for an event rendered then
    # (session.finalized: the summary is not built, nor the transcript copied, inside
    # the finalize's transaction).
    payload: Mapped[str | None] = mapped_column(Text)
    # The session it is about (none for webhook.test): deleting a session's data deletes
    # its events too, which hold its transcript.
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to one endpoint: its status, its attempts, when it is due next.

    ``next_attempt_at`` is also the claim: a deliverer that takes a due row moves it past
    the attempt's timeout, so no other deliverer takes it meanwhile, and a deliverer that
    dies mid-attempt leaves it due again once that lease runs out.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_response_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # [{"at", "response_code", "error", "duration_ms"}], oldest first.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
