"""Webhooks' rules (DESIGN.md, "Webhooks"): endpoints, the outbox, the outcome of attempts.

Events are written by ``emit`` (``emit_finalized``) in the transaction of the change that
caused them (the outbox): a change that rolls back leaves no event, and no change commits
without its event. The deliverer (``transcripts.webhook_deliverer``) sends them afterwards,
at least once; session.finalized's body is rendered then, once (``render_bodies``).

An endpoint belongs to the user who created it and only that user sees or changes it;
another's endpoint or delivery is the same 404 as an unknown id. It receives the events of
the sessions its owner can read: the owner's own, or every session for staff.
"""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.dashboard import find_session_records
from transcripts.db.webhooks import PendingSummary, WebhookRepository, on_commit_with_events
from transcripts.domain import (
    Caller,
    SessionRecord,
    WebhookAttempt,
    WebhookClaim,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from transcripts.errors import BadRequest, Conflict, NotFound
from transcripts.webhook_targets import TargetRefused, resolve_target

__all__ = [
    "DISABLED_ERROR",
    "EVENT_TYPES",
    "TEST_EVENT",
    "AttemptResult",
    "claim_due",
    "create_endpoint",
    "delete_endpoint",
    "deliveries",
    "emit",
    "emit_finalized",
    "forget_session",
    "list_endpoints",
    "new_event_id",
    "new_secret",
    "on_commit_with_events",
    "pending_summary",
    "record_attempt",
    "render_bodies",
    "replay",
    "rotate_secret",
    "send_test",
    "sessions_deleted",
    "update_endpoint",
]

logger = logging.getLogger("transcripts.webhooks")

EVENT_TYPES = ("session.started", "turns.appended", "session.finalized", "session.deleted")
FINALIZED = "session.finalized"
TEST_EVENT = "webhook.test"
ENDPOINT_NOT_FOUND = "Webhook endpoint not found."
DELIVERY_NOT_FOUND = "Webhook delivery not found."
DISABLED_ERROR = "Endpoint disabled after failing every attempt for too long."
# Time for a deliverer to record an attempt's outcome after its timeout, before another
# deliverer may take the delivery again (a deliverer that died mid-attempt).
LEASE_MARGIN_SECONDS = 30.0
# What session.finalized carries: the session as a read answers it (the enveloped
# dialect's summary), given by whoever runs the deliverer.
Summarize = Callable[[SessionRecord], dict[str, Any]]


def new_secret() -> str:
    """A signing secret in the form the Standard Webhooks libraries take: whsec_<base64>."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _body(event_type: str, data: dict[str, Any], now: datetime) -> bytes:
    # The Standard Webhooks payload: {"type", "timestamp", "data"}.
    return orjson.dumps(
        {"type": event_type, "timestamp": now, "data": data}, option=orjson.OPT_UTC_Z
    )


async def emit(
    db: AsyncSession,
    event_type: str,
    data: dict[str, Any],
    *,
    session_owner_id: int,
) -> str | None:
    """Write an event about a session owned by ``session_owner_id`` (``data["session_id"]``)
    into ``db``'s transaction, with a pending delivery to every endpoint that takes it;
    answers the event's id (its webhook-id), or None when no endpoint takes it (nothing is
    written). Any service calls this inside its own transaction, after its change."""
    if event_type not in EVENT_TYPES or event_type == FINALIZED:
        raise ValueError(f"{event_type!r} is not an event emitted with its data")
    now = datetime.now(UTC)
    return await _publish(
        WebhookRepository(db),
        event_type,
        _body(event_type, data, now).decode(),
        session_id=uuid.UUID(str(data["session_id"])),
        session_owner_id=session_owner_id,
        now=now,
    )


async def emit_finalized(
    db: AsyncSession, session_id: uuid.UUID, *, session_owner_id: int
) -> str | None:
    """``session.finalized``, in the finalize's transaction, like ``emit``; but its body (the
    session's summary, its whole transcript in it) is not built here: the deliverer that
    first claims the event renders it from the session, once, and every attempt sends
    those bytes (``claim_due``). The finalize pays for one small row."""
    return await _publish(
        WebhookRepository(db),
        FINALIZED,
        None,
        session_id=session_id,
        session_owner_id=session_owner_id,
        now=datetime.now(UTC),
    )


async def _publish(
    webhooks: WebhookRepository,
    event_type: str,
    payload: str | None,
    *,
    session_id: uuid.UUID,
    session_owner_id: int,
    now: datetime,
) -> str | None:
    event_id = new_event_id()
    written = await webhooks.publish(
        session_owner_id=session_owner_id,
        event_id=event_id,
        event_type=event_type,
        payload=payload,
        now=now,
        session_id=session_id,
    )
    return event_id if written else None


def _finalized_body(
    summary: dict[str, Any], created_at: datetime, *, max_payload_bytes: int
) -> bytes:
    """The body of ``session.finalized``: the summary as the read answers it; above
    ``max_payload_bytes`` the transcript (``transcript``, ``transcript_text``) is left out
    and ``transcript_omitted`` says so, and the receiver reads it from the API."""
    body = _body(FINALIZED, summary, created_at)
    if len(body) > max_payload_bytes:
        trimmed = {**summary, "transcript": [], "transcript_text": "", "transcript_omitted": True}
        body = _body(FINALIZED, trimmed, created_at)
    return body


async def forget_session(db: AsyncSession, session_id: uuid.UUID) -> int:
    """Delete every stored event about a session, with its deliveries (pending ones are
    never sent): the events hold the session's data (a transcript, metadata). For the
    delete of a session, in its transaction, before it emits ``session.deleted``; answers
    how many events went."""
    return await WebhookRepository(db).delete_session_events([session_id])


async def sessions_deleted(
    db: AsyncSession, sessions: Sequence[tuple[uuid.UUID, int]], *, deleted_at: datetime
) -> None:
    """For a deletion of ``sessions`` ((session_id, owner_id) each), in its transaction:
    their stored events go (``forget_session``), and each emits ``session.deleted``."""
    if not sessions:
        return
    webhooks = WebhookRepository(db)
    await webhooks.delete_session_events([session_id for session_id, _ in sessions])
    now = datetime.now(UTC)
    for session_id, owner_id in sessions:
        data = {"session_id": str(session_id), "deleted_at": deleted_at}
        await _publish(
            webhooks,
            "session.deleted",
            _body("session.deleted", data, now).decode(),
            session_id=session_id,
            session_owner_id=owner_id,
            now=now,
        )


# Endpoints.


def _refuse_unknown_events(events: Sequence[str]) -> list[str]:
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown or not events:
        message = f"Must be one or more of {', '.join(EVENT_TYPES)}."
        raise BadRequest("Invalid events.", {"events": [message]})
    return list(dict.fromkeys(events))


async def _check_target(url: str, allow_private: bool) -> None:
    try:
        await resolve_target(url, allow_private=allow_private)
    except TargetRefused as exc:
        raise BadRequest("Invalid url.", {"url": [str(exc)]}) from None


async def create_endpoint(
    db: AsyncSession,
    caller: Caller,
    *,
    url: str,
    events: Sequence[str],
    description: str | None,
    allow_private: bool,
) -> WebhookEndpointRecord:
    """A new endpoint of the caller's; the answer carries its secret, shown this once."""
    chosen = _refuse_unknown_events(events)
    await _check_target(url, allow_private)
    return await WebhookRepository(db).add_endpoint(
        owner_id=caller.user_id,
        url=url,
        events=chosen,
        description=description,
        secret=new_secret(),
        now=datetime.now(UTC),
    )


