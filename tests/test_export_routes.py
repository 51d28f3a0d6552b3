"""Transcript exports over HTTP, both dialects, both kinds of credentials: each body parsed
back with the library that reads its format and compared to the stored turns."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.factories import SEED_USAGE, Factory
from tests.test_exports import read_markdown, read_srt, read_vtt
from transcripts.db.hot_read import TranscriptReads
from transcripts.dialects import exports as export_routes
from transcripts.domain import NewTurn, Turns
from transcripts.redaction import redact_pii

PATHS = {
    "agents": "/api/agents/agent-session/{}/transcript/{}/",
    "anam": "/v1/sessions/{}/transcript/{}",
}
MEDIA_TYPES = {
    "vtt": "text/vtt; charset=utf-8",
    "srt": "application/x-subrip",
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "jsonl": "application/x-ndjson",
}
LABELS = {"assistant": "Assistant", "user": "User"}
TEXTS = [
    ("assistant", "Hello! How can I help you today?"),
    ("user", "My e-mail is dana@northwind.example, call +1 415 555 0100."),
    ("assistant", "Thanks, Dana. I have booked the 3 pm slot & sent <details>."),
    ("user", "Card 4111 1111 1111 1111 expires soon"),
]
# ts, speaking duration: a cue runs for the duration, else to the next turn's ts.
TIMES = [(0.5, 2.0), (3.0, None), (6.25, 3.5), (10.0, None)]
DURATION = 14.0
# (start ms, end ms) by that rule; the last runs to the session's end.
CUES = [(500, 2500), (3000, 6250), (6250, 9750), (10000, 14000)]


@dataclass
class Seeded:
    session_id: str
    key: str
    token: str
    other_key: str


def seed_turns() -> list[NewTurn]:
    return [
        NewTurn(
            turn_index=index,
            role=role,  # type: ignore[arg-type]
            text=text,
            ts=ts,
            speaking_duration_seconds=duration,
            was_interrupted=index == 2,
        )
        for index, ((role, text), (ts, duration)) in enumerate(zip(TEXTS, TIMES, strict=True))
    ]


async def seed(factory: Factory, *, finalized: bool = True) -> Seeded:
    owner = await factory.user()
    character = await factory.character(owner, name="Support Bot")
    session = await factory.session(
        character,
        turns=seed_turns(),
        usage=SEED_USAGE if finalized else None,
        duration_seconds=DURATION,
    )
    _, key = await factory.api_key(owner)
    _, other_key = await factory.api_key(await factory.user())
    return Seeded(str(session.session_id), key, factory.token(owner.id), other_key)


def credential_headers(seeded: Seeded, kind: str) -> dict[str, str]:
    if kind == "key":
        return {"X-API-Key": seeded.key}
    return {"Authorization": f"Bearer {seeded.token}"}


def parsed(fmt: str, body: bytes) -> list[tuple[str, str, int | None, int | None]]:
    """(role label, text, start ms, end ms) of each turn, as the format's own reader sees it."""
    if fmt == "vtt":
        return [(str(voice), text, start, end) for voice, text, start, end in read_vtt(body)]
    if fmt == "srt":
        subtitles = read_srt(body)
        assert [index for index, _, _, _ in subtitles] == list(range(1, len(subtitles) + 1))
        return [
            (content.split(": ", 1)[0], content.split(": ", 1)[1], start, end)
            for _, content, start, end in subtitles
        ]
    if fmt == "md":
        header, paragraphs = read_markdown(body)
        assert header[0].startswith("Session: ")
        found = []
        for paragraph in paragraphs:
            prefix, text = paragraph.split(":** ", 1)
            clock, label = prefix.removeprefix("**[").split("] ")
            minutes, seconds = clock.split(":")
            found.append(
                (
                    label.removesuffix(" (interrupted)"),
                    text,
                    (int(minutes) * 60 + int(seconds)) * 1000,
                    None,
                )
            )
        return found
    if fmt == "txt":
        return [
            (line.split(": ", 1)[0], line.split(": ", 1)[1], None, None)
            for line in body.decode().splitlines()
        ]
    items = [orjson.loads(line) for line in body.splitlines()]
    assert [item["turn_index"] for item in items] == list(range(len(items)))
    assert [(item["ts"], item["speaking_duration_seconds"]) for item in items] == TIMES
    assert [item["was_interrupted"] for item in items] == [False, False, True, False]
    return [(LABELS[item["role"]], item["text"], None, None) for item in items]


