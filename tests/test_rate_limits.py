"""Rate limits (README, "Rate limits"): a budget per credential and per client address,
``RateLimit-*`` headers on every answer, 429 with ``Retry-After`` in each dialect's body on
the hot reads and the FastAPI routes alike, budgets shared through Redis by real server
processes, and failing open when Redis is gone. Then Oshara's 429 at session start: a
character's concurrent-session limit, exact under concurrent starts.

Every budget here is per hour, so no window turns over during a test, and each test spends
the budgets of identities of its own (fresh keys, users and client addresses).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from tests.conftest import (
    TEST_JWT_SECRET,
    TEST_RECORDINGS_DIR,
    make_settings,
    migrate,
    run_elsewhere,
    running_app,
)
from tests.factories import SEED_USAGE, Factory
from tests.servers import free_port, transcripts_process
from tests.spec_validation import validate_response_hook
from tests.write_path import FINALIZE, SEED_USAGE_BODY, START
from transcripts.db.engine import Database
from transcripts.domain import CharacterRecord, UserRecord
from transcripts.ratelimit import MemoryWindows, Rate, RateLimiter, open_storage, throttled
from transcripts.settings import Settings
from transcripts.state import app_state

LIMIT = 3
ANONYMOUS_LIMIT = 2
HOUR = 3600
# Keys are per credential, so tests cannot meet each other's here; they expire in an hour.
REDIS_URL = "redis://127.0.0.1:6379/11"
ORIGIN = "https://shop.example"
READS = {"anam": "/v1/sessions/{}/transcript", "agents": "/api/agents/agent-session/{}/transcript/"}
RATE_LIMIT_HEADERS = {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}


def limited_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "rate_limit_enabled": True,
        "rate_limit": f"{LIMIT}/hour",
        "rate_limit_anonymous": f"{ANONYMOUS_LIMIT}/hour",
        **overrides,
    }
    return make_settings(database_url, **values)


def client_for(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of ``app`` calling from ``address`` (what the anonymous budget is keyed by)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)),
        base_url="http://testserver",
        event_hooks={"response": [validate_response_hook]},
    )


def new_address() -> str:
    return "10." + ".".join(str(byte) for byte in uuid.uuid4().bytes[:3])


@pytest.fixture(scope="module")
async def limited_app(database_url: str) -> AsyncIterator[FastAPI]:
    async for app in running_app(limited_settings(database_url)):
        yield app


@pytest.fixture
async def limited(limited_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(limited_app) as client:
        yield client
    await app_state(limited_app).key_usage.drain()


@pytest.fixture
def limited_factory(limited_app: FastAPI) -> Factory:
    return Factory(app_state(limited_app).database, app_state(limited_app).settings)


def budget(response: httpx.Response) -> tuple[int, int, int]:
    """(RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset)."""
    headers = response.headers
    return (
        int(headers["RateLimit-Limit"]),
        int(headers["RateLimit-Remaining"]),
        int(headers["RateLimit-Reset"]),
    )


def assert_throttled(response: httpx.Response, dialect: str, limit: int = LIMIT) -> None:
    """A 429 in ``dialect``'s body, with Retry-After: the rest of the hour's window."""
    assert response.status_code == 429, response.text
    wait = int(response.headers["Retry-After"])
    assert HOUR - 300 < wait <= HOUR
    assert budget(response) == (limit, 0, wait)
    message = f"Request was throttled. Expected available in {wait} seconds."
    if dialect == "anam":
        expected: dict[str, Any] = {
            "statusCode": 429,
            "error": "Too Many Requests",
            "message": message.removesuffix("."),
        }
    else:
        expected = {"success": False, "message": message, "data": None}
        expected["errors"] = {"detail": [message]}
    assert response.json() == expected


async def reader(factory: Factory) -> tuple[UserRecord, str, uuid.UUID]:
    """A user, an API key of theirs, and a finalized session of their character."""
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    session = await factory.session(await factory.character(owner), usage=SEED_USAGE)
    return owner, key, session.session_id


async def test_headers_count_down_across_both_dialects_then_429_in_each_body(
    limited: httpx.AsyncClient, limited_factory: Factory
) -> None:
    _, key, session_id = await reader(limited_factory)
    auth = {"X-API-Key": key}
    # One budget per credential, whichever dialect, hot read or FastAPI route it goes to.
    answers = [
        await limited.get(READS["anam"].format(session_id), headers=auth),
        await limited.get(READS["agents"].format(session_id), headers=auth),
        await limited.get(f"/v1/sessions/{session_id}", headers=auth),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert [budget(answer)[:2] for answer in answers] == [(LIMIT, 2), (LIMIT, 1), (LIMIT, 0)]
    resets = [budget(answer)[2] for answer in answers]
    assert HOUR - 300 < resets[-1] <= resets[0] <= HOUR
    # The hot reads (GETs the fast path answers) and FastAPI's routes, in both dialects.
    for dialect, path in READS.items():
        assert_throttled(await limited.get(path.format(session_id), headers=auth), dialect)
    assert_throttled(await limited.get("/v1/sessions?perPage=5", headers=auth), "anam")
    assert_throttled(await limited.get("/api/billing/usage/", headers=auth), "agents")
    assert_throttled(await limited.post(START, json={"agent": "x"}, headers=auth), "agents")
    # The same key sent as a bearer token is the same credential.
    bearer = {"Authorization": f"Bearer {key}"}
    assert_throttled(await limited.get(READS["anam"].format(session_id), headers=bearer), "anam")


async def test_failures_carry_the_headers_and_count(
    limited: httpx.AsyncClient, limited_factory: Factory
) -> None:
    _, key, _ = await reader(limited_factory)
    missing = await limited.get(READS["agents"].format(uuid.uuid4()), headers={"X-API-Key": key})
    assert missing.status_code == 404
    assert budget(missing)[:2] == (LIMIT, LIMIT - 1)
    malformed = await limited.get("/v1/sessions/not-a-uuid", headers={"X-API-Key": key})
    assert malformed.status_code == 400
    assert budget(malformed)[:2] == (LIMIT, LIMIT - 2)


async def test_another_key_and_the_owners_token_have_budgets_of_their_own(
    limited: httpx.AsyncClient, limited_factory: Factory
) -> None:
    owner, key, session_id = await reader(limited_factory)
    _, other_key = await limited_factory.api_key(owner)
    path = READS["agents"].format(session_id)
    for _ in range(LIMIT):
        assert (await limited.get(path, headers={"X-API-Key": key})).status_code == 200
    assert_throttled(await limited.get(path, headers={"X-API-Key": key}), "agents")

    other = await limited.get(path, headers={"X-API-Key": other_key})
    assert (other.status_code, budget(other)[:2]) == (200, (LIMIT, LIMIT - 1))
    # A token's budget is its user's: two tokens of the same user share one.
    remaining = []
    for _ in range(2):
        bearer = {"Authorization": f"Bearer {limited_factory.token(owner.id)}"}
        answer = await limited.get(path, headers=bearer)
        assert answer.status_code == 200
        remaining.append(budget(answer)[1])
    assert remaining == [LIMIT - 1, LIMIT - 2]


async def widget_character(factory: Factory) -> CharacterRecord:
    return await factory.character(await factory.user(), allowed_origins=[ORIGIN])


async def test_requests_without_valid_credentials_are_counted_per_client_address(
    limited_app: FastAPI, limited_factory: Factory
) -> None:
    character = await widget_character(limited_factory)
    widget = {"Origin": ORIGIN}
    address = new_address()
    async with client_for(limited_app, address) as client:
        first = await client.post(START, json={"agent": character.slug}, headers=widget)
        assert (first.status_code, budget(first)[:2]) == (201, (ANONYMOUS_LIMIT, 1))
        # Credentials that cannot be valid draw on the address's budget too.
        forged = await client.get(READS["anam"].format(uuid.uuid4()), headers={"X-API-Key": "x"})
        assert (forged.status_code, budget(forged)[:2]) == (401, (ANONYMOUS_LIMIT, 0))
        refused = await client.post(START, json={"agent": character.slug}, headers=widget)
        assert_throttled(refused, "agents", limit=ANONYMOUS_LIMIT)
        assert_throttled(await client.get("/v1/sessions"), "anam", limit=ANONYMOUS_LIMIT)
    async with client_for(limited_app, new_address()) as elsewhere:
        other = await elsewhere.post(START, json={"agent": character.slug}, headers=widget)
        assert (other.status_code, budget(other)[:2]) == (201, (ANONYMOUS_LIMIT, 1))


async def test_paths_outside_the_dialects_are_not_counted(limited: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/openapi.json"):
        answer = await limited.get(path)
        assert answer.status_code == 200
        assert not RATE_LIMIT_HEADERS & answer.headers.keys()


async def test_switched_off_there_are_no_headers(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # The suite's shared app runs with TRANSCRIPTS_RATE_LIMIT_ENABLED=false.
    _, key, session_id = await reader(factory)
    for _ in range(LIMIT + 2):
        answer = await client.get(READS["anam"].format(session_id), headers={"X-API-Key": key})
        assert answer.status_code == 200
        assert not RATE_LIMIT_HEADERS & answer.headers.keys()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limit", "lots"),
        ("rate_limit", "0/minute"),
        ("rate_limit", "5/second;100/minute"),
        ("rate_limit_anonymous", "ten per minute"),
        ("rate_limit_storage_url", "memcached://127.0.0.1:11211"),
        ("rate_limit_storage_url", "127.0.0.1:6379"),
    ],
)
def test_settings_refuse_what_the_limiter_cannot_use(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(_env_file=None, **{field: value})  # type: ignore[call-arg,arg-type]


def test_settings_accept_the_documented_forms() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        rate_limit="10 per second",
        rate_limit_anonymous="100/hour",
        rate_limit_storage_url="rediss://cache.internal:6380/2",
    )
    assert settings.rate_limit == "10 per second"


async def test_memory_windows_count_fixed_windows_and_forget_quiet_clients() -> None:
    now = [1000.0]
    storage = MemoryWindows(clock=lambda: now[0])
    assert [await storage.incr("a", 60) for _ in range(3)] == [1, 2, 3]
    assert await storage.get_expiry("a") == 1060.0
    await storage.incr("b", 60)
    now[0] = 1059.9
    assert await storage.incr("a", 60) == 4  # the same window, up to its end
    now[0] = 1060.0
    assert await storage.get("a") == 0
    assert await storage.incr("a", 60) == 1  # a new one
    assert await storage.get_expiry("a") == 1120.0
    # "b" has gone quiet: the next sweep, SWEEP_SECONDS after the last, drops its window.
    now[0] = 1059.9 + MemoryWindows.SWEEP_SECONDS
    await storage.incr("c", 60)
    assert await storage.reset() == 2  # "a" and "c"


def test_rate_keys_are_the_limits_librarys_and_the_wait_reads_well() -> None:
    rate = Rate("5 per 2 hours")
    assert (rate.limit, rate.seconds) == (5, 7200)
    assert rate.key_for("key:abc") == rate.item.key_for("key:abc")
    assert throttled(1).message == "Request was throttled. Expected available in 1 second."
    assert throttled(1).retry_after == 1


# ---------------------------------------------------------------- Redis


async def test_two_apps_on_one_redis_share_each_budget(database_url: str) -> None:
    settings = limited_settings(database_url, rate_limit_storage_url=REDIS_URL)
    async with asyncio.timeout(60):
        async for first in running_app(settings):
            async for second in running_app(settings):
                _, key, session_id = await reader(
                    Factory(app_state(first).database, app_state(first).settings)
                )
                path = READS["anam"].format(session_id)
                auth = {"X-API-Key": key}
                async with client_for(first) as one, client_for(second) as two:
                    answers = [
                        await one.get(path, headers=auth),
                        await two.get(path, headers=auth),
                        await one.get(path, headers=auth),
                    ]
                    assert [budget(answer)[1] for answer in answers] == [2, 1, 0]
                    assert_throttled(await two.get(path, headers=auth), "anam")
                await app_state(first).key_usage.drain()
                await app_state(second).key_usage.drain()


def test_replicas_share_each_budget_through_redis(sqlite_url: str) -> None:
    """Two real `transcripts serve` processes, as two replicas behind a load balancer."""
    settings = limited_settings(sqlite_url)

    async def seed() -> tuple[str, uuid.UUID]:
        database = Database(settings)
        try:
            _, key, session_id = await reader(Factory(database, settings))
        finally:
            await database.dispose()
        return key, session_id

    migrate(sqlite_url)
    key, session_id = run_elsewhere(seed)
    env = {
        "TRANSCRIPTS_DATABASE_URL": sqlite_url,
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        "TRANSCRIPTS_RECORDINGS_DIR": TEST_RECORDINGS_DIR,
        "TRANSCRIPTS_RATE_LIMIT": f"{LIMIT}/hour",
        "TRANSCRIPTS_RATE_LIMIT_STORAGE_URL": REDIS_URL,
    }
    with (
        transcripts_process("serve", env=env) as one,
        transcripts_process("serve", env=env) as two,
        httpx.Client(timeout=10, headers={"X-API-Key": key}) as http,
    ):
        path = READS["agents"].format(session_id)
        answers = [
            http.get(one.base_url + path),
            http.get(two.base_url + path),
            http.get(one.base_url + path),
        ]
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert [budget(answer)[1] for answer in answers] == [2, 1, 0]
        assert_throttled(http.get(two.base_url + path), "agents")
        assert_throttled(http.get(one.base_url + path), "agents")


async def test_a_window_redis_kept_without_its_expiry_starts_over() -> None:
    rate = Rate(f"{LIMIT}/hour")
    limiter = RateLimiter(open_storage(REDIS_URL), per_credential=rate, anonymous=rate)
    identity = f"key:{uuid.uuid4().hex}"
    key = rate.key_for(identity)
    try:
        # As if the increment opening the window had been cut off before its EXPIRE.
        redis = limiter.storage.bridge.storage  # type: ignore[attr-defined]
        await redis.incrby(f"LIMITS:{key}", LIMIT + 5)
        budget = await limiter.hit(identity, rate)
        assert budget is not None
        remaining, reset = budget
        assert remaining == LIMIT - 1
        assert HOUR - 300 < reset <= HOUR
        assert HOUR - 300 < await limiter.storage.get_expiry(key) - time.time() <= HOUR
    finally:
        await limiter.storage.clear(key)
        await limiter.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a Redis that hangs)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("outage", ["refused", "hanging"])
async def test_without_redis_requests_are_served_unlimited_and_a_warning_is_logged(
    database_url: str,
    outage: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port() if outage == "refused" else request.getfixturevalue("silent_port")
    settings = limited_settings(database_url, rate_limit_storage_url=f"redis://127.0.0.1:{port}/0")
    caplog.set_level(logging.WARNING, logger="transcripts.ratelimit")
    async for app in running_app(settings):
        _, key, session_id = await reader(Factory(app_state(app).database, app_state(app).settings))
        async with client_for(app) as client:
            for _ in range(LIMIT + 2):
                answer = await client.get(
                    READS["anam"].format(session_id), headers={"X-API-Key": key}
                )
                assert answer.status_code == 200
                assert not RATE_LIMIT_HEADERS & answer.headers.keys()
            metrics = (await client.get("/metrics")).text
        await app_state(app).key_usage.drain()
    warnings = [r for r in caplog.records if r.name == "transcripts.ratelimit"]
    # Once per outage, not once per request.
    assert len(warnings) == 1
    assert "rate limit storage unreachable" in warnings[0].getMessage()
    failures = [
        line
        for line in metrics.splitlines()
        if line.startswith("transcripts_rate_limit_storage_failures_total ")
    ]
    assert len(failures) == 1
    assert float(failures[0].split()[1]) >= 1


# ---------------------------------------------------------------- concurrent sessions

MAX_SESSIONS = 3


@pytest.fixture(scope="module")
async def sessions_app(database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url, max_concurrent_sessions_per_character=MAX_SESSIONS)
    async for app in running_app(settings):
        yield app


@pytest.fixture
async def sessions_client(sessions_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sessions_app) as client:
        yield client
    await app_state(sessions_app).key_usage.drain()


@pytest.fixture
def sessions_factory(sessions_app: FastAPI) -> Factory:
    return Factory(app_state(sessions_app).database, app_state(sessions_app).settings)


def assert_at_session_limit(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "30"
    message = (
        f"Concurrent session limit reached: this character has {MAX_SESSIONS} sessions in progress."
    )
    assert response.json() == {
        "success": False,
        "message": message,
        "data": None,
        "errors": {"detail": [message]},
    }


async def test_a_character_at_its_concurrent_session_limit_answers_429(
    sessions_client: httpx.AsyncClient, sessions_factory: Factory
) -> None:
    owner = await sessions_factory.user()
    _, key = await sessions_factory.api_key(owner)
    auth = {"X-API-Key": key}
    character = await sessions_factory.character(owner, allowed_origins=[ORIGIN])
    # In progress: two. Not counted: one finalized, one started before the window.
    for _ in range(2):
        await sessions_factory.session(character)
    await sessions_factory.session(character, usage=SEED_USAGE)
    stale = datetime.now(UTC) - timedelta(hours=3)
    await sessions_factory.session(character, started_at=stale)

    started = await sessions_client.post(START, json={"agent": character.slug}, headers=auth)
    assert started.status_code == 201, started.text
    assert_at_session_limit(
        await sessions_client.post(START, json={"agent": character.slug}, headers=auth)
    )
    # The widget, without credentials, meets the same limit.
    assert_at_session_limit(
        await sessions_client.post(
            START, json={"agent": character.slug}, headers={"Origin": ORIGIN}
        )
    )
    # Another character of the same owner is not limited by this one's sessions.
    other = await sessions_factory.character(owner)
    assert (
        await sessions_client.post(START, json={"agent": other.slug}, headers=auth)
    ).status_code == 201

    # Finalizing a session frees its slot, for one more start.
    session_id = started.json()["data"]["session_id"]
    finalized = await sessions_client.post(
        FINALIZE.format(session_id), json=SEED_USAGE_BODY, headers=auth
    )
    assert finalized.status_code == 200, finalized.text
    again = await sessions_client.post(START, json={"agent": character.slug}, headers=auth)
    assert again.status_code == 201, again.text
    assert_at_session_limit(
        await sessions_client.post(START, json={"agent": character.slug}, headers=auth)
    )


async def test_concurrent_starts_at_the_limit_let_exactly_the_limit_through(
    sessions_client: httpx.AsyncClient, sessions_factory: Factory
) -> None:
    owner = await sessions_factory.user()
    _, key = await sessions_factory.api_key(owner)
    character = await sessions_factory.character(owner)
    await sessions_factory.session(character)  # one slot taken: two left for eight starts

    async def start() -> httpx.Response:
        return await sessions_client.post(
            START, json={"agent": character.slug}, headers={"X-API-Key": key}
        )

    answers = await asyncio.gather(*(start() for _ in range(8)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] * (MAX_SESSIONS - 1) + [429] * (8 - MAX_SESSIONS + 1)
    for answer in answers:
        if answer.status_code == 429:
            assert_at_session_limit(answer)
