"""The scale benchmark's databases: 1,000,000 sessions (~20M turns) and the same at 1/1000.

What the rows look like (the shape of issue 17): one big owner holds ~20% of the sessions
across 20 characters; thousands of small owners share the rest, a few far busier than most;
a staff user owns nothing and sees everything. Sessions are spread over a year, in the order
they started (the row id grows with ``created_at``, as it does in production); most are
finalized with usage, cost and sometimes a recording, a few are still running or were never
finalized. Turns (~20 a session) are picked from a few hundred utterances of varying length,
sometimes two at once, so the text is realistic in length and vocabulary without costing a
language model; a few rare phrases (``RARE_PHRASES``) are sprinkled in for search benchmarks.

How the rows get there:

- The schema is the service's own Alembic history, run on an empty database.
- Rows are generated here and written with COPY (CSV), never through the service. Sessions
  and their turns come in chunks of ``CHUNK_SESSIONS`` from worker processes while this
  process streams finished chunks to PostgreSQL. Each chunk draws from its own random
  stream, seeded by the shape's seed and the chunk's number: the data is the same however
  many workers make it.
- Within the loading transaction the tables are truncated (so COPY may FREEZE: no hint-bit
  writes on the first reads), their secondary indexes, unique constraints and foreign keys
  are dropped and, once the rows are in, rebuilt from the definitions PostgreSQL itself
  reported (``pg_get_constraintdef``, ``pg_get_indexdef``): a sort per index instead of
  20M index insertions and 20M foreign-key checks. Primary keys, checks and triggers stay.
  The rebuilt schema is then compared with the migrated one, and a difference fails the build.
- The load ends with ``VACUUM (ANALYZE)``, as autovacuum would leave a long-lived database.
- A database is reused while its comment (written last, so only a complete build has one)
  names the same Alembic head, generator version and shape.

Extending: a new column of an existing table is one entry in the dict its row is built in
(``_session`` for sessions, ``_turns`` for turns, ``_world`` for the small tables). A new
table derived from others (a rollup, say) is one statement in ``DERIVED_SQL``, run after
COPY; a new table of its own rows is one more ``CsvTable`` in ``generate_chunk`` or
``_world``. Bump ``GENERATOR_VERSION`` whenever the rows change.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import multiprocessing
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from alembic.script import ScriptDirectory

from transcripts.auth import hash_api_key
from transcripts.db.usage import SHARDS
from transcripts.migrate import alembic_config, upgrade_to_head

__all__ = [
    "CHUNK_SESSIONS",
    "DERIVED_SQL",
    "GENERATOR_VERSION",
    "LABEL_FRAGMENT",
    "RARE_PHRASES",
    "BuildInfo",
    "Chunk",
    "CsvTable",
    "ScaleDatabase",
    "Shape",
    "api_key_for",
    "csv_field",
    "generate_chunk",
    "prepare",
]

# Bumped whenever the generated rows change, so an older build is rebuilt.
GENERATOR_VERSION = 3
CHUNK_SESSIONS = 5_000

# The world's clock: fixed, so a build is the same whenever it runs.
NOW = datetime(2026, 12, 1, tzinfo=UTC)
SPAN = timedelta(days=365)
START = NOW - SPAN

BIG_OWNER_ID = 1
STAFF_ID = 2
BIG_OWNER_SHARE = 0.19954  # 199,540 of 1,000,000, as in the issue
BIG_OWNER_CHARACTERS = 20
IN_PROGRESS_WINDOW = timedelta(minutes=20)  # started this close to NOW: still running
ABANDONED_SHARE = 0.004  # never finalized
EMPTY_SHARE = 0.03  # finalized without a word said
API_STARTED_SHARE = 0.6  # started with the owner's credentials; the rest by the widget
LABELLED_SHARE = 0.85
RECORDED_SHARE = 0.1
MAX_TURNS = 300
FEATURED_TURNS = 20  # the featured session: the transcript read's subject
RARE_RATE = 1e-5  # per turn

_FIRST = (
    "Ada Alice Amir Ana Ben Bruno Carla Chen Dana David Elena Emma Farah Felix Grace Hana "
    "Hugo Ines Ivan Jade Jonas Kai Laura Leo Maria Mateo Mia Nadia Noah Olga Omar Paula "
    "Priya Rafael Sara Sofia Tariq Uma Victor Yuki"
)
_FIRST_NAMES = _FIRST.split()
_LAST = (
    "Abbott Bauer Costa Dubois Eriksen Fischer Garcia Hernandez Ito Jensen Kowalski Lopez "
    "Martin Nakamura Novak Okafor Petrov Quinn Rossi Schmidt Silva Tanaka Ueda Varga Weber "
    "Xu Yilmaz Zhang Murphy Khan Patel Kim Nguyen Cohen Moreau Horvat Lindqvist Oliveira "
    "Duarte Brennan"
)
_LAST_NAMES = _LAST.split()
# Part of one last name in 40: what "search by a label fragment" looks for.
LABEL_FRAGMENT = "hernan"

_OPENERS = (
    "Okay,",
    "So",
    "Hi,",
    "Sure,",
    "Right,",
    "Well,",
    "Thanks,",
    "Honestly",
    "Actually,",
    "Yes,",
    "No,",
    "Hmm,",
    "Great,",
    "Got it,",
    "I see,",
)
_VOCABULARY = (
    "the a our your this that my we you I it they can could would should will just really "
    "account plan widget transcript recording session call agent voice page dashboard team "
    "billing invoice minute month trial upgrade export email support question problem setting "
    "help check send book move show open find keep start stop change update explain try need "
    "want think know see use add remove share today tomorrow yesterday later again quickly "
    "right now maybe sure okay thanks please also still only every each some more less about "
    "with from for into over after before during while because when where which how what "
    "customers visitors users engineers calendar meeting demo price pricing language website "
    "don't can't I'm you're it's there's let's we'll refund order delivery address password "
    "login phone number appointment schedule cancel confirm available tuesday friday morning "
    "afternoon evening weekend contract renewal discount receipt shipping warranty store"
)
_WORDS = _VOCABULARY.split()
# Phrases almost no turn holds: each turn gets one with probability RARE_RATE, and the
# featured session's eighth turn always holds the first.
RARE_PHRASES = (
    "quarterly zeppelin maintenance audit",
    "marmalade escrow clause",
    "tangerine hovercraft warranty",
)
_PLANS = ("free", "starter", "pro", "business", "enterprise")
_PAGES = ("/", "/pricing", "/contact", "/support", "/demo", "/checkout", "/docs/getting-started")
_MODELS = (  # model, provider, micro-dollars per input and per output token
    ("gpt-4o-mini", "openai", 0.15, 0.6),
    ("gpt-4o", "openai", 2.5, 10.0),
    ("claude-3-5-haiku", "anthropic", 0.8, 4.0),
)
_STT_MICROS_PER_SECOND = 72.0
_TTS_MICROS_PER_CHARACTER = 30.0


def _utterance(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    if rng.random() < 0.4:
        words.insert(0, rng.choice(_OPENERS))
    if len(words) > 12 and rng.random() < 0.5:  # a pause in a longer sentence
        words[len(words) // 2] += ","
    text = " ".join(words) + rng.choice(".....?!")
    return text[0].upper() + text[1:]


@functools.cache
def _pools(seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What users say (short) and what assistants say (longer): 300 utterances each."""
    rng = random.Random(seed)
    users = tuple(_utterance(rng, 1, 18) for _ in range(300))
    assistants = tuple(_utterance(rng, 3, 40) for _ in range(300))
    return users, assistants


