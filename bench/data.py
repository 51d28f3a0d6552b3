"""The benchmark's data, written in bulk and reused while it is at the requested scale.

The schema comes from the real Alembic history; the rows are generated here and loaded with
PostgreSQL's COPY (SQLite: one executemany per table), never through the ORM. Many users own
many characters and sessions; one ordinary (non-staff) owner holds the four measured
sessions, of 10, 100, 1,000 and 10,000 turns of 100-200 characters each.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from transcripts.auth import generate_api_key
from transcripts.migrate import upgrade_to_head

__all__ = ["SIZES", "Fixture", "pg_admin", "prepare_postgres", "prepare_sqlite"]

SIZES = (10, 100, 1_000, 10_000)
OWNER_EMAIL = "owner@bench.example"
BENCH_KEY_NAME = "bench"
# Bumped when the generated data changes shape, so an older bench database is rebuilt.
DATA_VERSION = 3  # 2: the session row's owner and counters (issues 16, 17); 3: append_seq

_VOCABULARY = (
    "the a our your this that my we you I it they can could would should will just really "
    "account plan widget transcript recording session call agent voice page dashboard team "
    "billing invoice minute month trial upgrade export email support question problem setting "
    "help check send book move show open find keep start stop change update explain try need "
    "want think know see use add remove share today tomorrow yesterday later again quickly "
    "right now maybe sure okay thanks please also still only every each some more less about "
    "with from for into over after before during while because when where which how what "
    "customers visitors users engineers calendar meeting demo price pricing language website"
)
_WORDS = _VOCABULARY.split()
_PUNCTUATION = (".", ".", ".", "?", "!")


def _sentence(rng: random.Random) -> str:
    """100 to 200 characters of plausible conversational English."""
    target = rng.randint(100, 200)
    words: list[str] = []
    length = -1
    while True:
        word = rng.choice(_WORDS)
        if length + 1 + len(word) + 1 > target:
            break
        words.append(word)
        length += 1 + len(word)
    text = " ".join(words) + rng.choice(_PUNCTUATION)
    text = text[0].upper() + text[1:]
    # Pad with a short word so every turn lands inside the 100-200 band.
    while len(text) < 100:
        text = text[:-1] + " ok" + text[-1]
    return text


@dataclass(frozen=True)
class Fixture:
    """What the load generator needs: the owner, a fresh API key and the measured sessions."""

    user_id: int
    api_key: str
    api_key_hash: str
    session_ids: dict[int, str]  # turn count -> session UUID


@dataclass
class _Rows:
    tenants: list[dict[str, Any]]
    users: list[dict[str, Any]]
    api_keys: list[dict[str, Any]]
    characters: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    turns: list[dict[str, Any]]


def _turns(
    rng: random.Random, session_pk: int, count: int, sentences: list[str] | None
) -> Iterator[dict[str, Any]]:
    ts = 0.4
    created = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(count):
        text = rng.choice(sentences) if sentences else _sentence(rng)
        speaking = round(len(text) / 15, 2)
        role = "assistant" if index % 2 == 0 else "user"
        yield {
            "session_pk": session_pk,
            "turn_index": index,
            "role": role,
            "text": text,
            "ts": round(ts, 2),
            "speaking_duration_seconds": speaking,
            "was_interrupted": role == "assistant" and rng.random() < 0.08,
            "created_at": created,
            "append_seq": index + 1,
        }
        ts += speaking + rng.uniform(0.3, 1.5)


def _generate(session_count: int, seed: int = 7) -> _Rows:
    rng = random.Random(seed)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    tenant_count = max(5, session_count // 2_000)
    user_count = max(20, session_count // 50)
    character_count = max(40, session_count // 20)

    tenants = [
        {"id": i, "slug": f"tenant-{i}", "name": f"Tenant {i}", "created_at": now}
        for i in range(1, tenant_count + 1)
    ]
    users = [
        {
            "id": i,
            "email": OWNER_EMAIL if i == 1 else f"user-{i}@bench.example",
            "tenant_id": 1 if i == 1 else rng.randint(1, tenant_count),
            "is_staff": False,
            "is_active": True,
            "created_at": now,
        }
        for i in range(1, user_count + 1)
    ]
    api_keys = []
    for user in users[1:]:
        generated = generate_api_key()
        api_keys.append(
            {
                "id": user["id"],
                "user_id": user["id"],
                "name": "default",
                "key_hash": generated.key_hash,
                "key_preview": generated.key_preview,
                "is_active": True,
                "created_at": now,
                "last_used_at": None,
                "revoked_at": None,
            }
        )
    characters = []
    for i in range(1, character_count + 1):
        creator = users[0] if i == 1 else rng.choice(users)
        characters.append(
            {
                "id": i,
                "public_id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "slug": "bench-bot" if i == 1 else f"bot-{i}",
                "name": "Bench Bot" if i == 1 else f"Character {i}",
                "tenant_id": creator["tenant_id"],
                "created_by_id": creator["id"],
                "is_active": True,
                "transcripts_enabled": True,
                "allowed_origins": "[]",
                "created_at": now,
            }
        )

    sentences = [_sentence(rng) for _ in range(2_000)]
    sessions: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for pk in range(1, session_count + 1):
        measured = pk <= len(SIZES)
        character = characters[0] if measured else rng.choice(characters)
        turn_count = SIZES[pk - 1] if measured else rng.randint(0, 8)
        session_turns = list(_turns(rng, pk, turn_count, None if measured else sentences))
        started = now - timedelta(minutes=rng.randint(60, 200_000))
        duration = (session_turns[-1]["ts"] if session_turns else 0.0) + 3.0
        ended = started + timedelta(seconds=round(duration, 3))
        sessions.append(
            {
                "id": pk,
                "session_id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "tenant_id": character["tenant_id"],
                "character_id": character["id"],
                "user_id": character["created_by_id"],
                "owner_id": character["created_by_id"],
                "room_name": f"bench-{turn_count}-turns" if measured else f"room-{pk}",
                "origin_url": "https://example.com/contact",
                "metadata": orjson.dumps({"plan": "pro", "visitor": f"v_{pk}"}).decode(),
                "client_label": f"visitor {pk}",
                "transcripts_enabled": True,
                "created_at": started,
                "updated_at": ended,
                "ended_at": ended,
                "finalized_at": ended + timedelta(seconds=2),
                "llm_input_tokens": 40 * turn_count,
                "llm_output_tokens": 15 * turn_count,
                "llm_model": "gpt-4o-mini",
                "llm_provider": "openai",
                "stt_audio_seconds": round(duration / 2, 1),
                "stt_provider": "openai",
                "tts_characters": sum(len(t["text"]) for t in session_turns[::2]),
                "tts_provider": "openai",
                "estimated_cost_micros": 37 * turn_count,
                "last_append_seq": turn_count,
                "recording_status": "NONE",
                "recording_url": None,
                "turn_count": len(session_turns),
                "text_bytes": sum(len(t["text"].encode()) for t in session_turns),
                "interruption_count": sum(t["was_interrupted"] for t in session_turns),
            }
        )
        turns.extend(session_turns)
    return _Rows(tenants, users, api_keys, characters, sessions, turns)


_TABLES = ("tenants", "users", "api_keys", "characters", "sessions", "turns")


def _measured_session_ids(rows: list[tuple[str, int]]) -> dict[int, str] | None:
    """The measured sessions, if the database holds all four with their full transcripts."""
    found = {count: session_id for session_id, count in rows}
    return found if set(found) == set(SIZES) else None


# ---------------------------------------------------------------- PostgreSQL


async def _pg_state(dsn: str) -> tuple[int, int] | None:
    """(data version, session count) of an existing bench database, if there is one."""
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        if await connection.fetchval("SELECT to_regclass('bench_info')") is None:
            return None
        version, sessions = await connection.fetchrow("SELECT version, sessions FROM bench_info")
        if await _pg_measured(connection) is None:
            return None
        return version, sessions
    finally:
        await connection.close()


async def pg_admin(admin_dsn: str, sql: str) -> None:
    admin = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


def _pg_records(rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = list(rows[0])
    return columns, [tuple(row.values()) for row in rows]


async def _pg_load(dsn: str, data: _Rows, session_count: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            for table in _TABLES:
                columns, records = _pg_records(getattr(data, table))
                await connection.copy_records_to_table(table, records=records, columns=columns)
                if table != "turns":
                    await connection.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" (SELECT max(id) FROM {table}))"
                    )
            await connection.execute(
                "CREATE TABLE bench_info (version int NOT NULL, sessions int NOT NULL)"
            )
            await connection.execute(
                "INSERT INTO bench_info VALUES ($1, $2)", DATA_VERSION, session_count
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def _pg_fresh_key(dsn: str) -> tuple[int, str, str, dict[int, str]]:
    """A new API key for the owner (the old bench keys are revoked): keys are shown once."""
    generated = generate_api_key()
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            user_id = await connection.fetchval(
                "SELECT id FROM users WHERE email = $1", OWNER_EMAIL
            )
            await connection.execute(
                "UPDATE api_keys SET is_active = false, revoked_at = now()"
                " WHERE user_id = $1 AND name = $2 AND is_active",
                user_id,
                BENCH_KEY_NAME,
            )
            await connection.execute(
                "INSERT INTO api_keys (user_id, name, key_hash, key_preview, is_active, created_at)"
                " VALUES ($1, $2, $3, $4, true, now())",
                user_id,
                BENCH_KEY_NAME,
                generated.key_hash,
                generated.key_preview,
            )
        measured = await _pg_measured(connection)
    finally:
        await connection.close()
    assert measured is not None, "the bench database lost its measured sessions"
    return user_id, generated.key, generated.key_hash, measured


async def _pg_measured(connection: asyncpg.Connection) -> dict[int, str] | None:
    rows = await connection.fetch(
        "SELECT s.session_id::text, count(t.turn_index)::int FROM sessions s"
        " JOIN turns t ON t.session_pk = s.id WHERE s.id <= $1 GROUP BY s.session_id",
        len(SIZES),
    )
    return _measured_session_ids([(row[0], row[1]) for row in rows])


async def prepare_postgres(
    admin_dsn: str, name: str, session_count: int, log: Any = print
) -> Fixture:
    """The bench database at ``session_count`` sessions: reused when it is already there."""
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    if await _pg_state(dsn) != (DATA_VERSION, session_count):
        log(f"seeding PostgreSQL database {name} with {session_count:,} sessions")
        await pg_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await pg_admin(admin_dsn, f'CREATE DATABASE "{name}"')
        _migrate(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        started = datetime.now(UTC)
        await _pg_load(dsn, _generate(session_count), session_count)
        log(f"seeded in {(datetime.now(UTC) - started).total_seconds():.1f} s")
    else:
        log(f"reusing PostgreSQL database {name} ({session_count:,} sessions)")
    user_id, key, key_hash, sessions = await _pg_fresh_key(dsn)
    return Fixture(user_id, key, key_hash, sessions)


def _migrate(url: str) -> None:
    # Alembic's env runs a loop of its own: keep it off the caller's.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(upgrade_to_head, url).result()


# ---------------------------------------------------------------- SQLite


def _sqlite_value(value: Any) -> Any:
    # The forms SQLAlchemy itself stores: UUIDs as 32 hex digits, datetimes as ISO text.
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def prepare_sqlite(path: Path, session_count: int, log: Any = print) -> Fixture:
    """The SQLite bench file at ``session_count`` sessions: reused when it is already there."""
    state: tuple[int, int] | None = None
    if path.exists():
        with sqlite3.connect(path) as connection:
            try:
                state = connection.execute("SELECT version, sessions FROM bench_info").fetchone()
            except sqlite3.OperationalError:
                state = None
    if state != (DATA_VERSION, session_count):
        log(f"seeding SQLite file {path} with {session_count:,} sessions")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        _migrate(f"sqlite+aiosqlite:///{path}")
        data = _generate(session_count)
        with sqlite3.connect(path) as connection:
            for table in _TABLES:
                rows = getattr(data, table)
                columns = list(rows[0])
                connection.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' for _ in columns)})",
                    ([_sqlite_value(value) for value in row.values()] for row in rows),
                )
            connection.execute("CREATE TABLE bench_info (version INTEGER, sessions INTEGER)")
            connection.execute(
                "INSERT INTO bench_info VALUES (?, ?)", (DATA_VERSION, session_count)
            )
            connection.execute("ANALYZE")
    else:
        log(f"reusing SQLite file {path} ({session_count:,} sessions)")
    generated = generate_api_key()
    with sqlite3.connect(path) as connection:
        (user_id,) = connection.execute(
            "SELECT id FROM users WHERE email = ?", (OWNER_EMAIL,)
        ).fetchone()
        now = _sqlite_value(datetime.now(UTC))
        connection.execute(
            "UPDATE api_keys SET is_active = 0, revoked_at = ?"
            " WHERE user_id = ? AND name = ? AND is_active",
            (now, user_id, BENCH_KEY_NAME),
        )
        connection.execute(
            "INSERT INTO api_keys (user_id, name, key_hash, key_preview, is_active, created_at)"
            " VALUES (?, ?, ?, ?, 1, ?)",
            (user_id, BENCH_KEY_NAME, generated.key_hash, generated.key_preview, now),
        )
        rows = connection.execute(
            "SELECT s.session_id, count(t.turn_index) FROM sessions s"
            " JOIN turns t ON t.session_pk = s.id WHERE s.id <= ? GROUP BY s.session_id",
            (len(SIZES),),
        ).fetchall()
    measured = _measured_session_ids([(str(uuid.UUID(hex=sid)), count) for sid, count in rows])
    assert measured is not None, "the SQLite bench file lost its measured sessions"
    return Fixture(user_id, generated.key, generated.key_hash, measured)