def expected(
    fmt: str, transform: Callable[[str], str] = str
) -> list[tuple[str, str, int | None, int | None]]:
    rows = []
    for (role, text), (start, end) in zip(TEXTS, CUES, strict=True):
        if fmt in {"vtt", "srt"}:
            timing: tuple[int | None, int | None] = (start, end)
        elif fmt == "md":
            timing = (start // 1000 * 1000, None)
        else:
            timing = (None, None)
        rows.append((LABELS[role], transform(text), *timing))
    return rows


@pytest.mark.parametrize("dialect", list(PATHS))
@pytest.mark.parametrize("kind", ["key", "jwt"])
async def test_every_format_reads_back_as_the_stored_turns(
    client: httpx.AsyncClient, factory: Factory, dialect: str, kind: str
) -> None:
    seeded = await seed(factory)
    for fmt, media_type in MEDIA_TYPES.items():
        response = await client.get(
            PATHS[dialect].format(seeded.session_id, fmt), headers=credential_headers(seeded, kind)
        )
        assert response.status_code == 200, (fmt, response.text)
        assert response.headers["content-type"] == media_type
        assert "content-disposition" not in response.headers
        assert response.headers["cache-control"] == "private"
        assert parsed(fmt, response.content) == expected(fmt), fmt
        # The other spelling of the path answers the same bytes.
        other = PATHS[dialect].format(seeded.session_id, fmt)
        other = other[:-1] if other.endswith("/") else other + "/"
        again = await client.get(other, headers=credential_headers(seeded, kind))
        assert again.content == response.content


@pytest.mark.parametrize("dialect", list(PATHS))
async def test_redacted_exports_replace_the_pii_of_every_turn(
    client: httpx.AsyncClient, factory: Factory, dialect: str
) -> None:
    seeded = await seed(factory)
    for fmt in MEDIA_TYPES:
        response = await client.get(
            PATHS[dialect].format(seeded.session_id, fmt),
            params={"redact": "pii"},
            headers={"X-API-Key": seeded.key},
        )
        assert response.status_code == 200
        turns = parsed(fmt, response.content)
        assert turns == expected(fmt, redact_pii), fmt
        shown = " ".join(text for _, text, _, _ in turns)
        for tag in ("[EMAIL]", "[CARD]", "[PHONE]"):
            assert tag in shown, shown
        body = response.content.decode()
        assert "dana@northwind.example" not in body
        assert "4111" not in body


@pytest.mark.parametrize("dialect", list(PATHS))
async def test_download_names_the_file(
    client: httpx.AsyncClient, factory: Factory, dialect: str
) -> None:
    seeded = await seed(factory)
    for value in ("1", "true"):
        response = await client.get(
            PATHS[dialect].format(seeded.session_id, "srt"),
            params={"download": value},
            headers={"X-API-Key": seeded.key},
        )
        assert response.status_code == 200
        assert response.headers["content-disposition"] == (
            f'attachment; filename="transcript-{seeded.session_id}.srt"'
        )


def agents_error(message: str, errors: dict[str, list[str]]) -> dict[str, object]:
    return {"success": False, "message": message, "data": None, "errors": errors}


async def test_refusals_in_the_enveloped_body(client: httpx.AsyncClient, factory: Factory) -> None:
    seeded = await seed(factory)
    headers = {"X-API-Key": seeded.key}
    path = PATHS["agents"]
    # Another format is no route at all: the dialect's plain 404.
    unknown = await client.get(path.format(seeded.session_id, "pdf"), headers=headers)
    assert unknown.status_code == 404
    assert unknown.json() == agents_error("Not found.", {"detail": ["Not found."]})
    bad_redact = await client.get(
        path.format(seeded.session_id, "vtt"), params={"redact": "all"}, headers=headers
    )
    assert bad_redact.status_code == 400
    assert bad_redact.json()["success"] is False
    assert list(bad_redact.json()["errors"]) == ["redact"]
    misspelt = await client.get(
        path.format(seeded.session_id, "vtt"), params={"redact_pii": "1"}, headers=headers
    )
    assert misspelt.status_code == 400
    assert misspelt.json() == agents_error(
        "Invalid redact_pii.", {"redact_pii": ["Not a parameter of this export."]}
    )
    bad_download = await client.get(
        path.format(seeded.session_id, "vtt"), params={"download": "maybe"}, headers=headers
    )
    assert bad_download.status_code == 400
    assert list(bad_download.json()["errors"]) == ["download"]
    malformed = await client.get(path.format("not-a-uuid", "vtt"), headers=headers)
    assert malformed.status_code == 400
    anonymous = await client.get(path.format(seeded.session_id, "vtt"))
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_refusals_in_anams_body(client: httpx.AsyncClient, factory: Factory) -> None:
    seeded = await seed(factory)
    headers = {"X-API-Key": seeded.key}
    path = PATHS["anam"]
    unknown = await client.get(path.format(seeded.session_id, "pdf"), headers=headers)
    assert unknown.status_code == 404
    assert unknown.json() == {"statusCode": 404, "error": "Not Found", "message": "Not found"}
    misspelt = await client.get(
        path.format(seeded.session_id, "vtt"), params={"redact_pii": "1"}, headers=headers
    )
    assert misspelt.status_code == 400
    assert misspelt.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "Invalid redact_pii (redact_pii: Not a parameter of this export.)",
    }


