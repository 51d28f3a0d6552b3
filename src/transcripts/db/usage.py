"""Usage rollups: Session History's totals kept per character and day, and per day for staff.

A session counts once where it started (its character, its UTC day) from the moment it
starts, so sessions never finalized are in the totals; finalize adds its usage; a deletion
takes both back out. Each change is an upsert in the transaction that made it, so the
rollups never disagree with the sessions they sum. Totals over a date range then read the
days the range covers whole from the rollups, and the sessions of the days it cuts (at most
two) directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.tables import Session, UsageByCharacterDay, UsageByDay
from transcripts.domain import SessionForDeletion, UsageTotals

__all__ = ["SHARDS", "RollupScope", "UsageRollups", "totals_between"]

# Rows per day of the staff rollup (migration cc37002fa595 backfills with the same number).
SHARDS = 16
MEASURES = (
    "sessions",
    "llm_input_tokens",
    "llm_output_tokens",
    "stt_audio_seconds",
    "tts_characters",
    "estimated_cost_micros",
)
NONE = UsageTotals(0, 0, 0, 0.0, 0, 0)


class UsageRollups:
    """The write side: add a session's counts (or take them back, negated)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db
        self._insert = (
            postgres_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
        )

    async def add(
        self,
        *,
        session_pk: int,
        character_id: int,
        owner_id: int,
        tenant_id: int,
        started_at: datetime,
        change: UsageTotals,
    ) -> None:
        values = {name: getattr(change, name) for name in MEASURES}
        day = started_at.astimezone(UTC).date()
        await self._upsert(
            UsageByCharacterDay,
            {
                "character_id": character_id,
                "day": day,
                "owner_id": owner_id,
                "tenant_id": tenant_id,
            },
            ["character_id", "day"],
            values,
        )
        await self._upsert(
            UsageByDay, {"day": day, "shard": session_pk % SHARDS}, ["day", "shard"], values
        )

    async def take_back(self, sessions: Sequence[SessionForDeletion]) -> None:
        """Remove deleted sessions from the rollups: their counts, negated, summed per row
        first, so a batch of sessions costs one upsert per rollup row it touches."""
        by_character: dict[tuple[int, date], tuple[int, int, list[UsageTotals]]] = {}
        by_day: dict[tuple[date, int], list[UsageTotals]] = {}
        for session in sessions:
            day = session.created_at.astimezone(UTC).date()
            entry = by_character.setdefault(
                (session.character_id, day), (session.owner_id, session.tenant_id, [])
            )
            entry[2].append(session.usage)
            by_day.setdefault((day, session.id % SHARDS), []).append(session.usage)
        for (character_id, day), (owner_id, tenant_id, usages) in sorted(by_character.items()):
            key = {
                "character_id": character_id,
                "day": day,
                "owner_id": owner_id,
                "tenant_id": tenant_id,
            }
            await self._upsert(UsageByCharacterDay, key, ["character_id", "day"], _negated(usages))
        for (day, shard), usages in sorted(by_day.items()):
            await self._upsert(
                UsageByDay, {"day": day, "shard": shard}, ["day", "shard"], _negated(usages)
            )

    async def _upsert(
        self, table: Any, key: dict[str, Any], conflict: list[str], values: dict[str, Any]
    ) -> None:
        statement = self._insert(table).values(**key, **values)
        await self._db.execute(
            statement.on_conflict_do_update(
                index_elements=conflict,
                set_={name: getattr(table, name) + statement.excluded[name] for name in values},
            )
        )


def _negated(usages: Sequence[UsageTotals]) -> dict[str, Any]:
    return {name: -sum(getattr(usage, name) for usage in usages) for name in MEASURES}


def _full_days(start: datetime | None, end: datetime | None) -> tuple[date | None, date | None]:
    """The first and last UTC days that lie wholly inside [start, end] (None: unbounded)."""
    first = None
    if start is not None:
        start = start.astimezone(UTC)
        first = start.date() if start.timetz() == time(tzinfo=UTC) else start.date() + timedelta(1)
    last = None
    if end is not None:
        # The last day d whose final microsecond the range still covers.
        last = (end.astimezone(UTC) + timedelta(microseconds=1)).date() - timedelta(1)
    return first, last


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _sums(*columns: Any) -> list[Any]:
    return [func.coalesce(func.sum(column), 0) for column in columns]


def _totals(row: Any) -> UsageTotals:
    # PostgreSQL sums bigints into numerics.
    sessions, llm_in, llm_out, stt, tts, cost = row
    return UsageTotals(int(sessions), int(llm_in), int(llm_out), float(stt), int(tts), int(cost))


@dataclass(frozen=True)
class RollupScope:
    """The rollup rows that sum the same sessions: a table, and conditions on its columns."""

    table: type[UsageByCharacterDay] | type[UsageByDay]
    conditions: list[ColumnElement[bool]]


async def totals_between(
    db: AsyncSession,
    *,
    start: datetime | None,
    end: datetime | None,
    session_conditions: list[ColumnElement[bool]],
    rollup: RollupScope,
) -> UsageTotals:
    """Totals of the sessions ``session_conditions`` select (the scope and filters, without
    dates) that started within [start, end] (inclusive): the whole days from ``rollup``, the
    days the range cuts from the sessions themselves."""
    first, last = _full_days(start, end)
    if first is not None and last is not None and first > last:
        return await _session_totals(db, session_conditions, start, end, inclusive_end=True)
    table = rollup.table
    days = list(rollup.conditions)
    if first is not None:
        days.append(table.day >= first)
    if last is not None:
        days.append(table.day <= last)
    statement = select(*_sums(*(getattr(table, name) for name in MEASURES))).where(*days)
    total = _totals((await db.execute(statement)).one())
    if start is not None and first is not None and start < _midnight(first):
        edge = await _session_totals(db, session_conditions, start, _midnight(first))
        total = _add(total, edge)
    if end is not None and last is not None and _midnight(last + timedelta(1)) <= end:
        edge = await _session_totals(
            db, session_conditions, _midnight(last + timedelta(1)), end, inclusive_end=True
        )
        total = _add(total, edge)
    return total


async def _session_totals(
    db: AsyncSession,
    conditions: list[ColumnElement[bool]],
    start: datetime | None,
    end: datetime | None,
    *,
    inclusive_end: bool = False,
) -> UsageTotals:
    bounded = list(conditions)
    if start is not None:
        bounded.append(Session.created_at >= start)
    if end is not None:
        bounded.append(Session.created_at <= end if inclusive_end else Session.created_at < end)
    statement = select(
        func.count(),
        *_sums(*(getattr(Session, name) for name in MEASURES[1:])),
    ).where(*bounded)
    return _totals((await db.execute(statement)).one())


def _add(one: UsageTotals, other: UsageTotals) -> UsageTotals:
    return UsageTotals(*(getattr(one, name) + getattr(other, name) for name in MEASURES))