def api_key_for(seed: int, user_id: int) -> str:
    """The benchmark's API key of a user: derived, so every run knows it without a write."""
    return "sk_" + hashlib.sha256(f"transcripts-scale:{seed}:{user_id}".encode()).hexdigest()


@dataclass(frozen=True)
class Shape:
    """How big and from which seed; everything else follows from ``sessions``."""

    sessions: int
    seed: int = 17

    @property
    def tenants(self) -> int:
        return max(2, self.sessions // 2_000)

    @property
    def users(self) -> int:
        return max(6, self.sessions // 50)

    @property
    def characters(self) -> int:
        return max(BIG_OWNER_CHARACTERS + 5, self.sessions // 20)

    @property
    def featured_pk(self) -> int:
        """A session of the big owner's with exactly ``FEATURED_TURNS`` turns."""
        return self.sessions // 2 + 1

    @property
    def chunks(self) -> int:
        return -(-self.sessions // CHUNK_SESSIONS)


def csv_field(value: Any) -> str:
    """One value as a field of COPY's CSV.

    Text is always quoted, so an empty string stays one, and ``None`` is the empty unquoted
    field, which COPY reads as NULL. Numbers, booleans and, quoted, ``str()`` of anything else
    (timestamps, UUIDs) are in forms PostgreSQL reads as they are. Faster than the csv module,
    which looks at every character of every text to decide whether to quote it.
    """
    kind = type(value)
    if kind is str:
        text: str = value
        return '"' + text.replace('"', '""') + '"'
    if value is None:
        return ""
    if kind is bool:
        return "t" if value else "f"
    if kind is int or kind is float:
        return repr(value)
    return '"' + str(value).replace('"', '""') + '"'


class CsvTable:
    """Rows of one table as COPY's CSV: the columns are the first row's keys, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.columns: tuple[str, ...] = ()
        self.rows = 0
        self._lines: list[str] = []

    def add(self, row: dict[str, Any]) -> None:
        if not self.columns:
            self.columns = tuple(row)
        elif len(row) != len(self.columns):
            raise ValueError(f"{self.name}: {list(row)} are not the columns {self.columns}")
        self._lines.append(",".join(map(csv_field, row.values())))
        self.rows += 1

    def payload(self) -> CsvPayload:
        data = "\n".join(self._lines).encode() + (b"\n" if self._lines else b"")
        return CsvPayload(self.name, self.columns, self.rows, data)


@dataclass(frozen=True)
class CsvPayload:
    table: str
    columns: tuple[str, ...]
    rows: int
    data: bytes


@dataclass(frozen=True)
class _Character:
    id: int
    slug: str
    tenant_id: int
    tenant_slug: str
    owner_id: int
    transcripts_enabled: bool


@dataclass(frozen=True)
class _World:
    """Tenants, users, characters and keys: small, and rebuilt identically in every worker."""

    tables: tuple[CsvPayload, ...]
    big: tuple[_Character, ...]
    small: tuple[_Character, ...]
    small_weights: tuple[float, ...]  # cumulative: a few small owners are far busier


@functools.lru_cache(maxsize=4)
def _world(shape: Shape) -> _World:
    rng = random.Random(shape.seed)
    created = START - timedelta(days=30)
    tenants = CsvTable("tenants")
    tenant_slugs = {}
    for tenant_id in range(1, shape.tenants + 1):
        tenant_slugs[tenant_id] = f"tenant-{tenant_id}"
        tenants.add(
            {
                "id": tenant_id,
                "slug": tenant_slugs[tenant_id],
                "name": f"Tenant {tenant_id}",
                "created_at": created,
            }
        )
    users = CsvTable("users")
    api_keys = CsvTable("api_keys")
    user_tenants = {}
    revoked: list[int] = []
    for user_id in range(1, shape.users + 1):
        tenant_id = 1 if user_id <= STAFF_ID else rng.randint(1, shape.tenants)
        user_tenants[user_id] = tenant_id
        users.add(
            {
                "id": user_id,
                "email": {BIG_OWNER_ID: "owner@scale.example", STAFF_ID: "staff@scale.example"}.get(
                    user_id, f"user-{user_id}@scale.example"
                ),
                "tenant_id": tenant_id,
                "is_staff": user_id == STAFF_ID,
                "is_active": user_id <= STAFF_ID or rng.random() > 0.01,
                "created_at": created,
            }
        )
        key = api_key_for(shape.seed, user_id)
        api_keys.add(
            {
                "id": user_id,
                "user_id": user_id,
                "name": "default",
                "key_hash": hash_api_key(key),
                "key_preview": f"{key[:5]}...{key[-4:]}",
                "is_active": True,
                "created_at": created,
                "last_used_at": NOW - timedelta(hours=rng.randint(1, 2_000)),
                "revoked_at": None,
            }
        )
        if rng.random() < 0.1:
            revoked.append(user_id)
    for key_id, user_id in enumerate(revoked, start=shape.users + 1):
        key = api_key_for(shape.seed, -key_id)
        api_keys.add(
            {
                "id": key_id,
                "user_id": user_id,
                "name": "old",
                "key_hash": hash_api_key(key),
                "key_preview": f"{key[:5]}...{key[-4:]}",
                "is_active": False,
                "created_at": created,
                "last_used_at": created + timedelta(days=3),
                "revoked_at": created + timedelta(days=40),
            }
        )
    characters = CsvTable("characters")
    big: list[_Character] = []
    small: list[_Character] = []
    for character_id in range(1, shape.characters + 1):
        owner = (
            BIG_OWNER_ID if character_id <= BIG_OWNER_CHARACTERS else rng.randint(3, shape.users)
        )
        tenant_id = user_tenants[owner]
        # One of the big owner's characters keeps no transcripts; 2% of the others neither.
        enabled = (
            character_id != BIG_OWNER_CHARACTERS if owner == BIG_OWNER_ID else rng.random() > 0.02
        )
        character = _Character(
            character_id,
            f"bot-{character_id}",
            tenant_id,
            tenant_slugs[tenant_id],
            owner,
            enabled,
        )
        (big if owner == BIG_OWNER_ID else small).append(character)
        characters.add(
            {
                "id": character_id,
                "public_id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "slug": character.slug,
                "name": f"Character {character_id}",
                "tenant_id": tenant_id,
                "created_by_id": owner,
                "is_active": True,
                "transcripts_enabled": enabled,
                "allowed_origins": orjson.dumps(
                    [f"https://www.{tenant_slugs[tenant_id]}.example"]
                ).decode(),
                "created_at": created,
            }
        )
    # Zipf-like: the busiest small characters get many times the sessions of the quietest.
    weights, total = [], 0.0
    for rank in range(1, len(small) + 1):
        total += rank**-0.8
        weights.append(total)
    return _World(
        tables=(tenants.payload(), users.payload(), api_keys.payload(), characters.payload()),
        big=tuple(big),
        small=tuple(small),
        small_weights=tuple(weights),
    )


@dataclass(frozen=True)
class Chunk:
    sessions: CsvPayload
    turns: CsvPayload
    big_owner_sessions: int


def generate_chunk(shape: Shape, number: int) -> Chunk:
    """Sessions ``number * CHUNK_SESSIONS + 1`` on, with their turns, as COPY payloads."""
    world = _world(shape)
    users_say, assistants_say = _pools(shape.seed)
    rng = random.Random(shape.seed * 1_000_003 + number)
    sessions, turns = CsvTable("sessions"), CsvTable("turns")
    first = number * CHUNK_SESSIONS + 1
    big = 0
    for pk in range(first, min(shape.sessions, first + CHUNK_SESSIONS - 1) + 1):
        session = _session(world, shape, rng, pk, turns, users_say, assistants_say)
        big += session["character_id"] <= BIG_OWNER_CHARACTERS
        sessions.add(session)
    return Chunk(sessions.payload(), turns.payload(), big)


def _session(
    world: _World,
    shape: Shape,
    rng: random.Random,
    pk: int,
    turns: CsvTable,
    users_say: tuple[str, ...],
    assistants_say: tuple[str, ...],
) -> dict[str, Any]:
    featured = pk == shape.featured_pk
    if featured:
        character = world.big[0]
    elif rng.random() < BIG_OWNER_SHARE:
        character = world.big[rng.randrange(len(world.big))]
    else:
        character = rng.choices(world.small, cum_weights=world.small_weights)[0]
    started = START + SPAN * ((pk - 1 + rng.random()) / shape.sessions)
    session_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    running = not featured and (
        NOW - started < IN_PROGRESS_WINDOW or rng.random() < ABANDONED_SHARE
    )
    if featured:
        count = FEATURED_TURNS
    elif rng.random() < EMPTY_SHARE:
        count = 0
    else:
        count = min(MAX_TURNS, 2 + int(rng.gammavariate(3.0, 6.6)))
    usage = _turns(
        rng,
        pk,
        started,
        count,
        character.transcripts_enabled,
        featured,
        turns,
        users_say,
        assistants_say,
    )
    last_activity = started + timedelta(seconds=usage.seconds)
    ended = None if running else last_activity + timedelta(seconds=rng.uniform(1.0, 4.0))
    finalized = None if ended is None else ended + timedelta(seconds=rng.uniform(0.5, 3.0))
    model, provider, input_price, output_price = rng.choice(_MODELS)
    api_started = rng.random() < API_STARTED_SHARE
    recording = "NONE"
    if finalized is not None and rng.random() < RECORDED_SHARE:
        recording = "READY" if rng.random() > 0.01 else "FAILED"
    label = None
    if featured or rng.random() < LABELLED_SHARE:
        label = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
    metadata = {"plan": rng.choice(_PLANS), "visitor": f"v_{rng.getrandbits(40):010x}"}
    # The row, one entry per column.
    return {
        "id": pk,
        "session_id": session_id,
        "tenant_id": character.tenant_id,
        "character_id": character.id,
        "owner_id": character.owner_id,
        "user_id": character.owner_id if api_started else None,
        "room_name": f"oshara-voice-{character.slug}-{rng.getrandbits(32):08x}",
        "origin_url": None
        if api_started
        else f"https://www.{character.tenant_slug}.example{rng.choice(_PAGES)}",
        "metadata": orjson.dumps(metadata).decode(),
        "client_label": label,
        "transcripts_enabled": character.transcripts_enabled,
        "created_at": started,
        "updated_at": finalized or last_activity,
        "ended_at": ended,
        "finalized_at": finalized,
        "llm_input_tokens": usage.llm_input_tokens if finalized else 0,
        "llm_output_tokens": usage.llm_output_tokens if finalized else 0,
        "llm_model": model if finalized else None,
        "llm_provider": provider if finalized else None,
        "stt_audio_seconds": round(usage.stt_seconds, 1) if finalized else 0.0,
        "stt_provider": "deepgram" if finalized else None,
        "tts_characters": usage.tts_characters if finalized else 0,
        "tts_provider": "elevenlabs" if finalized else None,
        "estimated_cost_micros": round(
            usage.llm_input_tokens * input_price
            + usage.llm_output_tokens * output_price
            + usage.stt_seconds * _STT_MICROS_PER_SECOND
            + usage.tts_characters * _TTS_MICROS_PER_CHARACTER
        )
        if finalized
        else 0,
        "recording_status": recording,
        "recording_url": f"s3://oshara-recordings/{character.tenant_slug}/{session_id}.ogg"
        if recording == "READY"
        else None,
    }


@dataclass(frozen=True)
class _Usage:
    seconds: float  # from the start to the end of the last turn
    llm_input_tokens: int
    llm_output_tokens: int
    stt_seconds: float
    tts_characters: int


def _turns(
    rng: random.Random,
    pk: int,
    started: datetime,
    count: int,
    stored: bool,
    featured: bool,
    turns: CsvTable,
    users_say: tuple[str, ...],
    assistants_say: tuple[str, ...],
) -> _Usage:
    """Write the session's turns (unless it keeps no transcript) and return its usage."""
    draw = rng.random
    # Times in whole centiseconds: integer sums, no rounding per turn.
    at = 30 + int(220 * draw())
    end = context = llm_input = llm_output = tts = stt = 0
    for index in range(count):
        assistant = index % 2 == 0
        pool = assistants_say if assistant else users_say
        text = pool[int(draw() * len(pool))]
        if draw() < 0.15:
            text = f"{text} {pool[int(draw() * len(pool))]}"
        if featured and index == 7:
            text = f"{text} {RARE_PHRASES[0]}"
        elif draw() < RARE_RATE:
            text = f"{text} {rng.choice(RARE_PHRASES)}"
        length = len(text)
        speaking = length * 100 // (15 if assistant else 13)
        context += length // 4
        if assistant:
            llm_input += 350 + context
            llm_output += length // 4
            tts += length
        else:
            stt += speaking
        end = at + speaking
        if stored:
            # The row, one entry per column.
            turns.add(
                {
                    "session_pk": pk,
                    "turn_index": index,
                    "role": "assistant" if assistant else "user",
                    "text": text,
                    "ts": at / 100,
                    "speaking_duration_seconds": speaking / 100,
                    "was_interrupted": assistant and draw() < 0.08,
                    "created_at": started + timedelta(milliseconds=10 * end),
                    "append_seq": index + 1,
                }
            )
        at = end + 30 + int(130 * draw())
    return _Usage(end / 100, llm_input, llm_output, stt / 100, tts)


# Statements run after COPY, in order, inside the loading transaction: tables whose rows
# follow from the others' (rollups, say) are filled here.
DERIVED_SQL: tuple[str, ...] = (
    # What each session holds, as every append keeps it.
    "UPDATE sessions SET turn_count = t.turns, text_bytes = t.bytes,"
    " interruption_count = t.interruptions, last_append_seq = t.turns"
    " FROM (SELECT session_pk, count(*) AS turns, sum(octet_length(text)) AS bytes,"
    " count(*) FILTER (WHERE role = 'assistant' AND was_interrupted) AS interruptions"
    " FROM turns GROUP BY session_pk) t WHERE sessions.id = t.session_pk",
    # The usage rollups, as start and finalize keep them (migration cc37002fa595's backfill).
    "INSERT INTO usage_by_character_day (character_id, day, owner_id, tenant_id, sessions,"
    " llm_input_tokens, llm_output_tokens, stt_audio_seconds, tts_characters,"
    " estimated_cost_micros)"
    " SELECT character_id, CAST(created_at AT TIME ZONE 'UTC' AS DATE), min(owner_id),"
    " min(tenant_id), count(*), sum(llm_input_tokens), sum(llm_output_tokens),"
    " sum(stt_audio_seconds), sum(tts_characters), sum(estimated_cost_micros)"
    " FROM sessions GROUP BY 1, 2",
    "INSERT INTO usage_by_day (day, shard, sessions, llm_input_tokens, llm_output_tokens,"
    " stt_audio_seconds, tts_characters, estimated_cost_micros)"
    f" SELECT CAST(created_at AT TIME ZONE 'UTC' AS DATE), id % {SHARDS}, count(*),"
    " sum(llm_input_tokens), sum(llm_output_tokens), sum(stt_audio_seconds),"
    " sum(tts_characters), sum(estimated_cost_micros) FROM sessions GROUP BY 1, 2",
)


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class BuildInfo:
    """What the database comment records: the build's identity, then what it holds."""

    generator: int
    revision: str
    sessions: int
    seed: int
    turns: int = 0
    big_owner_sessions: int = 0
    featured_pk: int = 0
    build_seconds: float = 0.0
    built_at: str = ""

    def same_build(self, other: BuildInfo) -> bool:
        return (self.generator, self.revision, self.sessions, self.seed) == (
            other.generator,
            other.revision,
            other.sessions,
            other.seed,
        )


@dataclass(frozen=True)
class ScaleDatabase:
    name: str
    dsn: str  # for asyncpg
    url: str  # for the service (SQLAlchemy)
    info: BuildInfo
    built: bool  # by this call (False: reused)
    keys: dict[str, str] = field(default_factory=dict)  # "owner" / "staff" -> API key
    featured_session_id: str = ""


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused"))
    return ",".join(sorted(script.get_heads()))


async def _admin(admin_dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _recorded_build(dsn: str) -> BuildInfo | None:
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        comment = await connection.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = current_database()"
        )
    finally:
        await connection.close()
    try:
        return BuildInfo(**json.loads(comment)) if comment else None
    except (ValueError, TypeError):
        return None


def _migrate(url: str) -> None:
    # Alembic's env runs a loop of its own: keep it off the caller's.
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(upgrade_to_head, url).result()


_TABLES = ("tenants", "users", "api_keys", "characters", "sessions", "turns")


async def _schema(connection: asyncpg.Connection) -> list[tuple[str, ...]]:
    """Every constraint and index of the public schema, as PostgreSQL defines them."""
    constraints = await connection.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
    )
    indexes = await connection.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        " ORDER BY 1, 2"
    )
    return [("constraint", *row) for row in constraints] + [("index", *row) for row in indexes]


async def _set_aside(connection: asyncpg.Connection, tables: tuple[str, ...]) -> list[str]:
    """Drop what makes a bulk load slow; return the statements that put it all back."""
    oids = [await connection.fetchval("SELECT $1::regclass::oid", table) for table in tables]
    foreign = await connection.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def"
        " FROM pg_constraint WHERE contype = 'f'"
        " AND (conrelid = ANY($1::oid[]) OR confrelid = ANY($1::oid[])) ORDER BY 1, 2",
        oids,
    )
    unique = await connection.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def"
        " FROM pg_constraint WHERE contype IN ('u', 'x') AND conrelid = ANY($1::oid[])"
        " ORDER BY 1, 2",
        oids,
    )
    indexes = await connection.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def"
        " FROM pg_index i WHERE i.indrelid = ANY($1::oid[])"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
        "  WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))"
        " ORDER BY 1",
        oids,
    )
    for row in [*foreign, *unique]:
        await connection.execute(f'ALTER TABLE {row["tbl"]} DROP CONSTRAINT "{row["conname"]}"')
    for row in indexes:
        await connection.execute(f"DROP INDEX {row['name']}")
    return [
        *(f'ALTER TABLE {r["tbl"]} ADD CONSTRAINT "{r["conname"]}" {r["def"]}' for r in unique),
        *(row["def"] for row in indexes),
        *(f'ALTER TABLE {r["tbl"]} ADD CONSTRAINT "{r["conname"]}" {r["def"]}' for r in foreign),
    ]


