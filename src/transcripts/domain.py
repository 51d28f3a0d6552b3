"""Dialect-neutral domain objects. Each dialect's mapper turns these into its own JSON.

A transcript is held column-wise (one sequence per field) because that is how the hot query
returns it: no per-turn object is built between the database and the JSON encoder.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple

# "store": a character's turns are redacted before they are stored.
PiiRedaction = Literal["none", "store"]

__all__ = [
    "ApiKeyCredentials",
    "ApiKeyRecord",
    "AppendResult",
    "Caller",
    "CharacterRecord",
    "Credentials",
    "DeletionReceipt",
    "ExpiredSession",
    "FormResponseRecord",
    "HistoryFilter",
    "NewTurn",
    "PageRequest",
    "PendingRecordingDeletion",
    "PiiRedaction",
    "Position",
    "RecordingStatus",
    "SearchHit",
    "SearchPage",
    "SearchPosition",
    "SearchQuery",
    "SessionForDeletion",
    "SessionHistoryPage",
    "SessionLimits",
    "SessionPage",
    "SessionRecord",
    "SessionRef",
    "SignedUpload",
    "SignedUrl",
    "Turns",
    "UsageTotals",
    "UserCredentials",
    "UserRecord",
    "WebhookAttempt",
    "WebhookClaim",
    "WebhookDeliveryRecord",
    "WebhookEndpointRecord",
    "usd_from_micros",
]


class RecordingStatus(enum.StrEnum):
    NONE = "NONE"
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


COST_QUANTUM = Decimal("0.000001")


def usd_from_micros(micros: int) -> Decimal:
    """Costs are stored in millionths of a dollar; dollars always carry six places."""
    return (Decimal(micros) * COST_QUANTUM).quantize(COST_QUANTUM)


@dataclass(frozen=True, slots=True)
class ApiKeyCredentials:
    key_hash: str


@dataclass(frozen=True, slots=True)
class UserCredentials:
    """A verified access token: the user it names still has to exist and be active."""

    user_id: int


Credentials = ApiKeyCredentials | UserCredentials


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    is_staff: bool
    tenant_id: int | None
    api_key_id: int | None = None


class Turns(NamedTuple):
    """A transcript, column-wise, ordered by turn_index."""

    turn_index: list[int]
    role: list[Literal["user", "assistant"]]
    text: list[str]
    ts: list[float]
    speaking_duration_seconds: list[float | None]
    was_interrupted: list[bool]

    @classmethod
    def empty(cls) -> Turns:
        return cls([], [], [], [], [], [])


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: int
    session_id: str
    tenant_slug: str
    character_slug: str
    character_name: str
    character_public_id: str
    user_id: int | None
    room_name: str
    origin_url: str | None
    metadata_json: str  # stored JSON text, passed through to the response as it is
    client_label: str | None
    transcripts_enabled: bool
    created_at: datetime
    updated_at: datetime | None
    ended_at: datetime | None
    finalized_at: datetime | None
    llm_input_tokens: int
    llm_output_tokens: int
    llm_model: str | None
    llm_provider: str | None
    stt_audio_seconds: float
    stt_provider: str | None
    tts_characters: int
    tts_provider: str | None
    estimated_cost_micros: int
    recording_status: str
    recording_url: str | None
    # What the session row counts, kept by every append: what a listing without the
    # transcripts shows (the loaded turns say the same).
    counted_turns: int
    counted_interruptions: int
    turns: Turns | None  # None: not loaded (listings)

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.created_at).total_seconds(), 3)

    @property
    def transcript(self) -> Turns:
        if self.turns is None:
            raise ValueError("the transcript of this record was not loaded")
        return self.turns

    @property
    def turn_count(self) -> int:
        if self.turns is None:
            return self.counted_turns
        return len(self.turns.turn_index)

    @property
    def interruption_count(self) -> int:
        """Assistant turns the user spoke over: the caller interrupting counts once, on the
        turn interrupted (a user turn's flag says nothing more)."""
        turns = self.turns
        if turns is None:
            return self.counted_interruptions
        return sum(
            1
            for role, interrupted in zip(turns.role, turns.was_interrupted, strict=True)
            if interrupted and role == "assistant"
        )

    @property
    def duration_ms(self) -> int | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.created_at).total_seconds() * 1000)

    @property
    def estimated_cost_usd(self) -> Decimal:
        return usd_from_micros(self.estimated_cost_micros)


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Which sessions Session History covers; ``start`` and ``end`` are inclusive."""

    character_slug: str | None = None
    tenant_slug: str | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a listing stands in its order (newest first, the row id breaking ties): the
    session it showed last. A cursor is this, encoded."""

    created_at: datetime
    id: int


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page of a listing: after ``after`` when a cursor was given, else ``offset`` rows
    into it."""

    size: int
    after: Position | None = None
    offset: int = 0


@dataclass(frozen=True, slots=True)
class UsageTotals:
    sessions: int
    llm_input_tokens: int
    llm_output_tokens: int
    stt_audio_seconds: float
    tts_characters: int
    estimated_cost_micros: int

    @property
    def estimated_cost_usd(self) -> Decimal:
        return usd_from_micros(self.estimated_cost_micros)


@dataclass(frozen=True, slots=True)
class SessionHistoryPage:
    totals: UsageTotals
    records: list[SessionRecord]
    page_size: int
    # The last session shown, when another page follows.
    next_position: Position | None

    @property
    def total_pages(self) -> int:
        return -(-self.totals.sessions // self.page_size)


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """A time-limited link to a private recording; made on every read, never stored."""

    url: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SignedUpload:
    """A time-limited upload of ``recording_url``: send ``method`` to ``url`` with ``headers``."""

    recording_url: str
    url: str
    expires_at: datetime
    method: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class SessionPage:
    records: list[SessionRecord]
    total: int
    next_position: Position | None = None


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    email: str
    tenant_id: int | None
    tenant_slug: str | None
    is_staff: bool
    is_active: bool


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A key as it is stored: never the key itself, nor (outside ``db/``) its hash."""

    id: int
    user_id: int
    name: str
    key_preview: str
    is_active: bool
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CharacterRecord:
    id: int
    public_id: uuid.UUID
    slug: str
    name: str
    tenant_id: int
    created_by_id: int
    is_active: bool
    transcripts_enabled: bool
    allowed_origins: list[str]
    created_at: datetime
    retention_days: int | None = None
    pii_redaction: PiiRedaction = "none"


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A session's row without its transcript or usage: what the write path works with."""

    id: int
    session_id: uuid.UUID
    tenant_id: int
    character_id: int
    owner_id: int
    user_id: int | None
    room_name: str
    transcripts_enabled: bool
    created_at: datetime
    finalized_at: datetime | None
    recording_url: str | None
    recording_status: RecordingStatus
    # The key last handed out for a presigned upload, which this session may register.
    recording_upload_url: str | None = None
    turn_count: int = 0
    text_bytes: int = 0
    # The character's setting as it is now: switching redaction on applies to every append
    # from then on, sessions in progress included.
    pii_redaction: PiiRedaction = "none"