@pytest.mark.parametrize("dialect", list(PATHS))
async def test_another_owners_session_is_the_same_404_as_a_missing_one(
    client: httpx.AsyncClient, factory: Factory, dialect: str
) -> None:
    seeded = await seed(factory)
    headers = {"X-API-Key": seeded.other_key}
    not_owned = await client.get(PATHS[dialect].format(seeded.session_id, "vtt"), headers=headers)
    missing = await client.get(PATHS[dialect].format(uuid.uuid4(), "vtt"), headers=headers)
    assert not_owned.status_code == missing.status_code == 404
    assert not_owned.content == missing.content
    assert not_owned.headers == missing.headers


async def test_a_long_transcript_is_read_in_batches_and_timed_across_them(
    client: httpx.AsyncClient, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 7 over 30 turns: each cue that ends at the next turn's start still does when
    that turn is in the next batch, and no statement reads more than a batch."""
    monkeypatch.setattr(export_routes, "BATCH_TURNS", 7)
    owner = await factory.user()
    character = await factory.character(owner)
    many = [
        NewTurn(
            turn_index=index,
            role="user" if index % 2 else "assistant",
            text=f"turn {index}",
            ts=index * 1.5,
        )
        for index in range(30)
    ]
    session = await factory.session(character, turns=many, usage=SEED_USAGE, duration_seconds=60)
    _, key = await factory.api_key(owner)
    sizes: list[int] = []
    batches = TranscriptReads.turn_batches

    async def observed(self: TranscriptReads, record: Any, size: int) -> AsyncIterator[Turns]:
        async for turns in batches(self, record, size):
            sizes.append(len(turns.turn_index))
            yield turns

    monkeypatch.setattr(TranscriptReads, "turn_batches", observed)
    response = await client.get(
        PATHS["agents"].format(session.session_id, "vtt"), headers={"X-API-Key": key}
    )
    cues = read_vtt(response.content)
    assert [text for _, text, _, _ in cues] == [f"turn {index}" for index in range(30)]
    assert [(start, end) for _, _, start, end in cues] == [
        (index * 1500, (index + 1) * 1500 if index < 29 else 60_000) for index in range(30)
    ]
    assert sizes == [7, 7, 7, 7, 2]


async def test_the_redacted_text_reads_the_same_in_both_reads_every_export_and_the_stream(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    seeded = await seed(factory)
    headers = {"X-API-Key": seeded.key}
    params = {"redact": "pii"}
    session = seeded.session_id
    enveloped = await client.get(
        f"/api/agents/agent-session/{session}/transcript/", params=params, headers=headers
    )
    anam = await client.get(f"/v1/sessions/{session}/transcript", params=params, headers=headers)
    texts = [item["text"] for item in enveloped.json()["data"]["transcript"]]
    assert texts != [text for _, text in TEXTS]  # the seed says something to redact
    assert [message["message"] for message in anam.json()["messages"]] == texts
    for dialect, path in PATHS.items():
        for fmt in MEDIA_TYPES:
            exported = await client.get(path.format(session, fmt), params=params, headers=headers)
            assert [text for _, text, _, _ in parsed(fmt, exported.content)] == texts, (
                dialect,
                fmt,
            )
    # The live stream of the finalized session replays the same redacted turns.
    stream = await client.get(
        f"/api/agents/agent-session/{session}/transcript/stream/", params=params, headers=headers
    )
    events = [
        orjson.loads(line.removeprefix("data:").strip())
        for line in stream.text.splitlines()
        if line.startswith("data:")
    ]
    assert [event["text"] for event in events if "text" in event] == texts
