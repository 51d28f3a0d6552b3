"""The same scoped lookup at 1,000 and at 100,000+ sessions: its plan and its cost.

The small database is built for the run (same generator, same schema) and dropped after it.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.data import Fixture, pg_admin, prepare_postgres
from transcripts.db.hot_read import SESSION_SQL

__all__ = ["LookupCost", "compare_lookups"]

SMALL_SCALE = 1_000
SQL = SESSION_SQL["postgresql", "key", True]
LOOKED_UP = 10  # the 10-turn session: the lookup dominates its cost


@dataclass(frozen=True)
class LookupCost:
    sessions: int
    round_trip_us: float  # median, client side, asyncpg fetchrow
    execution_us: float  # median of the server's "Execution Time"
    shared_hit: int  # buffers touched by one lookup
    plan: str


def _buffers(plan: str) -> int:
    # The top node's line carries the statement's total.
    for line in plan.splitlines():
        if "Buffers: shared" in line:
            hits = [part for part in line.split() if part.startswith("hit=")]
            return int(hits[0].removeprefix("hit=")) if hits else 0
    return 0


async def _measure(dsn: str, sessions: int, fixture: Fixture, repeats: int) -> LookupCost:
    connection = await asyncpg.connect(dsn)
    session_id = uuid.UUID(fixture.session_ids[LOOKED_UP])
    args: tuple[Any, ...] = (fixture.api_key_hash, session_id)
    try:
        statement = await connection.prepare(SQL)
        for _ in range(100):  # warm caches and the plan cache alike
            await statement.fetchrow(*args)
        round_trips = []
        for _ in range(repeats):
            started = time.perf_counter()
            await statement.fetchrow(*args)
            round_trips.append(time.perf_counter() - started)
        explain = await connection.prepare(f"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) {SQL}")
        executions = []
        for _ in range(max(50, repeats // 5)):
            lines = [row[0] for row in await explain.fetch(*args)]
            executions.append(float(lines[-1].split(":")[1].split()[0]))
        plan_rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {SQL}", *args)
        plan = "\n".join(row[0] for row in plan_rows)
    finally:
        await connection.close()
    return LookupCost(
        sessions=sessions,
        round_trip_us=statistics.median(round_trips) * 1e6,
        execution_us=statistics.median(executions) * 1e3,
        shared_hit=_buffers(plan),
        plan=plan,
    )


async def compare_lookups(
    admin_dsn: str, big: str, big_sessions: int, big_fixture: Fixture, repeats: int, log: Any
) -> tuple[LookupCost, LookupCost]:
    base = admin_dsn.rsplit("/", 1)[0]
    small = f"transcripts_bench_small_{os.getpid()}"
    try:
        small_fixture = await prepare_postgres(admin_dsn, small, SMALL_SCALE, log)
        small_cost = await _measure(f"{base}/{small}", SMALL_SCALE, small_fixture, repeats)
        big_cost = await _measure(f"{base}/{big}", big_sessions, big_fixture, repeats)
        # Twice, interleaved, so a burst of load elsewhere cannot favour one side.
        small_again = await _measure(f"{base}/{small}", SMALL_SCALE, small_fixture, repeats)
        big_again = await _measure(f"{base}/{big}", big_sessions, big_fixture, repeats)
    finally:
        await pg_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{small}" WITH (FORCE)')
    return _better(small_cost, small_again), _better(big_cost, big_again)


def _better(first: LookupCost, second: LookupCost) -> LookupCost:
    """The quieter of two measurements: noise on a shared machine only ever adds time."""
    return first if first.round_trip_us <= second.round_trip_us else second