@dataclass(frozen=True, slots=True)
class LiveTurn:
    """A stored turn as the live stream sends it: ``seq`` is its place in the order the
    session's turns were appended (the event id), ``turn_index`` its place in the transcript."""

    seq: int
    turn_index: int
    role: Literal["user", "assistant"]
    text: str
    ts: float
    speaking_duration_seconds: float | None
    was_interrupted: bool


@dataclass(frozen=True, slots=True)
class LiveSession:
    """What a live stream needs of its session's row besides the turns."""

    session_id: uuid.UUID
    created_at: datetime
    ended_at: datetime | None
    finalized_at: datetime | None
    turn_count: int

    @property
    def duration_ms(self) -> int | None:
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.created_at).total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one session may hold: past either, an append is refused whole."""

    max_turns: int
    max_text_bytes: int


@dataclass(frozen=True, slots=True)
class FormResponseRecord:
    id: int
    form_id: str
    session_id: uuid.UUID
    values: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewTurn:
    turn_index: int
    role: Literal["user", "assistant"]
    text: str
    ts: float
    speaking_duration_seconds: float | None = None
    was_interrupted: bool = False


@dataclass(frozen=True, slots=True)
class AppendResult:
    session_id: uuid.UUID
    received: int
    inserted: int
    turn_count: int


@dataclass(frozen=True, slots=True)
class SessionForDeletion:
    """What deleting a session needs from its row: the keys of its tombstone and rollups,
    the usage to take back out, and the recording objects to delete."""

    id: int
    session_id: uuid.UUID
    tenant_id: int
    owner_id: int
    character_id: int
    created_at: datetime
    usage: UsageTotals
    recording_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PendingRecordingDeletion:
    id: int
    recording_url: str
    attempts: int


@dataclass(frozen=True, slots=True)
class ExpiredSession:
    """A session past its retention, as a dry run lists it."""

    id: int
    session_id: uuid.UUID
    character_slug: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SearchPosition:
    """Where a page of search results ended, in newest-session-first order (the session's
    start and row id, then the turn), or ``offset`` hits into the ranked candidates."""

    created_at: datetime | None = None
    id: int = 0
    turn_index: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A full-text search over the turns the caller may read; ``start``/``end`` bound the
    session's start, inclusive."""

    text: str
    size: int
    sort: Literal["recent", "relevance"] = "recent"
    character_slug: str | None = None
    role: Literal["user", "assistant"] | None = None
    start: datetime | None = None
    end: datetime | None = None
    after: SearchPosition | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    session_id: str
    session_pk: int
    character_slug: str
    turn_index: int
    role: str
    ts: float
    snippet: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeletionReceipt:
    """What a deletion (erasure, a purge) removed: sessions, and recording objects deleted
    from the store by the time it answered (any left are retried until they are)."""

    sessions: int
    recordings: int
    recordings_pending: int
    completed_at: datetime


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[SearchHit]
    # Where the next page starts, when there is one.
    next_position: SearchPosition | None


@dataclass(frozen=True, slots=True)
class WebhookEndpointRecord:
    id: int
    owner_id: int
    url: str
    events: list[str]
    description: str | None
    is_active: bool
    failing_since: datetime | None
    created_at: datetime
    # Only the answers that create or rotate show it.
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One attempt to deliver, as the delivery log shows it."""

    at: datetime
    response_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class WebhookDeliveryRecord:
    id: int
    event_id: str
    event_type: str
    endpoint_id: int
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_response_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttempt]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookClaim:
    """A due delivery a deliverer has claimed: all it needs to make the attempt."""

    delivery_id: int
    endpoint_id: int
    event_id: str
    event_type: str
    event_created_at: datetime
    # The session the event is about (None for webhook.test).
    session_id: uuid.UUID | None
    url: str
    secret: str
    # The signed body; None until the event's first claim renders it (session.finalized).
    payload: str | None
    attempts: int
    # Whether the endpoint was already failing before this attempt (and since when).
    failing_since: datetime | None
    # The attempts so far, as stored: this attempt's outcome is appended to them.
    attempt_log: list[dict[str, Any]]
