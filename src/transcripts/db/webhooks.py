"""Webhooks' statements: endpoints, the event outbox, deliveries and their claims.

A repository wraps the unit of work (an ``AsyncSession``) it is given and never commits;
the caller of the service owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from typing import cast as typed

from sqlalchemy import (
    ColumnElement,
    Insert,
    Table,
    bindparam,
    case,
    cast,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from transcripts.db.tables import User, WebhookDelivery, WebhookEndpoint, WebhookEvent
from transcripts.domain import (
    WebhookAttempt,
    WebhookClaim,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)

__all__ = ["PendingSummary", "WebhookRepository", "on_commit_with_events"]

# Set on a unit of work that wrote an event; read (and cleared) when it commits.
_EMITTED = "transcripts.webhooks.emitted"

Status = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class PendingSummary:
    count: int
    oldest_created_at: datetime | None


def _endpoint(row: WebhookEndpoint, *, with_secret: bool = False) -> WebhookEndpointRecord:
    return WebhookEndpointRecord(
        id=row.id,
        owner_id=row.owner_id,
        url=row.url,
        events=list(row.events),
        description=row.description,
        is_active=row.is_active,
        failing_since=row.failing_since,
        created_at=row.created_at,
        secret=row.secret if with_secret else None,
    )


def _attempt(entry: dict[str, Any]) -> WebhookAttempt:
    return WebhookAttempt(
        at=datetime.fromisoformat(entry["at"]),
        response_code=entry.get("response_code"),
        error=entry.get("error"),
        duration_ms=int(entry.get("duration_ms", 0)),
    )


def _delivery(row: WebhookDelivery, event_type: str) -> WebhookDeliveryRecord:
    return WebhookDeliveryRecord(
        id=row.id,
        event_id=row.event_id,
        event_type=event_type,
        endpoint_id=row.endpoint_id,
        status=typed(Status, row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_response_code=row.last_response_code,
        last_error=row.last_error,
        attempt_log=[_attempt(entry) for entry in row.attempt_log or []],
        created_at=row.created_at,
    )


def _readers(session_owner_id: Any) -> ColumnElement[bool]:
    """An endpoint's owner may read a session of ``session_owner_id``: it is that owner's
    own, or the endpoint is staff's (staff read every session)."""
    return or_(User.is_staff.is_(True), WebhookEndpoint.owner_id == session_owner_id)


def _publish_statement() -> Insert:
    """PostgreSQL's publish, one statement: the endpoints that take the event, the event
    when there is any, and a delivery to each. Built once: a statement this size costs
    more to build and key for the cache than to run. On the tables, not the mapped
    classes: executed with parameters, an ORM insert would be taken for a bulk one."""
    takers = (
        select(WebhookEndpoint.id.label("endpoint_id"))
        .join(User, User.id == WebhookEndpoint.owner_id)
        .where(
            WebhookEndpoint.is_active.is_(True),
            _readers(bindparam("owner_id")),
            cast(WebhookEndpoint.events, JSONB).contains(bindparam("event_types", type_=JSONB)),
        )
        .cte("takers")
    )
    event_row = (
        insert(typed(Table, WebhookEvent.__table__))
        .from_select(
            ["id", "type", "payload", "session_id", "created_at"],
            select(
                bindparam("event_id", type_=WebhookEvent.id.type),
                bindparam("event_type", type_=WebhookEvent.type.type),
                bindparam("payload", type_=WebhookEvent.payload.type),
                bindparam("session_id", type_=WebhookEvent.session_id.type),
                bindparam("now", type_=WebhookEvent.created_at.type),
            ).where(exists(select(takers.c.endpoint_id))),
        )
        .returning(WebhookEvent.id)
        .cte("event")
    )
    return (
        insert(typed(Table, WebhookDelivery.__table__))
        .from_select(
            [
                "event_id",
                "endpoint_id",
                "status",
                "attempts",
                "next_attempt_at",
                "attempt_log",
                "created_at",
            ],
            select(
                event_row.c.id,
                takers.c.endpoint_id,
                literal("pending", WebhookDelivery.status.type),
                literal(0, WebhookDelivery.attempts.type),
                bindparam("now", type_=WebhookDelivery.next_attempt_at.type),
                literal([], WebhookDelivery.attempt_log.type),
                bindparam("now", type_=WebhookDelivery.created_at.type),
            ).select_from(event_row.join(takers, true())),
        )
        .returning(WebhookDelivery.id)
        .add_cte(takers)
        .add_cte(event_row)
    )