async def list_endpoints(db: AsyncSession, caller: Caller) -> list[WebhookEndpointRecord]:
    return await WebhookRepository(db).endpoints_of(caller.user_id)


async def _own_endpoint(
    db: AsyncSession, caller: Caller, endpoint_id: int, *, for_update: bool = False
) -> WebhookEndpointRecord:
    endpoint = await WebhookRepository(db).endpoint_of(
        caller.user_id, endpoint_id, for_update=for_update
    )
    if endpoint is None:
        raise NotFound(ENDPOINT_NOT_FOUND)
    return endpoint


async def delete_endpoint(db: AsyncSession, caller: Caller, endpoint_id: int) -> None:
    await _own_endpoint(db, caller, endpoint_id, for_update=True)
    await WebhookRepository(db).delete_endpoint(endpoint_id)


async def rotate_secret(
    db: AsyncSession, caller: Caller, endpoint_id: int
) -> WebhookEndpointRecord:
    """A new secret, shown this once; attempts from now on are signed with it."""
    await _own_endpoint(db, caller, endpoint_id, for_update=True)
    return await WebhookRepository(db).update_endpoint(endpoint_id, secret=new_secret())


async def update_endpoint(
    db: AsyncSession,
    caller: Caller,
    endpoint_id: int,
    changes: dict[str, Any],
    *,
    allow_private: bool,
) -> WebhookEndpointRecord:
    """Change ``url``, ``events``, ``description`` or ``is_active``. Re-enabling a
    disabled endpoint starts its failure count afresh."""
    await _own_endpoint(db, caller, endpoint_id, for_update=True)
    values = dict(changes)
    if "events" in values:
        values["events"] = _refuse_unknown_events(values["events"])
    if "url" in values:
        await _check_target(values["url"], allow_private)
    if values.get("is_active") is True:
        values["failing_since"] = None
    return await WebhookRepository(db).update_endpoint(endpoint_id, **values)


