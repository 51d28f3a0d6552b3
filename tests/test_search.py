"""Full-text search over HTTP on both databases, with both kinds of credentials.

Each test's turns carry a word of their own (``marker``), and each query names it, so the
shared database's other sessions never answer. Stemming: PostgreSQL's ``english``
configuration and SQLite's FTS5 ``porter`` tokenizer both reduce booking/booked to ``book``.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.factories import SEED_USAGE, Factory
from tests.migration_harness import migrate, run
from tests.servers import TRANSCRIPTS, clean_environment
from tests.test_migrations import UPLOAD_KEY
from tests.test_migrations import _seed_before_counters as seed_before_counters
from transcripts.domain import NewTurn, SessionRef, UserRecord

SEARCH = "/api/agents/transcripts/search/"
STARTED = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def error(message: str, errors: dict[str, list[str]]) -> dict[str, Any]:
    return {"success": False, "message": message, "data": None, "errors": errors}


def plain(snippet: str) -> str:
    return re.sub(r"</?b>", "", snippet)


@dataclass
class World:
    marker: str
    owner: UserRecord
    other: UserRecord
    staff: UserRecord
    slug: str
    older: SessionRef
    newer: SessionRef
    others: SessionRef
    keys: dict[str, str]


def said(*lines: tuple[str, str]) -> list[NewTurn]:
    return [
        NewTurn(turn_index=index, role=role, text=text, ts=round(1.5 + index * 4.25, 2))  # type: ignore[arg-type]
        for index, (role, text) in enumerate(lines)
    ]


async def world(factory: Factory) -> World:
    marker = f"mk{uuid.uuid4().hex[:10]}"
    owner, other = await factory.user(), await factory.user()
    staff = await factory.user(staff=True)
    character = await factory.character(owner)
    second = await factory.character(owner)
    theirs = await factory.character(other)
    older = await factory.session(
        character,
        started_at=STARTED,
        usage=SEED_USAGE,
        turns=said(
            ("assistant", f"Hello, {marker} here."),
            ("user", f"I booked the table for Friday, {marker}."),
            ("assistant", "Anything else?"),
        ),
    )
    newer = await factory.session(
        second,
        started_at=STARTED + timedelta(days=1),
        turns=said(
            ("user", f"Is booking a demo possible this week, or maybe next week? {marker}"),
            ("assistant", f"Booking: yes, booking is open; {marker} confirms bookings."),
        ),
    )
    others = await factory.session(
        theirs,
        started_at=STARTED + timedelta(days=2),
        turns=said(("user", f"The {marker} booking was booked by someone else.")),
    )
    keys = {}
    for name, user in (("owner", owner), ("other", other), ("staff", staff)):
        keys[name] = (await factory.api_key(user))[1]
        keys[f"{name}_jwt"] = factory.token(user.id)
    return World(marker, owner, other, staff, second.slug, older, newer, others, keys)


def as_(world: World, who: str, kind: str = "key") -> dict[str, str]:
    if kind == "key":
        return {"X-API-Key": world.keys[who]}
    return {"Authorization": f"Bearer {world.keys[f'{who}_jwt']}"}


async def found(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> dict[str, Any]:
    response = await client.get(SEARCH, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["errors"] is None
    data: dict[str, Any] = body["data"]
    return data


def where(data: dict[str, Any]) -> list[tuple[str, int]]:
    return [(hit["session_id"], hit["turn_index"]) for hit in data["results"]]


@pytest.mark.parametrize("kind", ["key", "jwt"])
async def test_a_stemmed_query_finds_the_callers_turns_newest_session_first(
    client: httpx.AsyncClient, factory: Factory, kind: str
) -> None:
    w = await world(factory)
    data = await found(client, as_(w, "owner", kind), q=f"booking {w.marker}")
    newer, older = str(w.newer.session_id), str(w.older.session_id)
    # "booked" and "bookings" match "booking": all stem to "book".
    assert where(data) == [(newer, 0), (newer, 1), (older, 1)]
    assert data["next_cursor"] is None
    first = data["results"][0]
    assert {name: value for name, value in first.items() if name != "snippet"} == {
        "session_id": newer,
        "character_slug": w.slug,
        "turn_index": 0,
        "role": "user",
        "ts": 1.5,
        "created_at": (STARTED + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
    }
    assert data["results"][2]["ts"] == 5.75
    for hit, text in zip(
        data["results"],
        [
            f"Is booking a demo possible this week, or maybe next week? {w.marker}",
            f"Booking: yes, booking is open; {w.marker} confirms bookings.",
            f"I booked the table for Friday, {w.marker}.",
        ],
        strict=True,
    ):
        # The text around the matches: the whole of a short turn, give or take a word.
        assert plain(hit["snippet"]) in text
        assert len(plain(hit["snippet"])) >= len(text) - 4
        assert f"<b>{w.marker}</b>" in hit["snippet"]
    assert "<b>booked</b>" in data["results"][2]["snippet"]


async def test_another_owners_session_is_found_by_its_owner_and_staff_alone(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    w = await world(factory)
    theirs = str(w.others.session_id)
    for who in ("owner", "other", "staff"):
        for kind in ("key", "jwt"):
            data = await found(client, as_(w, who, kind), q=f'"{w.marker} booking"')
            sessions = {session for session, _ in where(data)}
            assert (theirs in sessions) == (who in {"other", "staff"}), (who, kind)
    staff = await found(client, as_(w, "staff"), q=f"booking {w.marker}")
    assert [session for session, _ in where(staff)] == [
        theirs,
        *[str(w.newer.session_id)] * 2,
        str(w.older.session_id),
    ]
    nobody = await factory.user()
    _, key = await factory.api_key(nobody)
    assert (await found(client, {"X-API-Key": key}, q=w.marker))["results"] == []


async def test_pages_follow_the_cursor_to_the_end(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    w = await world(factory)
    headers = as_(w, "staff")
    everything = where(await found(client, headers, q=w.marker, page_size=100))
    assert len(everything) == 5
    walked: list[tuple[str, int]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"q": w.marker, "page_size": 2}
        if cursor:
            params["cursor"] = cursor
        data = await found(client, headers, **params)
        walked += where(data)
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert walked == everything
    assert pages == 3


async def test_relevance_ranks_the_candidates_and_pages_them(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    w = await world(factory)
    headers = as_(w, "owner")
    recent = where(await found(client, headers, q=f"booking {w.marker}"))
    ranked = await found(client, headers, q=f"booking {w.marker}", sort="relevance")
    assert sorted(where(ranked)) == sorted(recent)
    # A word said three times in a short turn ranks above the same word once in a long one,
    # whichever came first.
    rare = f"{w.marker}x"
    owner_character = await factory.character(w.owner)
    session = await factory.session(
        owner_character,
        turns=said(
            ("user", f"So I was thinking about the week, and the plan, and then {rare} came up."),
            ("assistant", f"{rare}, {rare}, {rare}!"),
        ),
    )
    pair = [(str(session.session_id), 0), (str(session.session_id), 1)]
    assert where(await found(client, headers, q=rare)) == pair
    assert where(await found(client, headers, q=rare, sort="relevance")) == pair[::-1]
    first = await found(client, headers, q=f"booking {w.marker}", sort="relevance", page_size=2)
    rest = await found(
        client,
        headers,
        q=f"booking {w.marker}",
        sort="relevance",
        page_size=2,
        cursor=first["next_cursor"],
    )
    assert where(first) + where(rest) == where(ranked)
    assert rest["next_cursor"] is None
    mixed = await client.get(
        SEARCH, params={"q": w.marker, "cursor": first["next_cursor"]}, headers=headers
    )
    assert mixed.status_code == 400
    assert mixed.json() == error(
        "Invalid cursor.", {"cursor": ["Not a cursor this service gave out."]}
    )


async def test_filters_narrow_the_hits(client: httpx.AsyncClient, factory: Factory) -> None:
    w = await world(factory)
    headers = as_(w, "owner")
    newer, older = str(w.newer.session_id), str(w.older.session_id)
    q = f"booking {w.marker}"
    assert where(await found(client, headers, q=q, role="assistant")) == [(newer, 1)]
    assert where(await found(client, headers, q=q, character_slug=w.slug)) == [
        (newer, 0),
        (newer, 1),
    ]
    day = STARTED.isoformat()
    assert where(await found(client, headers, q=q, end=day)) == [(older, 1)]
    assert where(
        await found(client, headers, q=q, start=(STARTED + timedelta(hours=1)).isoformat())
    ) == [(newer, 0), (newer, 1)]
    # Words the text lacks, a phrase out of order, an excluded word.
    assert (await found(client, headers, q=f"{w.marker} zebra"))["results"] == []
    assert (await found(client, headers, q=f'"booking {w.marker}"'))["results"] == []
    assert where(await found(client, headers, q=f"{w.marker} -demo booking")) == [
        (newer, 1),
        (older, 1),
    ]
    assert where(await found(client, headers, q=f"{w.marker} friday or demo")) == [
        (newer, 0),
        (older, 1),
    ]


async def test_bad_queries_are_400s_in_the_envelope(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    w = await world(factory)
    headers = as_(w, "owner")
    for q in ("   ", "?!", "-demo", '-"a phrase" -b'):
        response = await client.get(SEARCH, params={"q": q}, headers=headers)
        assert response.status_code == 400
        assert response.json() == error(
            "Invalid q.", {"q": ["Give at least one word to search for."]}
        )
    for params in ({"q": ""}, {"q": "a" * 201}, {}, {"q": "x", "page_size": 101}):
        response = await client.get(SEARCH, params=params, headers=headers)
        assert response.status_code == 400, params
        assert response.json()["success"] is False
    bad_cursor = await client.get(SEARCH, params={"q": "x", "cursor": "nope"}, headers=headers)
    assert bad_cursor.status_code == 400
    assert bad_cursor.json() == error(
        "Invalid cursor.", {"cursor": ["Not a cursor this service gave out."]}
    )
    backwards = await client.get(
        SEARCH,
        params={"q": "x", "start": "2026-06-02T00:00:00Z", "end": "2026-06-01T00:00:00Z"},
        headers=headers,
    )
    assert backwards.status_code == 400
    assert backwards.json() == error("Invalid end.", {"end": ["Must not be before start."]})
    anonymous = await client.get(SEARCH, params={"q": "x"})
    assert anonymous.status_code == 401


async def test_text_that_looks_like_query_syntax_is_searched_as_words(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    w = await world(factory)
    headers = as_(w, "owner")
    for q in (f'{w.marker} NEAR(" AND *', f"{w.marker}) OR (", f"{w.marker}:* ^ -"):
        response = await client.get(SEARCH, params={"q": q}, headers=headers)
        assert response.status_code == 200, (q, response.text)


def test_search_reindex_rebuilds_with_the_configured_language(empty_database: str) -> None:
    """On PostgreSQL the column follows TRANSCRIPTS_SEARCH_CONFIG once rebuilt: with `simple`
    (no stemming) `booking` no longer finds `booked`; SQLite rebuilds its FTS5 index."""
    url = empty_database
    migrate(url, "upgrade", UPLOAD_KEY)
    seed_before_counters(url)
    run(url, "UPDATE turns SET text = 'We booked a table' WHERE turn_index = 0")
    migrate(url, "upgrade", "head")
    sqlite = "sqlite" in url

    def matching(word: str) -> int:
        if sqlite:
            statement = "SELECT count(*) AS n FROM turns_fts WHERE turns_fts MATCH :word"
        else:
            statement = (
                "SELECT count(*) AS n FROM turns WHERE search_vector @@"
                " websearch_to_tsquery(CAST(:config AS regconfig), :word)"
            )
        return int(run(url, statement, word=word, config=config)[0]["n"])

    config = "english"
    assert (matching("booking"), matching("booked")) == (1, 1)
    env = {
        **clean_environment(),
        "TRANSCRIPTS_DATABASE_URL": url,
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        "TRANSCRIPTS_SEARCH_CONFIG": "simple",
    }
    result = subprocess.run(
        [TRANSCRIPTS, "search-reindex"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    if sqlite:
        assert result.stdout == "rebuilt the FTS5 index turns_fts from the turns\n"
    else:
        assert result.stdout == (
            "rebuilt turns.search_vector with the text-search configuration simple\n"
        )
        definition = run(
            url,
            "SELECT pg_get_expr(d.adbin, d.adrelid) AS expr FROM pg_attrdef d"
            " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
            " WHERE a.attrelid = 'turns'::regclass AND a.attname = 'search_vector'",
        )
        assert "'simple'::regconfig" in definition[0]["expr"]
        assert run(
            url,
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_turns_search_vector'",
        ) == [
            {
                "indexdef": "CREATE INDEX ix_turns_search_vector ON public.turns USING gin (search_vector)"
            }
        ]
    config = "simple"
    # SQLite's porter tokenizer is its own; PostgreSQL now matches words as they are.
    assert (matching("booking"), matching("booked")) == ((1, 1) if sqlite else (0, 1))

    refused = subprocess.run(
        [TRANSCRIPTS, "search-reindex"],
        env={**env, "TRANSCRIPTS_SEARCH_CONFIG": "english; DROP TABLE turns"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("transcripts: configuration error:")
