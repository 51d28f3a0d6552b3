"""The live transcript (DESIGN.md, "Live transcript"), through real `transcripts serve`
processes: on PostgreSQL two replicas of one database, the turns appended through one and
the stream read from the other; on SQLite one process (its in-process broadcaster).

Event data is compared with what the transcript read answers for the same turns, so a
stream's item is the read's item, in each dialect.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET, migrate
from tests.factories import Factory
from tests.factories import turns as factory_turns
from tests.live_streams import (
    Identity,
    SseEvent,
    SseReader,
    identity,
    open_stream,
    stream_path,
)
from tests.servers import Server, transcripts_process
from tests.tcp_proxy import TcpProxy
from tests.write_path import SEED_USAGE_BODY, Worker, failure, seed_turn
from transcripts.settings import Settings

MAX_PER_CALLER = 4
QUEUE_SIZE = 4


def server_env(database_url: str, recordings: Path, **extra: str) -> dict[str, str]:
    return {
        "TRANSCRIPTS_DATABASE_URL": database_url,
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        "TRANSCRIPTS_RATE_LIMIT_ENABLED": "false",
        "TRANSCRIPTS_RECORDINGS_DIR": str(recordings),
        "TRANSCRIPTS_DB_POOL_SIZE": "4",
        "TRANSCRIPTS_STREAM_HEARTBEAT_SECONDS": "1",
        "TRANSCRIPTS_STREAM_MAX_PER_CALLER": str(MAX_PER_CALLER),
        "TRANSCRIPTS_STREAM_QUEUE_SIZE": str(QUEUE_SIZE),
        # Room for the slow reader's bulky turns.
        "TRANSCRIPTS_MAX_TRANSCRIPT_BYTES": str(256 * 1024 * 1024),
        **extra,
    }


@dataclass
class Deployment:
    database_url: str
    writer: Server
    reader: Server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    recordings = tmp_path_factory.mktemp("recordings")
    if request.param == "sqlite":
        url = migrate(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('live') / 'live.db'}")
        with transcripts_process("serve", env=server_env(url, recordings)) as server:
            yield Deployment(url, server, server)
        return
    url = request.getfixturevalue("migrated_postgresql_url")
    env = server_env(url, recordings)
    with (
        transcripts_process("serve", env=env) as writer,
        transcripts_process("serve", env=env) as reader,
    ):
        yield Deployment(url, writer, reader)


@pytest.fixture
async def clients(deployment: Deployment) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    timeout = httpx.Timeout(30, read=30)
    async with (
        httpx.AsyncClient(base_url=deployment.writer.base_url, timeout=timeout) as writer,
        httpx.AsyncClient(base_url=deployment.reader.base_url, timeout=timeout) as reader,
    ):
        yield writer, reader


@pytest.fixture
async def person(deployment: Deployment) -> Identity:
    return await identity(deployment.database_url)


def turn(index: int, **changes: Any) -> dict[str, Any]:
    """Turn ``index`` of Oshara's example conversation (past its end, one of the worker's
    own), as a worker sends it."""
    if index < 10:
        return seed_turn(index) | changes
    role = "assistant" if index % 2 == 0 else "user"
    return {
        "turn_index": index,
        "role": role,
        "text": f"Turn {index}.",
        "ts": index * 2.0,
    } | changes


async def appended(worker: Worker, session_id: str, *indexes: int) -> int:
    response = await worker.turns(session_id, [turn(index) for index in indexes])
    assert response.status_code == 200, response.text
    inserted: int = response.json()["data"]["inserted"]
    return inserted


def expected_items(read: dict[str, Any], dialect: str) -> dict[int, dict[str, Any]]:
    """Each turn's item as the transcript read answers it, by turn index (Anam's with
    turnIndex added, as the stream sends it)."""
    if dialect == "agents":
        return {item["turn_index"]: item for item in read["data"]["transcript"]}
    indexes = sorted(item["turn_index"] for item in read["agents"]["data"]["transcript"])
    return {
        index: {**message, "turnIndex": index}
        for index, message in zip(indexes, read["anam"]["messages"], strict=True)
    }


async def transcript_reads(
    client: httpx.AsyncClient, session_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    agents = await client.get(
        f"/api/agents/agent-session/{session_id}/transcript/", headers=headers
    )
    anam = await client.get(f"/v1/sessions/{session_id}/transcript", headers=headers)
    assert agents.status_code == anam.status_code == 200
    return {"agents": agents.json(), "anam": anam.json(), "data": agents.json()["data"]}


def finalized_payload(reads: dict[str, Any], dialect: str) -> dict[str, Any]:
    if dialect == "agents":
        data = reads["data"]
        return {
            "session_id": data["session_id"],
            "finalized_at": data["finalized_at"],
            "turn_count": data["turn_count"],
        }
    anam = reads["anam"]
    return {
        "sessionId": anam["sessionId"],
        "endTime": anam["endTime"],
        "durationMs": anam["durationMs"],
        "totalMessages": anam["totalMessages"],
    }


DIALECT_CREDENTIALS = [
    ("agents", "key"),
    ("agents", "jwt"),
    ("anam", "key"),
    ("anam", "jwt"),
]


@pytest.mark.parametrize(("dialect", "credentials"), DIALECT_CREDENTIALS)
async def test_stored_turns_then_appends_from_the_other_replica_then_finalized(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    person: Identity,
    dialect: str,
    credentials: str,
) -> None:
    writer_client, reader_client = clients
    worker = Worker(writer_client, person.key)
    session_id = await worker.start(person.slug)
    assert await appended(worker, session_id, 0, 1) == 2

    headers = person.headers(credentials)
    async with open_stream(reader_client, stream_path(dialect, session_id), headers) as (
        response,
        events,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        stored = await events.turns(2)
        # Out of turn_index order, then a retry that stores nothing and so announces nothing.
        assert await appended(worker, session_id, 3) == 1
        assert await appended(worker, session_id, 2) == 1
        assert await appended(worker, session_id, 2, 3) == 0
        live = await events.turns(2)
        finalize = await worker.finalize(session_id, **SEED_USAGE_BODY)
        assert finalize.status_code == 200, finalize.text
        end = await events.next_event()
        assert end is not None
        assert end.event == "finalized"
        assert await events.next_event() is None  # the server ended the stream

    received = stored + live
    # Ids increase in the order appended; turn indexes say where each turn goes.
    assert [int(event.id or "") for event in received] == [1, 2, 3, 4]
    reads = await transcript_reads(reader_client, session_id, person.key)
    items = expected_items(reads, dialect)
    index_key = "turn_index" if dialect == "agents" else "turnIndex"
    assert [event.json()[index_key] for event in received] == [0, 1, 3, 2]
    assert [event.json() for event in received] == [items[i] for i in (0, 1, 3, 2)]
    assert end.json() == finalized_payload(reads, dialect)


@pytest.mark.parametrize("dialect", ["agents", "anam"])
async def test_a_finalized_session_replays_and_ends_at_once(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], person: Identity, dialect: str
) -> None:
    writer_client, reader_client = clients
    worker = Worker(writer_client, person.key)
    session_id = await worker.start(person.slug)
    await appended(worker, session_id, 1, 0)
    assert (await worker.finalize(session_id, **SEED_USAGE_BODY)).status_code == 200

    async with open_stream(reader_client, stream_path(dialect, session_id), person.jwt) as (
        _,
        events,
    ):
        received = [await events.next_event() for _ in range(4)]
    reads = await transcript_reads(reader_client, session_id, person.key)
    items = expected_items(reads, dialect)
    assert [event.event if event else None for event in received] == [
        "turn",
        "turn",
        "finalized",
        None,
    ]
    assert [event.json() for event in received[:2] if event] == [items[1], items[0]]
    assert received[2] is not None
    assert received[2].json() == finalized_payload(reads, dialect)


@pytest.mark.parametrize("dialect", ["agents", "anam"])
async def test_last_event_id_resumes_with_exactly_the_turns_not_yet_sent(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], person: Identity, dialect: str
) -> None:
    writer_client, reader_client = clients
    worker = Worker(writer_client, person.key)
    session_id = await worker.start(person.slug)
    # Appended out of turn_index order: 4, 0, 2 first.
    await appended(worker, session_id, 4, 0)
    await appended(worker, session_id, 2)
    path = stream_path(dialect, session_id)
    async with open_stream(reader_client, path, person.key) as (_, events):
        first = await events.turns(2)
    # The reader is gone (cut mid-stream); the worker goes on, a retry among the new turns,
    # then a batch refused (a rewrite of a stored turn): rolled back, it numbers nothing.
    await appended(worker, session_id, 1, 2)
    rewrite = await worker.turns(session_id, [turn(3), turn(2, text="Something else.")])
    assert rewrite.status_code == 409
    await appended(worker, session_id, 3)
    async with open_stream(reader_client, path, person.key, last_event_id=first[-1].id) as (
        _,
        events,
    ):
        rest = await events.turns(3)
        assert (await worker.finalize(session_id, **SEED_USAGE_BODY)).status_code == 200
        end = await events.next_event()
        assert end is not None
        assert end.event == "finalized"
        assert await events.next_event() is None

    index_key = "turn_index" if dialect == "agents" else "turnIndex"
    received = first + rest
    assert [event.json()[index_key] for event in received] == [4, 0, 2, 1, 3]
    ids = [int(event.id or "") for event in received]
    # 5 went to the retried turn 2 and is never used; the refused batch took none.
    assert ids == [1, 2, 3, 4, 6]
    items = expected_items(await transcript_reads(reader_client, session_id, person.key), dialect)
    assert [event.json() for event in received] == [items[i] for i in (4, 0, 2, 1, 3)]

    # Resuming after the last turn: nothing but the end.
    async with open_stream(reader_client, path, person.key, last_event_id=str(ids[-1])) as (
        _,
        events,
    ):
        only = await events.next_event()
        assert only is not None
        assert only.event == "finalized"
        assert await events.next_event() is None


async def test_heartbeats_and_pii_redaction(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], person: Identity
) -> None:
    writer_client, reader_client = clients
    worker = Worker(writer_client, person.key)
    session_id = await worker.start(person.slug)
    text = "Mail me at jane.doe@example.com or call 415-555-2671."
    await worker.turns(session_id, [turn(0, text=text)])
    for dialect, field in (("agents", "text"), ("anam", "message")):
        path = stream_path(dialect, session_id)
        async with open_stream(
            reader_client, path, person.key, params={"redact": "pii", "unknown": "1"}
        ) as (_, events):
            (event,) = await events.turns(1)
            assert event.json()[field] == "Mail me at [EMAIL] or call [PHONE]."
            ping = await events.next(within=5)  # STREAM_HEARTBEAT_SECONDS=1 here
            assert ping is not None
            assert ping.comments == ["ping"]
            assert ping.event is None
        async with open_stream(reader_client, path, person.key) as (_, events):
            (event,) = await events.turns(1)
            assert event.json()[field] == text


ENVELOPE_NOT_FOUND = failure("Session not found.")
ANAM_NOT_FOUND = {"statusCode": 404, "error": "Not Found", "message": "Session not found"}


READS = {"agents": "/api/agents/agent-session/{}/transcript/", "anam": "/v1/sessions/{}/transcript"}
UNAUTHORIZED = {
    "agents": failure("Invalid or inactive credentials."),
    "anam": {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": "Invalid or inactive credentials",
    },
}
INVALID_ID = "Input should be a valid integer, unable to parse string as an integer"
BAD_LAST_EVENT_ID = {
    "agents": failure("Invalid Last-Event-ID.", {"Last-Event-ID": [INVALID_ID]}),
    "anam": {
        "statusCode": 400,
        "error": "Bad Request",
        "message": f"Invalid Last-Event-ID (Last-Event-ID: {INVALID_ID})",
    },
}
BAD_REDACT = {
    "agents": failure("Invalid redact.", {"redact": ["Input should be 'pii'"]}),
    "anam": {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "Invalid redact (redact: Input should be 'pii')",
    },
}


@pytest.mark.parametrize("dialect", ["agents", "anam"])
async def test_not_owned_is_not_found_and_refusals_come_before_the_stream_as_the_read_answers(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    person: Identity,
    deployment: Deployment,
    dialect: str,
) -> None:
    writer_client, reader_client = clients
    worker = Worker(writer_client, person.key)
    session_id = await worker.start(person.slug)
    stranger = await identity(deployment.database_url)
    missing = "00000000-0000-4000-8000-000000000000"
    stream, read = stream_path(dialect, session_id), READS[dialect].format(session_id)
    not_found = ENVELOPE_NOT_FOUND if dialect == "agents" else ANAM_NOT_FOUND
    for headers in (stranger.key, stranger.jwt):
        foreign = await reader_client.get(stream, headers=headers)
        unknown = await reader_client.get(stream_path(dialect, missing), headers=headers)
        foreign_read = await reader_client.get(read, headers=headers)
        assert foreign.status_code == unknown.status_code == foreign_read.status_code == 404
        # Another caller's session: byte for byte the answer for no session at all.
        assert foreign.content == unknown.content == foreign_read.content
        assert foreign.json() == not_found
        assert foreign.headers["content-type"] == "application/json"
    for headers in ({"X-API-Key": "sk_" + "0" * 64}, {"Authorization": "Bearer not-a-token"}):
        refused = await reader_client.get(stream, headers=headers)
        refused_read = await reader_client.get(read, headers=headers)
        assert refused.status_code == refused_read.status_code == 401
        assert refused.content == refused_read.content
        assert refused.headers["www-authenticate"] == "Bearer"
    bad_key = await reader_client.get(stream, headers={"X-API-Key": "sk_" + "0" * 64})
    assert bad_key.json() == UNAUTHORIZED[dialect]
    bad_id = await reader_client.get(stream, headers={**person.jwt, "Last-Event-ID": "x"})
    assert bad_id.status_code == 400
    assert bad_id.json() == BAD_LAST_EVENT_ID[dialect]
    bad_redact = await reader_client.get(stream, headers=person.key, params={"redact": "all"})
    assert bad_redact.status_code == 400
    assert bad_redact.json() == BAD_REDACT[dialect]


async def test_streams_past_the_callers_limit_are_429_in_the_dialects_body(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], person: Identity
) -> None:
    writer_client, reader_client = clients
    worker = Worker(writer_client, person.key)
    session_id = await worker.start(person.slug)
    await appended(worker, session_id, 0)
    message = f"Too many open streams: at most {MAX_PER_CALLER} per caller."
    async with asyncio.TaskGroup() as group:
        opened: list[asyncio.Event] = []
        release = asyncio.Event()

        async def hold(dialect: str) -> None:
            ready = asyncio.Event()
            opened.append(ready)
            async with open_stream(reader_client, stream_path(dialect, session_id), person.key) as (
                _,
                events,
            ):
                await events.turns(1)
                ready.set()
                await release.wait()

        for number in range(MAX_PER_CALLER):
            group.create_task(hold("agents" if number % 2 else "anam"))
        await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 20)
        metrics = (await reader_client.get("/metrics")).text
        open_now = next(
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("transcripts_live_streams ")
        )
        assert open_now >= MAX_PER_CALLER
        agents = await reader_client.get(stream_path("agents", session_id), headers=person.key)
        anam = await reader_client.get(stream_path("anam", session_id), headers=person.key)
        # Another credential of the same user has streams of its own.
        other = reader_client.stream("GET", stream_path("agents", session_id), headers=person.jwt)
        async with other as response:
            assert response.status_code == 200
        release.set()
    assert agents.status_code == anam.status_code == 429
    assert agents.headers["retry-after"] == anam.headers["retry-after"] == "5"
    assert agents.json() == failure(message)
    assert anam.json() == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": message.removesuffix("."),
    }
    # Closed streams free their places.
    async with open_stream(reader_client, stream_path("agents", session_id), person.key) as (
        response,
        events,
    ):
        assert response.status_code == 200
        assert len(await events.turns(1)) == 1


async def test_a_slow_reader_is_dropped_and_never_slows_the_writer(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], person: Identity
) -> None:
    writer_client, reader_client = clients
    worker = Worker(writer_client, person.key)
    session_id = await worker.start(person.slug)
    path = stream_path("agents", session_id)
    bulky = "word " * 1900  # under the 10,000 characters a turn may hold
    async with (
        reader_client.stream("GET", path, headers=person.key) as slow,
        reader_client.stream("GET", path, headers=person.jwt) as fast,
    ):
        assert slow.status_code == fast.status_code == 200
        reader = SseReader(fast)
        # The slow reader reads nothing: once the socket buffers are full its stream is
        # stuck sending, its queue fills, and it is dropped. Every append is acknowledged.
        total = 0
        for batch in range(60):
            response = await worker.turns(
                session_id,
                [turn(batch * 20 + n, text=f"{batch * 20 + n} {bulky}") for n in range(20)],
            )
            assert response.status_code == 200, response.text
            total += response.json()["data"]["inserted"]
            await reader.turns(20, within=30)
        assert total == 1200
        assert (await worker.finalize(session_id, **SEED_USAGE_BODY)).status_code == 200
        end = await reader.next_event()
        assert end is not None
        assert end.event == "finalized"
        # The slow stream ends before the session's end, cut off: its body is incomplete.
        received: list[str] = []

        async def read_slowly_all() -> None:
            async for line in slow.aiter_lines():
                received.append(line)

        with pytest.raises(httpx.RemoteProtocolError):
            await read_slowly_all()
        assert 0 < sum(line == "event: turn" for line in received) < 1200


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    tcp_proxy = TcpProxy("127.0.0.1", 5432)
    await tcp_proxy.start()
    yield tcp_proxy
    await tcp_proxy.stop()


async def listening(client: httpx.AsyncClient, up: bool) -> None:
    """Until the replica's metrics say its LISTEN connection is ``up`` (or down)."""
    wanted = f"\ntranscripts_live_listening {1.0 if up else 0.0}\n"
    async with asyncio.timeout(30):
        while True:
            if wanted in (await client.get("/metrics")).text:
                return
            await asyncio.sleep(0.1)


