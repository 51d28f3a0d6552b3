"""Full-text search over the turns a caller may read.

PostgreSQL: ``turns.search_vector``, a stored generated ``tsvector`` column
(``to_tsvector(<configuration>, text)``) under a GIN index, matched with
``websearch_to_tsquery`` (the syntax of web search boxes: words, "quoted phrases", ``or``,
``-word``), snippets by ``ts_headline``. The text-search configuration (``english`` by
default, so ``booking`` finds ``booked``) is ``TRANSCRIPTS_SEARCH_CONFIG``; the column is
built with it by the migration and rebuilt by ``transcripts search-reindex`` when it changes.

SQLite: ``turns_fts``, an FTS5 table over ``turns.text`` with external content (the text
is stored once, in ``turns``), kept by triggers on ``turns``, with the ``porter`` tokenizer
(English stemming too) over ``unicode61`` (case and diacritics folded). The web-search syntax
is translated to an FTS5 query here, every term quoted, so no input is FTS5 syntax.

Scope and order: the ownership rule (staff: every session; others: ``sessions.owner_id``)
and the filters are conditions of the same statement, so nothing out of scope is ever
matched, counted or ranked. Hits are turns, newest session first, then in turn order, and a
page is a keyset range of that order. ``relevance`` ranks a bounded set of candidates (the
newest ``RELEVANCE_CANDIDATES`` hits), so no query ranks every match of a common word.
Snippets are made for the page's rows only.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    cast,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.orm import aliased

from transcripts.db.engine import Database
from transcripts.db.tables import Character, Session, Turn
from transcripts.domain import Caller, SearchHit, SearchPage, SearchPosition, SearchQuery

__all__ = [
    "RELEVANCE_CANDIDATES",
    "SEARCH_CONFIG_PATTERN",
    "TranscriptSearch",
    "fts5_query",
    "rebuild_search_index",
]

RELEVANCE_CANDIDATES = 500
# A text-search configuration's name, optionally schema-qualified: it is written into DDL.
SEARCH_CONFIG_PATTERN = r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?"

_HEADLINE_OPTIONS = (
    'StartSel=<b>, StopSel=</b>, MaxWords=24, MinWords=8, MaxFragments=2, FragmentDelimiter=" … "'
)
_FTS = table("turns_fts", column("rowid"))
_TERM = re.compile(r'(-?)"([^"]*)"|(\S+)')
_WORD = re.compile(r"\w+")


def fts5_query(query: str) -> str:
    """``websearch_to_tsquery``'s syntax as an FTS5 query: words and "phrases" all required,
    ``or`` between two terms for either, a leading ``-`` for a term that must be absent.
    Every term becomes a quoted FTS5 string of its words, so nothing typed is FTS5 syntax.
    Empty when the text has no word at all."""
    positive: list[str] = []
    negative: list[str] = []
    pending_or = False
    for match in _TERM.finditer(query):
        minus, phrase, bare = match.groups()
        if bare is not None and bare.lower() == "or" and positive:
            pending_or = True
            continue
        if bare is not None and bare.startswith("-"):
            minus, bare = "-", bare[1:]
        words = _WORD.findall(phrase if phrase is not None else bare)
        if not words:
            continue
        term = '"' + " ".join(words) + '"'
        if minus:
            negative.append(term)
        elif pending_or:
            positive[-1] = f"({positive[-1]} OR {term})"
        else:
            positive.append(term)
        pending_or = False
    if not positive:
        return ""
    found = " AND ".join(positive)
    for term in negative:
        found = f"({found}) NOT {term}"
    return found


def _conditions(caller: Caller, query: SearchQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Session.transcripts_enabled.is_(True)]
    if not caller.is_staff:
        conditions.append(Session.owner_id == caller.user_id)
    if query.character_slug is not None:
        conditions.append(
            Session.character_id
            == select(Character.id)
            .where(Character.slug == query.character_slug)
            .correlate(None)
            .scalar_subquery()
        )
    if query.role is not None:
        conditions.append(Turn.role == query.role)
    if query.start is not None:
        conditions.append(Session.created_at >= query.start)
    if query.end is not None:
        conditions.append(Session.created_at <= query.end)
    return conditions


def _after(position: SearchPosition) -> ColumnElement[bool]:
    """Hits after ``position``: older sessions, or later turns of the same session."""
    return or_(
        Session.created_at < position.created_at,
        and_(Session.created_at == position.created_at, Session.id < position.id),
        and_(Session.id == position.id, Turn.turn_index > position.turn_index),
    )


_NEWEST_FIRST = (Session.created_at.desc(), Session.id.desc(), Turn.turn_index)

# For this transaction only, one round trip:
# - custom plans: the right plan depends on the words (a rare phrase is a GIN bitmap scan, a
#   common word a walk of the caller's newest sessions), and a prepared statement's generic
#   plan, settled after a few executions with other words, cannot know which (measured at
#   1M sessions: a rare phrase on a common word's plan ran past the 10 s statement timeout);
# - no parallel workers: a page needs a few dozen rows, and starting workers cost more than
#   the whole serial scan (at 1M sessions, one word: ~20 ms with two workers, ~1 ms without).
_POSTGRES_SETTINGS = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)


class TranscriptSearch:
    def __init__(self, database: Database, config: str) -> None:
        if not re.fullmatch(SEARCH_CONFIG_PATTERN, config):
            raise ValueError(f"not a text-search configuration name: {config!r}")
        self._database = database
        self._config = config

    async def search(self, caller: Caller, query: SearchQuery) -> SearchPage:
        if self._database.backend == "postgresql":
            statement = self._postgres(caller, query)
        else:
            statement = self._sqlite(caller, query)
        async with self._database.session() as session:
            if self._database.backend == "postgresql":
                await session.execute(_POSTGRES_SETTINGS)
            rows = (await session.execute(statement)).mappings().all()
        hits = [
            SearchHit(
                session_id=str(row["session_id"]),
                session_pk=row["session_pk"],
                character_slug=row["character_slug"],
                turn_index=row["turn_index"],
                role=row["role"],
                ts=row["ts"],
                snippet=row["snippet"],
                created_at=row["created_at"],
            )
            for row in rows[: query.size]
        ]
        return SearchPage(hits, _next_position(query, hits) if len(rows) > query.size else None)

    # --- PostgreSQL ---------------------------------------------------------------------

    def _tsquery(self, query: SearchQuery) -> ColumnElement[Any]:
        return func.websearch_to_tsquery(cast(literal(self._config), REGCONFIG), query.text)

    def _postgres(self, caller: Caller, query: SearchQuery) -> Select[Any]:
        tsquery = self._tsquery(query)
        vector: ColumnElement[Any] = literal_column("turns.search_vector")
        matched = select(Turn.session_pk, Turn.turn_index, Session.created_at, Session.id).join(
            Session, Session.id == Turn.session_pk
        )
        matched = matched.where(vector.op("@@")(tsquery), *_conditions(caller, query))
        if query.sort == "relevance":
            candidates = matched.add_columns(func.ts_rank(vector, tsquery).label("rank")).order_by(
                *_NEWEST_FIRST
            )
            hit = candidates.limit(RELEVANCE_CANDIDATES).subquery("candidate")
            order: list[Any] = [
                hit.c.rank.desc(),
                hit.c.created_at.desc(),
                hit.c.id.desc(),
                hit.c.turn_index,
            ]
            offset = query.after.offset if query.after else 0
            page = select(hit).order_by(*order).offset(offset).limit(query.size + 1).subquery("hit")
        else:
            if query.after is not None:
                matched = matched.where(_after(query.after))
            page = matched.order_by(*_NEWEST_FIRST).limit(query.size + 1).subquery("hit")
            order = [page.c.created_at.desc(), page.c.id.desc(), page.c.turn_index]
        turn, session = aliased(Turn), aliased(Session)
        snippet = func.ts_headline(
            cast(literal(self._config), REGCONFIG), turn.text, tsquery, _HEADLINE_OPTIONS
        )
        if query.sort == "relevance":
            order = [page.c.rank.desc(), page.c.created_at.desc(), page.c.id.desc()]
            order.append(page.c.turn_index)
        return (
            select(
                session.session_id.label("session_id"),
                session.id.label("session_pk"),
                Character.slug.label("character_slug"),
                turn.turn_index.label("turn_index"),
                turn.role.label("role"),
                turn.ts.label("ts"),
                snippet.label("snippet"),
                session.created_at.label("created_at"),
            )
            .select_from(page)
            .join(
                turn,
                and_(turn.session_pk == page.c.session_pk, turn.turn_index == page.c.turn_index),
            )
            .join(session, session.id == page.c.session_pk)
            .join(Character, Character.id == session.character_id)
            .order_by(*order)
        )

    # --- SQLite -------------------------------------------------------------------------

    def _sqlite(self, caller: Caller, query: SearchQuery) -> Select[Any]:
        match = text("turns_fts MATCH :fts_query").bindparams(fts_query=fts5_query(query.text))
        snippet = func.snippet(literal_column("turns_fts"), 0, "<b>", "</b>", "…", 24)
        matched = (
            select(
                Session.session_id.label("session_id"),
                Session.id.label("session_pk"),
                Character.slug.label("character_slug"),
                Turn.turn_index.label("turn_index"),
                Turn.role.label("role"),
                Turn.ts.label("ts"),
                snippet.label("snippet"),
                Session.created_at.label("created_at"),
            )
            .select_from(_FTS)
            .join(Turn.__table__, literal_column("turns.rowid") == _FTS.c.rowid)
            .join(Session, Session.id == Turn.session_pk)
            .join(Character, Character.id == Session.character_id)
            .where(match, *_conditions(caller, query))
        )
        if query.sort == "relevance":
            hit = (
                matched.add_columns(func.bm25(literal_column("turns_fts")).label("rank"))
                .order_by(*_NEWEST_FIRST)
                .limit(RELEVANCE_CANDIDATES)
                .subquery("candidate")
            )
            offset = query.after.offset if query.after else 0
            # bm25: the lower, the better.
            columns = [c for c in hit.c if c.name != "rank"]
            return (
                select(*columns)
                .order_by(hit.c.rank, hit.c.created_at.desc(), hit.c.session_pk.desc())
                .offset(offset)
                .limit(query.size + 1)
            )
        if query.after is not None:
            matched = matched.where(_after(query.after))
        return matched.order_by(*_NEWEST_FIRST).limit(query.size + 1)


def _next_position(query: SearchQuery, hits: list[SearchHit]) -> SearchPosition:
    if query.sort == "relevance":
        return SearchPosition(offset=(query.after.offset if query.after else 0) + len(hits))
    last = hits[-1]
    return SearchPosition(last.created_at, last.session_pk, last.turn_index)


async def rebuild_search_index(database: Database, config: str) -> str:
    """Build the search index afresh: on PostgreSQL the generated column and its index with
    ``config`` (after a change of TRANSCRIPTS_SEARCH_CONFIG); on SQLite the FTS5 index from
    the turns. Returns what was done, for the command line."""
    if not re.fullmatch(SEARCH_CONFIG_PATTERN, config):
        raise ValueError(f"not a text-search configuration name: {config!r}")
    async with database.sessionmaker.begin() as session:
        if database.backend == "postgresql":
            # Fails here, before anything is dropped, for a configuration that does not exist.
            await session.execute(text("SELECT CAST(:config AS regconfig)"), {"config": config})
            for statement in postgres_search_ddl(config, replace=True):
                await session.execute(text(statement))
            return f"rebuilt turns.search_vector with the text-search configuration {config}"
        await session.execute(text("INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')"))
        # SQLite's tokenizer is fixed in the table's definition; the setting is PostgreSQL's.
        return "rebuilt the FTS5 index turns_fts from the turns"


def postgres_search_ddl(config: str, *, replace: bool = False) -> list[str]:
    """The generated column and its GIN index (the migration writes the same)."""
    statements = ["ALTER TABLE turns DROP COLUMN IF EXISTS search_vector"] if replace else []
    return [
        *statements,
        "ALTER TABLE turns ADD COLUMN search_vector tsvector GENERATED ALWAYS AS"
        f" (to_tsvector('{config}'::regconfig, text)) STORED",
        "CREATE INDEX ix_turns_search_vector ON turns USING gin (search_vector)",
    ]