async def _advance_sequences(connection: asyncpg.Connection, tables: tuple[str, ...]) -> None:
    """Past the ids COPY wrote, so the service's own inserts get fresh ones."""
    owned = await connection.fetch(
        "SELECT table_name, column_name,"
        " pg_get_serial_sequence(quote_ident(table_name), column_name) AS sequence"
        " FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name = ANY($1::text[])"
        " AND pg_get_serial_sequence(quote_ident(table_name), column_name) IS NOT NULL",
        list(tables),
    )
    for row in owned:
        await connection.execute(
            f"SELECT setval('{row['sequence']}', max({row['column_name']}))"
            f" FROM {row['table_name']} HAVING count(*) > 0"
        )


async def _copy(connection: asyncpg.Connection, payload: CsvPayload) -> None:
    if payload.rows:
        await connection.copy_to_table(
            payload.table,
            source=io.BytesIO(payload.data),
            columns=list(payload.columns),
            format="csv",
            freeze=True,
        )


def _chunks(shape: Shape, workers: int) -> Iterator[Future[Chunk]]:
    """The chunks in order, made ``workers`` at a time (and inline for a single chunk)."""
    if shape.chunks == 1 or workers < 1:
        for number in range(shape.chunks):
            done: Future[Chunk] = Future()
            done.set_result(generate_chunk(shape, number))
            yield done
        return
    # spawn: the workers start clean, without this process's event loop and connections.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        ahead = workers + 2  # chunks in the making: bounded, so memory stays small
        pending = [pool.submit(generate_chunk, shape, n) for n in range(min(ahead, shape.chunks))]
        for number in range(shape.chunks):
            following = number + ahead
            if following < shape.chunks:
                pending.append(pool.submit(generate_chunk, shape, following))
            yield pending.pop(0)