async def test_every_turn_arrives_across_a_postgresql_outage(
    migrated_postgresql_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    """The reader replica's database connections (its LISTEN connection too) go through a
    proxy that is cut while the stream is open; the writer keeps appending meanwhile."""
    person = await identity(migrated_postgresql_url)
    through = migrated_postgresql_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    extra = {"TRANSCRIPTS_DB_CONNECT_TIMEOUT_SECONDS": "1"}
    with (
        transcripts_process("serve", env=server_env(migrated_postgresql_url, tmp_path)) as w,
        transcripts_process("serve", env=server_env(through, tmp_path, **extra)) as r,
    ):
        async with (
            httpx.AsyncClient(base_url=w.base_url, timeout=30) as writer_client,
            httpx.AsyncClient(base_url=r.base_url, timeout=30) as reader_client,
        ):
            worker = Worker(writer_client, person.key)
            session_id = await worker.start(person.slug)
            await appended(worker, session_id, 0)
            async with open_stream(reader_client, stream_path("anam", session_id), person.jwt) as (
                _,
                events,
            ):
                received = await events.turns(1)
                await appended(worker, session_id, 1)
                received += await events.turns(1)
                proxy.cut()
                await listening(reader_client, False)
                # Announced while the reader replica cannot hear: nothing may be missed.
                await appended(worker, session_id, 2)
                await appended(worker, session_id, 4, 3)
                proxy.restore()
                await listening(reader_client, True)
                received += await events.turns(3, within=30)
                await appended(worker, session_id, 5)
                received += await events.turns(1)
                assert (await worker.finalize(session_id, **SEED_USAGE_BODY)).status_code == 200
                end = await events.next_event(within=30)
                assert end is not None
                assert end.event == "finalized"
        log = "\n".join(r.output)
    assert [event.json()["turnIndex"] for event in received] == [0, 1, 2, 4, 3, 5], log
    assert [int(event.id or "") for event in received] == [1, 2, 3, 4, 5, 6]


async def test_open_streams_are_not_requests_in_flight_and_shutdown_ends_them_with_retry(
    tmp_path: Path,
) -> None:
    url = migrate(f"sqlite+aiosqlite:///{tmp_path / 'shutdown.db'}")
    person = await identity(url)
    env = server_env(
        url,
        tmp_path,
        TRANSCRIPTS_STREAM_RETRY_MS="2500",
        TRANSCRIPTS_MAX_REQUESTS_IN_FLIGHT="1",
    )
    # uvicorn would wait this long for open connections: the streams must end before.
    with transcripts_process("serve", "--graceful-timeout", "60", env=env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            worker = Worker(client, person.key)
            session_id = await worker.start(person.slug)
            await appended(worker, session_id, 0)
            async with (
                open_stream(client, stream_path("agents", session_id), person.key) as (_, one),
                open_stream(client, stream_path("anam", session_id), person.jwt) as (_, two),
            ):
                await one.turns(1)
                await two.turns(1)
                # Two streams open, and a request is still answered with one in flight allowed.
                read = await client.get(
                    stream_path("anam", session_id)[: -len("/stream")], headers=person.key
                )
                assert read.status_code == 200
                server.process.send_signal(signal.SIGTERM)
                for events in (one, two):
                    last: SseEvent | None = await events.next_event(within=10)
                    assert last is not None
                    assert last.retry == 2500
                    assert last.event is None
                    assert await events.next_event(within=10) is None
        assert await asyncio.to_thread(server.process.wait, 10) == -signal.SIGTERM


async def test_a_stream_with_nothing_to_send_ends_after_the_idle_limit(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    """In process (the suite's app: STREAM_IDLE_SECONDS=0.5), on both databases: the wire
    format byte for byte, and the end of a stream that has nothing more to send."""
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    session = await factory.session(
        await factory.character(owner), turns=factory_turns(("user", "Hello there."))
    )
    assert settings.stream_idle_seconds == 0.5
    path = stream_path("agents", str(session.session_id))
    response = await client.get(path, headers={"X-API-Key": key})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == (
        b"id: 1\r\nevent: turn\r\n"
        b'data: {"role":"user","text":"Hello there.","turn_index":0,"ts":0.42}\r\n\r\n'
    )
    anam = await client.get(
        stream_path("anam", str(session.session_id)),
        headers={"Authorization": f"Bearer {factory.token(owner.id)}", "Last-Event-ID": "1"},
    )
    assert anam.status_code == 200
    assert anam.content == b""
    metrics = (await client.get("/metrics")).text
    assert "\ntranscripts_live_streams 0.0\n" in metrics
    assert "\ntranscripts_live_listening 1.0\n" in metrics