async def send_test(db: AsyncSession, caller: Caller, endpoint_id: int) -> WebhookDeliveryRecord:
    """A ``webhook.test`` event to this endpoint alone, delivered like any other."""
    endpoint = await _own_endpoint(db, caller, endpoint_id)
    _refuse_inactive(endpoint)
    webhooks = WebhookRepository(db)
    now = datetime.now(UTC)
    event_id = new_event_id()
    data = {"endpoint_id": endpoint.id, "message": "A test event from transcripts."}
    (delivery_id,) = await webhooks.add_event(
        event_id=event_id,
        event_type=TEST_EVENT,
        payload=_body(TEST_EVENT, data, now).decode(),
        endpoint_ids=[endpoint.id],
        now=now,
    )
    delivery = await webhooks.delivery_of(caller.user_id, delivery_id)
    assert delivery is not None
    return delivery


def _refuse_inactive(endpoint: WebhookEndpointRecord) -> None:
    if not endpoint.is_active:
        message = "The endpoint is disabled; re-enable it with is_active first."
        raise Conflict(message, {"is_active": [message]})


async def deliveries(
    db: AsyncSession, caller: Caller, endpoint_id: int, *, before: int | None, limit: int
) -> list[WebhookDeliveryRecord]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    await _own_endpoint(db, caller, endpoint_id)
    return await WebhookRepository(db).deliveries_of(endpoint_id, before=before, limit=limit)


async def replay(db: AsyncSession, caller: Caller, delivery_id: int) -> WebhookDeliveryRecord:
    """Send a delivery's event again to its endpoint, as a new delivery with the same
    webhook-id (so a receiver that already handled it can tell)."""
    webhooks = WebhookRepository(db)
    original = await webhooks.delivery_of(caller.user_id, delivery_id)
    if original is None:
        raise NotFound(DELIVERY_NOT_FOUND)
    endpoint = await _own_endpoint(db, caller, original.endpoint_id)
    _refuse_inactive(endpoint)
    new_id = await webhooks.redeliver(original.event_id, endpoint.id, datetime.now(UTC))
    replayed = await webhooks.delivery_of(caller.user_id, new_id)
    assert replayed is not None
    return replayed


# The deliverer's side.


async def claim_due(db: AsyncSession, *, limit: int, timeout_seconds: float) -> list[WebhookClaim]:
    """Claim due deliveries for one deliverer; the caller commits before attempting them,
    and before rendering the bodies of those that have none (``render_bodies``)."""
    webhooks = WebhookRepository(db)
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=timeout_seconds + LEASE_MARGIN_SECONDS)
    claimed = await webhooks.claim_due(now=now, lease_until=lease, limit=limit)
    return await webhooks.claims(claimed) if claimed else []