async def _load(dsn: str, shape: Shape, workers: int, log: Callable[[str], None]) -> BuildInfo:
    connection = await asyncpg.connect(dsn, timeout=10)
    started = time.monotonic()
    turns = big = 0
    try:
        # Index builds sort in memory; this session's setting only.
        await connection.execute("SET maintenance_work_mem = '1GB'")
        migrated = await _schema(connection)
        async with connection.transaction():
            await connection.execute(f"TRUNCATE {', '.join(_TABLES)} CASCADE")
            restore = await _set_aside(connection, _TABLES)
            for payload in _world(shape).tables:
                await _copy(connection, payload)
            loop = asyncio.get_running_loop()
            step = max(1, shape.chunks // 10)
            for number, future in enumerate(_chunks(shape, workers)):
                chunk = await asyncio.wrap_future(future, loop=loop)
                await _copy(connection, chunk.sessions)
                await _copy(connection, chunk.turns)
                turns += chunk.turns.rows
                big += chunk.big_owner_sessions
                if (number + 1) % step == 0 or number + 1 == shape.chunks:
                    done = min(shape.sessions, (number + 1) * CHUNK_SESSIONS)
                    log(
                        f"  {done:,} sessions, {turns:,} turns copied"
                        f" ({time.monotonic() - started:.0f} s)"
                    )
            log(f"  rebuilding {len(restore)} indexes and constraints")
            for statement in restore:
                await connection.execute(statement)
            await _advance_sequences(connection, _TABLES)
            for statement in DERIVED_SQL:
                await connection.execute(statement)
        rebuilt = await _schema(connection)
        if rebuilt != migrated:
            lost = sorted(set(migrated) - set(rebuilt))
            extra = sorted(set(rebuilt) - set(migrated))
            raise RuntimeError(f"the load changed the schema: lost {lost}, gained {extra}")
        log(f"  VACUUM (ANALYZE) ({time.monotonic() - started:.0f} s)")
        await connection.execute("VACUUM (ANALYZE)")
    finally:
        await connection.close()
    return BuildInfo(
        generator=GENERATOR_VERSION,
        revision=head_revision(),
        sessions=shape.sessions,
        seed=shape.seed,
        turns=turns,
        big_owner_sessions=big,
        featured_pk=shape.featured_pk,
        build_seconds=round(time.monotonic() - started, 1),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


async def prepare(
    admin_dsn: str,
    name: str,
    shape: Shape,
    *,
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> ScaleDatabase:
    """The database ``name`` at ``shape``: reused when a complete build of it is there."""
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    wanted = BuildInfo(GENERATOR_VERSION, head_revision(), shape.sessions, shape.seed)
    info = await _recorded_build(dsn)
    built = info is None or not info.same_build(wanted)
    if info is not None and not built:
        log(f"reusing {name} (built {info.built_at}, {info.sessions:,} sessions)")
    else:
        log(f"building {name}: {shape.sessions:,} sessions (seed {shape.seed})")
        began = time.monotonic()
        await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _admin(admin_dsn, f'CREATE DATABASE "{name}"')
        _migrate(url)
        loaded = await _load(dsn, shape, workers, log)
        info = replace(loaded, build_seconds=round(time.monotonic() - began, 1))
        comment = json.dumps(asdict(info)).replace("'", "''")
        await _admin(admin_dsn, f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")
        log(f"built {name} in {info.build_seconds:.0f} s: {info.turns:,} turns")
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        featured = await connection.fetchval(
            "SELECT session_id::text FROM sessions WHERE id = $1", info.featured_pk
        )
    finally:
        await connection.close()
    return ScaleDatabase(
        name=name,
        dsn=dsn,
        url=url,
        info=info,
        built=built,
        keys={
            "owner": api_key_for(shape.seed, BIG_OWNER_ID),
            "staff": api_key_for(shape.seed, STAFF_ID),
        },
        featured_session_id=featured,
    )