_PUBLISH = _publish_statement()


class WebhookRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db
        self._backend = db.get_bind().dialect.name

    # Endpoints.

    async def add_endpoint(
        self,
        *,
        owner_id: int,
        url: str,
        events: list[str],
        description: str | None,
        secret: str,
        now: datetime,
    ) -> WebhookEndpointRecord:
        row = WebhookEndpoint(
            owner_id=owner_id,
            url=url,
            events=events,
            description=description,
            secret=secret,
            is_active=True,
            created_at=now,
        )
        self._db.add(row)
        await self._db.flush()
        return _endpoint(row, with_secret=True)

    async def endpoints_of(self, owner_id: int) -> list[WebhookEndpointRecord]:
        rows = await self._db.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.owner_id == owner_id)
            .order_by(WebhookEndpoint.id)
        )
        return [_endpoint(row) for row in rows]

    async def endpoint_of(
        self, owner_id: int, endpoint_id: int, *, for_update: bool = False
    ) -> WebhookEndpointRecord | None:
        statement = select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.owner_id == owner_id
        )
        if for_update:
            statement = statement.with_for_update()
        row = await self._db.scalar(statement.execution_options(populate_existing=True))
        return None if row is None else _endpoint(row)

    async def update_endpoint(self, endpoint_id: int, **values: Any) -> WebhookEndpointRecord:
        await self._db.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        row = await self._db.scalar(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .execution_options(populate_existing=True)
        )
        assert row is not None
        return _endpoint(row, with_secret="secret" in values)

    async def delete_endpoint(self, endpoint_id: int) -> None:
        # Its deliveries go with it (ON DELETE CASCADE; SQLite enforces it, foreign_keys=ON).
        await self._db.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))

    async def subscribers(self, session_owner_id: int, event_type: str) -> list[int]:
        """The active endpoints that take ``event_type`` about a session of
        ``session_owner_id`` (``_readers``)."""
        rows = await self._db.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events)
            .join(User, User.id == WebhookEndpoint.owner_id)
            .where(WebhookEndpoint.is_active.is_(True), _readers(session_owner_id))
            .order_by(WebhookEndpoint.id)
        )
        # A user has a handful of endpoints: on SQLite their subscriptions are matched
        # here rather than with its JSON functions.
        return [endpoint_id for endpoint_id, events in rows if event_type in events]

    # The outbox.

    async def publish(
        self,
        *,
        session_owner_id: int,
        event_id: str,
        event_type: str,
        payload: str | None,
        now: datetime,
        session_id: uuid.UUID | None,
    ) -> bool:
        """The event and one pending delivery, due now, per endpoint that takes it (see
        ``subscribers``); nothing when none does. Answers whether the event was written.

        On PostgreSQL this is one statement, the lookup of the endpoints included: an
        event costs the change that causes it one round trip, subscribed or not."""
        if self._backend != "postgresql":
            endpoint_ids = await self.subscribers(session_owner_id, event_type)
            if not endpoint_ids:
                return False
            await self.add_event(
                event_id=event_id,
                event_type=event_type,
                payload=payload,
                endpoint_ids=endpoint_ids,
                now=now,
                session_id=session_id,
            )
            return True
        written = await self._db.execute(
            _PUBLISH,
            {
                "owner_id": session_owner_id,
                "event_types": [event_type],
                "event_id": event_id,
                "event_type": event_type,
                "payload": payload,
                "session_id": session_id,
                "now": now,
            },
        )
        if written.first() is None:
            return False
        self._db.info[_EMITTED] = True
        return True

    async def add_event(
        self,
        *,
        event_id: str,
        event_type: str,
        payload: str | None,
        endpoint_ids: Sequence[int],
        now: datetime,
        session_id: uuid.UUID | None = None,
    ) -> list[int]:
        """The event and one pending delivery per endpoint, due now; answers their ids.
        A ``payload`` of None is rendered when the event is first claimed (``set_payload``)."""
        await self._db.execute(
            insert(WebhookEvent).values(
                id=event_id,
                type=event_type,
                payload=payload,
                session_id=session_id,
                created_at=now,
            )
        )
        return await self._add_deliveries(event_id, endpoint_ids, now)

    async def _add_deliveries(
        self, event_id: str, endpoint_ids: Sequence[int], now: datetime
    ) -> list[int]:
        if not endpoint_ids:
            return []
        self._db.info[_EMITTED] = True
        result = await self._db.execute(
            insert(WebhookDelivery).returning(WebhookDelivery.id),
            [
                {
                    "event_id": event_id,
                    "endpoint_id": endpoint_id,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "attempt_log": [],
                    "created_at": now,
                }
                for endpoint_id in endpoint_ids
            ],
        )
        return [row[0] for row in result]

    async def delete_session_events(self, session_ids: Sequence[uuid.UUID]) -> int:
        """Every event about the sessions, with its deliveries (ON DELETE CASCADE)."""
        result = await self._db.execute(
            delete(WebhookEvent).where(WebhookEvent.session_id.in_(list(session_ids)))
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def redeliver(self, event_id: str, endpoint_id: int, now: datetime) -> int:
        """A new pending delivery of a stored event (a replay): same event, same webhook-id."""
        (delivery_id,) = await self._add_deliveries(event_id, [endpoint_id], now)
        return delivery_id

    # The delivery log.

    async def deliveries_of(
        self, endpoint_id: int, *, before: int | None, limit: int
    ) -> list[WebhookDeliveryRecord]:
        """The endpoint's deliveries, newest first."""
        statement = (
            select(WebhookDelivery, WebhookEvent.type)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
        if before is not None:
            statement = statement.where(WebhookDelivery.id < before)
        rows = await self._db.execute(statement)
        return [_delivery(row, event_type) for row, event_type in rows]

    async def delivery_of(self, owner_id: int, delivery_id: int) -> WebhookDeliveryRecord | None:
        row = (
            await self._db.execute(
                select(WebhookDelivery, WebhookEvent.type)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.id == delivery_id, WebhookEndpoint.owner_id == owner_id)
                .execution_options(populate_existing=True)
            )
        ).first()
        return None if row is None else _delivery(row[0], row[1])

    # The deliverer's side.

    async def claim_due(self, *, now: datetime, lease_until: datetime, limit: int) -> list[int]:
        """Take up to ``limit`` due deliveries of active endpoints, oldest due first, by
        moving their ``next_attempt_at`` to ``lease_until``.

        On PostgreSQL the rows are locked with SKIP LOCKED, so deliverers of several
        replicas claim disjoint sets without waiting on one another; SQLite serialises
        writers on its one lock, which gives the same guarantee.
        """
        due = (
            select(WebhookDelivery.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                WebhookEndpoint.is_active.is_(True),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
        if self._backend == "postgresql":
            due = due.with_for_update(of=WebhookDelivery, skip_locked=True)
        result = await self._db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=lease_until)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        )
        return [row[0] for row in result]

    async def claims(self, delivery_ids: Sequence[int]) -> list[WebhookClaim]:
        rows = await self._db.execute(
            select(
                WebhookDelivery.id,
                WebhookDelivery.endpoint_id,
                WebhookDelivery.event_id,
                WebhookEvent.type,
                WebhookEvent.created_at,
                WebhookEvent.session_id,
                WebhookEndpoint.url,
                WebhookEndpoint.secret,
                WebhookEvent.payload,
                WebhookDelivery.attempts,
                WebhookEndpoint.failing_since,
                WebhookDelivery.attempt_log,
            )
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.id.in_(list(delivery_ids)))
            .order_by(WebhookDelivery.id)
        )
        return [
            WebhookClaim(
                delivery_id=row.id,
                endpoint_id=row.endpoint_id,
                event_id=row.event_id,
                event_type=row.type,
                event_created_at=row.created_at,
                session_id=row.session_id,
                url=row.url,
                secret=row.secret,
                payload=row.payload,
                attempts=row.attempts,
                failing_since=row.failing_since,
                attempt_log=list(row.attempt_log or []),
            )
            for row in rows
        ]

    async def set_payloads(self, bodies: dict[str, str]) -> dict[str, str]:
        """Store the bodies of events written without one (by event id), unless another
        deliverer stored them first; answers the stored bodies, which every attempt sends.
        One statement for them all, and a second for any another deliverer stored."""
        rows = await self._db.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(list(bodies)), WebhookEvent.payload.is_(None))
            .values(payload=case(bodies, value=WebhookEvent.id))
            .returning(WebhookEvent.id, WebhookEvent.payload)
            .execution_options(synchronize_session=False)
        )
        stored = {event_id: payload for event_id, payload in rows if payload is not None}
        if len(stored) < len(bodies):
            earlier = await self._db.execute(
                select(WebhookEvent.id, WebhookEvent.payload).where(
                    WebhookEvent.id.in_([event_id for event_id in bodies if event_id not in stored])
                )
            )
            stored.update(
                (event_id, payload) for event_id, payload in earlier if payload is not None
            )
        return stored

    async def record_attempt(
        self,
        claim: WebhookClaim,
        *,
        status: Status,
        next_attempt_at: datetime | None,
        attempt: WebhookAttempt,
    ) -> bool:
        """The attempt's outcome; False when the claimed delivery is no longer there to
        take it. The claim holds the delivery (its lease) until this runs, so the log read
        with the claim is still the stored one.

        The row is matched on more than its id: a delivery deleted meanwhile (with its
        session or endpoint) may have its id taken by a new one on SQLite, which reuses
        the highest rowid, and that one's status is not this attempt's to set."""
        entry = {
            "at": attempt.at.isoformat(),
            "response_code": attempt.response_code,
            "error": attempt.error,
            "duration_ms": attempt.duration_ms,
        }
        result = await self._db.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == claim.delivery_id,
                WebhookDelivery.event_id == claim.event_id,
                WebhookDelivery.endpoint_id == claim.endpoint_id,
                WebhookDelivery.attempts == claim.attempts,
            )
            .values(
                status=status,
                attempts=WebhookDelivery.attempts + 1,
                next_attempt_at=next_attempt_at,
                last_response_code=attempt.response_code,
                last_error=attempt.error,
                attempt_log=[*claim.attempt_log, entry],
            )
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def endpoint_succeeded(self, endpoint_id: int) -> None:
        await self._db.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.failing_since.is_not(None))
            .values(failing_since=None)
            .execution_options(synchronize_session=False)
        )

    async def endpoint_failed(self, endpoint_id: int, *, now: datetime) -> datetime | None:
        """Mark the endpoint failing from ``now`` unless it already was; answers since when
        (None when the endpoint is gone)."""
        await self._db.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.failing_since.is_(None))
            .values(failing_since=now)
            .execution_options(synchronize_session=False)
        )
        return await self._db.scalar(
            select(WebhookEndpoint.failing_since).where(WebhookEndpoint.id == endpoint_id)
        )

    async def disable_endpoint(self, endpoint_id: int, *, reason: str) -> None:
        """Deactivate the endpoint; its pending deliveries fail (a replay can send them)."""
        await self._db.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(is_active=False)
            .execution_options(synchronize_session=False)
        )
        await self._db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
            .values(status="failed", next_attempt_at=None, last_error=reason)
            .execution_options(synchronize_session=False)
        )

    async def pending_summary(self) -> PendingSummary:
        row = (
            await self._db.execute(
                select(func.count(), func.min(WebhookDelivery.created_at)).where(
                    WebhookDelivery.status == "pending"
                )
            )
        ).one()
        oldest = row[1]
        if isinstance(oldest, str):  # SQLite's MIN() is not typed by the column
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return PendingSummary(count=int(row[0]), oldest_created_at=oldest)


def on_commit_with_events(engine: AsyncEngine, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` each time a unit of work on ``engine`` that wrote a delivery
    commits (the deliverer's wake-up); answers the function that stops it."""
    bind = engine.sync_engine

    def after_commit(session: Session) -> None:
        if session.info.pop(_EMITTED, False) and session.bind is bind:
            callback()

    def after_rollback(session: Session) -> None:
        session.info.pop(_EMITTED, None)

    event.listen(Session, "after_commit", after_commit)
    event.listen(Session, "after_rollback", after_rollback)

    def stop() -> None:
        event.remove(Session, "after_commit", after_commit)
        event.remove(Session, "after_rollback", after_rollback)

    return stop
