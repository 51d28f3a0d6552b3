"""The Alembic history, step by step on both databases: each change that alters stored data
backfills the rows already there from the previous head, and undoes. (That the history builds
what the models describe: test_cli.py runs `alembic check`.)"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError

from tests.migration_harness import columns, migrate, run

COUNTERS, UPLOAD_KEY = "5d0c1f7e2a91", "f67217efc85a"
NOW = "2026-11-30 10:00:00+00:00"


def _seed_before_counters(url: str) -> None:
    """Rows as the schema before the counters held them: two sessions, one with turns."""
    run(url, f"INSERT INTO tenants (id, slug, name, created_at) VALUES (1, 't', 'T', '{NOW}')")
    run(
        url,
        "INSERT INTO users (id, email, tenant_id, is_staff, is_active, created_at)"
        f" VALUES (1, 'a@b.c', 1, false, true, '{NOW}')",
    )
    run(
        url,
        "INSERT INTO characters (id, public_id, slug, name, tenant_id, created_by_id, is_active,"
        " transcripts_enabled, allowed_origins, created_at)"
        f" VALUES (1, :public_id, 'c', 'C', 1, 1, true, true, '[]', '{NOW}')",
        public_id=uuid.uuid4().hex if "sqlite" in url else str(uuid.uuid4()),
    )
    for pk in (1, 2):
        session_id = uuid.uuid4()
        run(
            url,
            "INSERT INTO sessions (id, session_id, tenant_id, character_id, room_name, metadata,"
            " transcripts_enabled, created_at, llm_input_tokens, llm_output_tokens,"
            " stt_audio_seconds, tts_characters, estimated_cost_micros, recording_status)"
            f" VALUES (:pk, :session_id, 1, 1, 'r', '{{}}', true, '{NOW}', 0, 0, 0, 0, 0, 'NONE')",
            pk=pk,
            session_id=session_id.hex if "sqlite" in url else str(session_id),
        )
    for index, text in enumerate(["Hello", "Crème brûlée"]):
        run(
            url,
            "INSERT INTO turns (session_pk, turn_index, role, text, ts, was_interrupted,"
            f" created_at) VALUES (1, :index, 'user', :text, 0, false, '{NOW}')",
            index=index,
            text=text,
        )


def test_session_counters_are_backfilled_and_undone(empty_database: str) -> None:
    url = empty_database
    migrate(url, "upgrade", "339659e893f2")
    _seed_before_counters(url)

    migrate(url, "upgrade", COUNTERS)
    # "Crème brûlée" is 12 characters and 15 bytes of UTF-8.
    assert run(url, "SELECT id, turn_count, text_bytes FROM sessions ORDER BY id") == [
        {"id": 1, "turn_count": 2, "text_bytes": 5 + 15},
        {"id": 2, "turn_count": 0, "text_bytes": 0},
    ]

    migrate(url, "downgrade", "339659e893f2")
    assert {"turn_count", "text_bytes"}.isdisjoint(columns(url))
    assert run(url, "SELECT count(*) AS turns FROM turns") == [{"turns": 2}]


SESSION_COLUMNS = "id, session_id, recording_url, recording_status, llm_input_tokens"


def test_upgrade_keeps_sessions_with_no_key_handed_out_and_downgrade_drops_it(
    empty_database: str,
) -> None:
    url = empty_database
    migrate(url, "upgrade", "5d0c1f7e2a91")
    now = "2026-11-21 10:00:00+00:00"
    run(url, f"INSERT INTO tenants (id, slug, name, created_at) VALUES (1, 't', 'T', '{now}')")
    run(
        url,
        "INSERT INTO users (id, email, tenant_id, is_staff, is_active, created_at)"
        f" VALUES (1, 'a@b.c', 1, false, true, '{now}')",
    )
    run(
        url,
        "INSERT INTO characters (id, public_id, slug, name, tenant_id, created_by_id, is_active,"
        " transcripts_enabled, allowed_origins, created_at)"
        f" VALUES (1, :public_id, 'bot', 'Bot', 1, 1, true, true, '[]', '{now}')",
        public_id=uuid.uuid4().hex if "sqlite" in url else str(uuid.uuid4()),
    )
    session_ids = [uuid.uuid4(), uuid.uuid4()]
    for pk, (session_id, recording) in enumerate(
        zip(session_ids, ["s3://calls/a.mp4", None], strict=True), start=1
    ):
        run(
            url,
            "INSERT INTO sessions (id, session_id, tenant_id, character_id, room_name, metadata,"
            " transcripts_enabled, created_at, llm_input_tokens, llm_output_tokens,"
            " stt_audio_seconds, tts_characters, estimated_cost_micros, recording_status,"
            " recording_url)"
            f" VALUES (:pk, :session_id, 1, 1, 'room', '{{}}', true, '{now}', :tokens, 0, 0, 0,"
            " 0, :status, :recording)",
            pk=pk,
            session_id=session_id.hex if "sqlite" in url else str(session_id),
            tokens=100 * pk,
            status="READY" if recording else "NONE",
            recording=recording,
        )
    before = run(url, f"SELECT {SESSION_COLUMNS} FROM sessions ORDER BY id")
    assert "recording_upload_url" not in columns(url)

    migrate(url, "upgrade", "f67217efc85a")
    assert "recording_upload_url" in columns(url)
    assert run(url, f"SELECT {SESSION_COLUMNS} FROM sessions ORDER BY id") == before
    assert run(url, "SELECT recording_upload_url FROM sessions ORDER BY id") == [
        {"recording_upload_url": None},
        {"recording_upload_url": None},
    ]
    run(url, "UPDATE sessions SET recording_upload_url = 's3://recordings/uploads/x' WHERE id = 2")

    migrate(url, "downgrade", "5d0c1f7e2a91")
    assert "recording_upload_url" not in columns(url)
    assert run(url, f"SELECT {SESSION_COLUMNS} FROM sessions ORDER BY id") == before


DASHBOARD = "cc37002fa595"


def test_dashboard_reads_backfill_owners_counts_and_rollups_and_undo(
    empty_database: str,
) -> None:
    url = empty_database
    migrate(url, "upgrade", UPLOAD_KEY)
    _seed_before_counters(url)
    # A second owner's character, and usage on the sessions, a day apart.
    run(
        url,
        "INSERT INTO users (id, email, tenant_id, is_staff, is_active, created_at)"
        f" VALUES (2, 'b@b.c', 1, false, true, '{NOW}')",
    )
    run(
        url,
        "INSERT INTO characters (id, public_id, slug, name, tenant_id, created_by_id, is_active,"
        " transcripts_enabled, allowed_origins, created_at)"
        f" VALUES (2, :public_id, 'd', 'D', 1, 2, true, true, '[]', '{NOW}')",
        public_id=uuid.uuid4().hex if "sqlite" in url else str(uuid.uuid4()),
    )
    run(url, "UPDATE sessions SET llm_input_tokens = 100, estimated_cost_micros = 7 WHERE id = 1")
    run(
        url,
        "UPDATE sessions SET character_id = 2, llm_input_tokens = 5, estimated_cost_micros = 3,"
        " created_at = '2026-12-01 23:59:59.999999+00:00' WHERE id = 2",
    )
    run(url, "UPDATE turns SET role = 'assistant', was_interrupted = true WHERE turn_index = 0")

    migrate(url, "upgrade", DASHBOARD)
    assert run(url, "SELECT id, owner_id, interruption_count FROM sessions ORDER BY id") == [
        {"id": 1, "owner_id": 1, "interruption_count": 1},
        {"id": 2, "owner_id": 2, "interruption_count": 0},
    ]
    rollups = run(
        url,
        "SELECT character_id, owner_id, sessions, llm_input_tokens, estimated_cost_micros"
        " FROM usage_by_character_day ORDER BY character_id",
    )
    assert rollups == [
        {
            "character_id": 1,
            "owner_id": 1,
            "sessions": 1,
            "llm_input_tokens": 100,
            "estimated_cost_micros": 7,
        },
        {
            "character_id": 2,
            "owner_id": 2,
            "sessions": 1,
            "llm_input_tokens": 5,
            "estimated_cost_micros": 3,
        },
    ]
    days = run(
        url,
        "SELECT CAST(day AS TEXT) AS day, sum(sessions) AS n FROM usage_by_day GROUP BY day ORDER BY day",
    )
    assert [(row["day"], int(row["n"])) for row in days] == [("2026-11-30", 1), ("2026-12-01", 1)]

    migrate(url, "downgrade", UPLOAD_KEY)
    assert {"owner_id", "interruption_count"}.isdisjoint(columns(url))
    assert run(url, "SELECT count(*) AS sessions FROM sessions") == [{"sessions": 2}]


DATA_RIGHTS = "9b3e4d5a1c20"


def test_data_rights_backfill_characters_with_no_retention_and_no_redaction_and_undo(
    empty_database: str,
) -> None:
    url = empty_database
    migrate(url, "upgrade", UPLOAD_KEY)
    _seed_before_counters(url)
    migrate(url, "upgrade", DASHBOARD)
    before = run(url, "SELECT id, slug, is_active, transcripts_enabled FROM characters")

    migrate(url, "upgrade", DATA_RIGHTS)
    assert run(url, "SELECT id, retention_days, pii_redaction FROM characters") == [
        {"id": 1, "retention_days": None, "pii_redaction": "none"}
    ]
    assert run(url, "SELECT id, slug, is_active, transcripts_enabled FROM characters") == before
    assert columns(url, "session_tombstones") == {"session_id", "owner_id", "deleted_at"}
    assert columns(url, "recording_deletions") == {
        "id",
        "recording_url",
        "session_id",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
    }
    # The constraints hold on both databases: no retention of 0 days, no unknown mode.
    for change in ("retention_days = 0", "pii_redaction = 'hash'"):
        with pytest.raises(sa.exc.IntegrityError, match=r"(?i)constraint"):
            run(url, f"UPDATE characters SET {change} WHERE id = 1")
    run(url, "UPDATE characters SET retention_days = 30, pii_redaction = 'store' WHERE id = 1")

    migrate(url, "downgrade", DASHBOARD)
    assert {"retention_days", "pii_redaction"}.isdisjoint(columns(url, "characters"))
    assert run(url, "SELECT id, slug, is_active, transcripts_enabled FROM characters") == before
    assert run(url, "SELECT count(*) AS sessions FROM sessions") == [{"sessions": 2}]


APPEND_SEQ = "a8e51c3d9b70"


def test_append_seq_numbers_stored_turns_in_turn_index_order_and_undoes(
    empty_database: str,
) -> None:
    url = empty_database
    migrate(url, "upgrade", UPLOAD_KEY)
    _seed_before_counters(url)
    migrate(url, "upgrade", DATA_RIGHTS)
    # Session 2 gets turns stored out of order (3 before 1) and with a gap (no 2).
    for index in (3, 0, 1):
        run(
            url,
            "INSERT INTO turns (session_pk, turn_index, role, text, ts, was_interrupted,"
            f" created_at) VALUES (2, :index, 'user', 'x', 0, false, '{NOW}')",
            index=index,
        )

    migrate(url, "upgrade", APPEND_SEQ)
    assert run(
        url, "SELECT session_pk, turn_index, append_seq FROM turns ORDER BY session_pk, turn_index"
    ) == [
        {"session_pk": 1, "turn_index": 0, "append_seq": 1},
        {"session_pk": 1, "turn_index": 1, "append_seq": 2},
        {"session_pk": 2, "turn_index": 0, "append_seq": 1},
        {"session_pk": 2, "turn_index": 1, "append_seq": 2},
        {"session_pk": 2, "turn_index": 3, "append_seq": 3},
    ]
    assert run(url, "SELECT id, last_append_seq FROM sessions ORDER BY id") == [
        {"id": 1, "last_append_seq": 2},
        {"id": 2, "last_append_seq": 3},
    ]

    migrate(url, "downgrade", DATA_RIGHTS)
    assert "last_append_seq" not in columns(url)
    assert "append_seq" not in columns(url, "turns")
    assert run(url, "SELECT count(*) AS turns FROM turns") == [{"turns": 5}]


SEARCH = "21142e4ba3a9"


def _matching(url: str, query: str) -> list[int]:
    """The turn_index of each stored turn the search index matches, by the index itself."""
    if "sqlite" in url:
        rows = run(
            url,
            "SELECT t.turn_index FROM turns_fts JOIN turns t ON t.rowid = turns_fts.rowid"
            " WHERE turns_fts MATCH :q ORDER BY t.session_pk, t.turn_index",
            q=query,
        )
    else:
        rows = run(
            url,
            "SELECT turn_index FROM turns WHERE search_vector @@ websearch_to_tsquery("
            "'english', :q) ORDER BY session_pk, turn_index",
            q=query,
        )
    return [row["turn_index"] for row in rows]


def test_search_index_is_built_from_the_stored_turns_kept_and_undone(
    empty_database: str,
) -> None:
    url = empty_database
    migrate(url, "upgrade", UPLOAD_KEY)
    _seed_before_counters(url)
    run(url, "UPDATE turns SET text = 'We booked a table' WHERE turn_index = 0")
    migrate(url, "upgrade", APPEND_SEQ)

    migrate(url, "upgrade", SEARCH)
    # The backfill: a turn stored before the index exists is found, by its stem.
    assert _matching(url, "booking") == [0]
    assert _matching(url, "brulee" if "sqlite" in url else "brûlée") == [1]
    # Kept from then on: an insert, an update and a delete.
    run(
        url,
        "INSERT INTO turns (session_pk, turn_index, role, text, ts, was_interrupted,"
        f" created_at) VALUES (2, 0, 'user', 'Bookings open', 0, false, '{NOW}')",
    )
    assert _matching(url, "booking") == [0, 0]
    run(url, "UPDATE turns SET text = 'Nothing here' WHERE session_pk = 1 AND turn_index = 0")
    assert _matching(url, "booking") == [0]
    run(url, "DELETE FROM turns WHERE session_pk = 2")
    assert _matching(url, "booking") == []

    migrate(url, "downgrade", APPEND_SEQ)
    if "sqlite" in url:
        assert run(url, "SELECT name FROM sqlite_master WHERE name LIKE 'turns_fts%'") == []
    else:
        assert "search_vector" not in columns(url, "turns")
    assert run(url, "SELECT count(*) AS turns FROM turns") == [{"turns": 2}]


LABEL_SEARCH = "c6ac8e569eb1"


def _indexes(url: str, table: str) -> dict[str, str]:
    """The table's indexes as the database defines them (PostgreSQL: pg_get_indexdef)."""
    if "sqlite" in url:
        rows = run(
            url,
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :table",
            table=table,
        )
        return {row["name"]: row["sql"] for row in rows}
    rows = run(url, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t", t=table)
    return {row["indexname"]: row["indexdef"] for row in rows}


MEASURES = (
    "sessions, llm_input_tokens, llm_output_tokens, stt_audio_seconds, tts_characters,"
    " estimated_cost_micros"
)


def test_label_search_index_covers_owner_and_character_and_rollups_cover_measures(
    empty_database: str,
) -> None:
    url = empty_database
    migrate(url, "upgrade", UPLOAD_KEY)
    _seed_before_counters(url)
    migrate(url, "upgrade", SEARCH)
    sessions, rollups = _indexes(url, "sessions"), _indexes(url, "usage_by_character_day")
    rows = run(url, "SELECT id, owner_id, client_label FROM sessions ORDER BY id")

    migrate(url, "upgrade", LABEL_SEARCH)
    if "sqlite" in url:
        # Nothing to do on SQLite: it matches labels plainly and has no INCLUDE.
        assert _indexes(url, "sessions") == sessions
        assert _indexes(url, "usage_by_character_day") == rollups
    else:
        assert run(url, "SELECT extname FROM pg_extension WHERE extname = 'btree_gin'") == [
            {"extname": "btree_gin"}
        ]
        upgraded = _indexes(url, "sessions")
        assert "ix_sessions_client_label_trgm" not in upgraded
        assert upgraded["ix_sessions_owner_id_character_id_client_label_trgm"] == (
            "CREATE INDEX ix_sessions_owner_id_character_id_client_label_trgm ON public.sessions"
            " USING gin (owner_id, character_id, client_label gin_trgm_ops)"
        )
        assert {
            name: definition
            for name, definition in _indexes(url, "usage_by_character_day").items()
            if not name.startswith("pk_")
        } == {
            f"ix_usage_by_character_day_{scope}_day": (
                f"CREATE INDEX ix_usage_by_character_day_{scope}_day"
                f" ON public.usage_by_character_day USING btree ({scope}, day)"
                f" INCLUDE ({MEASURES})"
            )
            for scope in ("owner_id", "tenant_id")
        }
    assert run(url, "SELECT id, owner_id, client_label FROM sessions ORDER BY id") == rows

    migrate(url, "downgrade", SEARCH)
    assert _indexes(url, "sessions") == sessions
    assert _indexes(url, "usage_by_character_day") == rollups
    assert run(url, "SELECT id, owner_id, client_label FROM sessions ORDER BY id") == rows


WEBHOOKS = "c9e4a4236bc8"


def test_webhooks_tables_come_with_existing_sessions_and_go(empty_database: str) -> None:
    """New tables only: the sessions already there stay as they were, and an event of one
    can be queued right after the upgrade; the downgrade drops the tables alone."""
    url = empty_database
    migrate(url, "upgrade", UPLOAD_KEY)
    _seed_before_counters(url)
    migrate(url, "upgrade", LABEL_SEARCH)
    before = run(url, "SELECT id, owner_id, turn_count FROM sessions ORDER BY id")

    migrate(url, "upgrade", WEBHOOKS)
    assert run(url, "SELECT id, owner_id, turn_count FROM sessions ORDER BY id") == before
    assert {"owner_id", "url", "events", "secret", "is_active", "failing_since"} <= columns(
        url, "webhook_endpoints"
    )
    run(
        url,
        "INSERT INTO webhook_endpoints (id, owner_id, url, events, secret, is_active, created_at)"
        f" VALUES (1, 1, 'https://h.example/x', '[\"session.finalized\"]', 'whsec_x', true,"
        f" '{NOW}')",
    )
    run(
        url,
        "INSERT INTO webhook_events (id, type, payload, created_at)"
        f" VALUES ('msg_1', 'session.finalized', '{{}}', '{NOW}')",
    )
    run(
        url,
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts,"
        " next_attempt_at, attempt_log, created_at)"
        f" VALUES ('msg_1', 1, 'pending', 0, '{NOW}', '[]', '{NOW}')",
    )
    assert run(url, "SELECT status FROM webhook_deliveries") == [{"status": "pending"}]

    migrate(url, "downgrade", LABEL_SEARCH)
    for table in ("webhook_deliveries", "webhook_events", "webhook_endpoints"):
        with pytest.raises(NoSuchTableError):
            columns(url, table)
    assert run(url, "SELECT id, owner_id, turn_count FROM sessions ORDER BY id") == before


WEBHOOK_BODIES = "e2b7c41d9f06"


def _event(url: str, event_id: str, payload: str | None) -> None:
    run(
        url,
        "INSERT INTO webhook_events (id, type, payload, created_at)"
        f" VALUES (:id, 'session.finalized', :payload, '{NOW}')",
        id=event_id,
        payload=payload,
    )


def test_webhook_bodies_may_wait_for_the_deliverer_and_a_downgrade_waits_for_them(
    empty_database: str,
) -> None:
    """Events already stored keep their bodies; after the upgrade an event may be stored
    without one. The downgrade refuses while such an event waits (the schema before cannot
    render it), and goes through once every event has its body."""
    url = empty_database
    migrate(url, "upgrade", WEBHOOKS)
    _event(url, "msg_stored", '{"type":"session.finalized"}')

    migrate(url, "upgrade", WEBHOOK_BODIES)
    _event(url, "msg_waiting", None)
    assert run(url, "SELECT id, payload FROM webhook_events ORDER BY id") == [
        {"id": "msg_stored", "payload": '{"type":"session.finalized"}'},
        {"id": "msg_waiting", "payload": None},
    ]

    with pytest.raises(RuntimeError, match=r"^1 webhook event\(s\) have no body yet"):
        migrate(url, "downgrade", WEBHOOKS)
    assert len(run(url, "SELECT id FROM webhook_events")) == 2

    run(url, "UPDATE webhook_events SET payload = '{}' WHERE id = 'msg_waiting'")
    migrate(url, "downgrade", WEBHOOKS)
    with pytest.raises(sa.exc.IntegrityError):
        _event(url, "msg_empty", None)
    assert len(run(url, "SELECT id FROM webhook_events")) == 2