async def render_bodies(
    db: AsyncSession,
    claims: list[WebhookClaim],
    *,
    summarize: Summarize,
    max_payload_bytes: int,
) -> list[WebhookClaim]:
    """The claims, each with its body: an event written without one (``emit_finalized``)
    gets it here, ``summarize`` of its session as it now stands (finalized and committed),
    stored so that every attempt sends the same bytes. Two deliverers rendering one event
    at once both answer the body stored first.

    In a transaction of its own, after the claim's has committed: it then holds no lock on
    a delivery while it takes the event's, the order a deletion of the session takes them
    in reverse. A claim whose session is gone (deleted with its events), or whose body
    could not be built, is left out; its lease runs out, and it is taken again if it is
    still there."""
    waiting = {claim.event_id: claim for claim in claims if claim.payload is None}
    if not waiting:
        return claims
    records = await find_session_records(
        db, [claim.session_id for claim in waiting.values() if claim.session_id is not None]
    )
    bodies: dict[str, str] = {}
    for event_id, claim in waiting.items():
        record = records.get(str(claim.session_id))
        if claim.event_type != FINALIZED or record is None:
            continue
        try:
            body = _finalized_body(
                summarize(record), claim.event_created_at, max_payload_bytes=max_payload_bytes
            )
        except Exception:
            # One event's failure must not hold back the others claimed with it.
            logger.exception("webhooks: rendering the body of %s failed", event_id)
            continue
        bodies[event_id] = body.decode()
    stored = await WebhookRepository(db).set_payloads(bodies) if bodies else {}
    return [
        claim if claim.payload is not None else replace(claim, payload=stored[claim.event_id])
        for claim in claims
        if claim.payload is not None or claim.event_id in stored
    ]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came to, and what follows from it."""

    # "gone": the delivery was deleted meanwhile (with its session or endpoint), so
    # nothing was recorded.
    outcome: Literal["succeeded", "retry", "failed", "gone"]
    next_attempt_at: datetime | None
    disabled: bool = False


async def record_attempt(
    db: AsyncSession,
    claim: WebhookClaim,
    attempt: WebhookAttempt,
    *,
    retry_schedule: Sequence[float],
    disable_after: timedelta,
) -> AttemptResult:
    """Record an attempt: a 2xx succeeds; otherwise the next retry of ``retry_schedule``
    (seconds after this attempt), or failed once the schedule is spent. An endpoint whose
    every attempt has failed for ``disable_after`` is disabled."""
    webhooks = WebhookRepository(db)
    succeeded = attempt.response_code is not None and 200 <= attempt.response_code < 300
    if succeeded:
        if not await webhooks.record_attempt(
            claim, status="succeeded", next_attempt_at=None, attempt=attempt
        ):
            return AttemptResult("gone", None)
        # Not only when the claim saw the endpoint failing: another attempt may have
        # failed since this one was claimed.
        await webhooks.endpoint_succeeded(claim.endpoint_id)
        return AttemptResult("succeeded", None)
    retry = claim.attempts  # this was attempt number claim.attempts + 1
    next_attempt_at = None
    if retry < len(retry_schedule):
        next_attempt_at = attempt.at + timedelta(seconds=retry_schedule[retry])
    if not await webhooks.record_attempt(
        claim,
        status="pending" if next_attempt_at else "failed",
        next_attempt_at=next_attempt_at,
        attempt=attempt,
    ):
        # Nothing to retry, and its endpoint, perhaps gone too, is not judged by it.
        return AttemptResult("gone", None)
    failing_since = await webhooks.endpoint_failed(claim.endpoint_id, now=attempt.at)
    if failing_since is not None and attempt.at - failing_since >= disable_after:
        await webhooks.disable_endpoint(claim.endpoint_id, reason=DISABLED_ERROR)
        return AttemptResult("failed", None, disabled=True)
    return AttemptResult("retry" if next_attempt_at else "failed", next_attempt_at)


async def pending_summary(db: AsyncSession) -> PendingSummary:
    return await WebhookRepository(db).pending_summary()
