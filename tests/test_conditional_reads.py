"""ETag and 304 for finalized transcripts: the reads of both dialects and every export."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.factories import Factory
from tests.servers import Server, transcripts_process
from tests.test_export_routes import MEDIA_TYPES, Seeded, credential_headers, seed

READS = {
    "agents": "/api/agents/agent-session/{}/transcript/",
    "billing": "/api/billing/sessions/{}/",
    "anam": "/v1/sessions/{}/transcript",
}
EXPORTS = {
    "agents": "/api/agents/agent-session/{}/transcript/{}/",
    "anam": "/v1/sessions/{}/transcript/{}",
}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("kind", ["key", "jwt"])
async def test_a_finalized_read_answers_304_to_its_etag(
    client: httpx.AsyncClient, factory: Factory, read: str, kind: str
) -> None:
    seeded = await seed(factory)
    path = READS[read].format(seeded.session_id)
    headers = credential_headers(seeded, kind)
    # No query and no condition: the hot path answers, with the tag.
    first = await client.get(path, headers=headers)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private"
    # Weak where the body carries a presigned link made afresh on every read.
    assert etag.startswith('W/"' if read != "anam" else '"')

    for condition in (etag, etag.removeprefix("W/"), f'"other", {etag}', "*"):
        again = await client.get(path, headers={**headers, "If-None-Match": condition})
        assert again.status_code == 304, condition
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "private"

    stale = await client.get(path, headers={**headers, "If-None-Match": '"stale"'})
    assert stale.status_code == 200
    assert stale.headers["etag"] == etag
    assert stale.json() == first.json()


async def test_the_tags_of_both_credential_kinds_and_of_every_read_agree(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    seeded = await seed(factory)
    tags = {}
    for read, path in READS.items():
        by_kind = {
            kind: (
                await client.get(
                    path.format(seeded.session_id), headers=credential_headers(seeded, kind)
                )
            ).headers["etag"]
            for kind in ("key", "jwt")
        }
        assert by_kind["key"] == by_kind["jwt"]
        tags[read] = by_kind["key"]
    # The two enveloped paths answer the same document; Anam's is another representation.
    assert tags["agents"] == tags["billing"]
    assert tags["anam"].strip('"') != tags["agents"].removeprefix("W/").strip('"')


@pytest.mark.parametrize("dialect", list(EXPORTS))
async def test_every_export_answers_304_and_variants_never_share_a_tag(
    client: httpx.AsyncClient, factory: Factory, dialect: str
) -> None:
    seeded = await seed(factory)
    headers = {"X-API-Key": seeded.key}
    tags: dict[tuple[str, bool], str] = {}
    for fmt in MEDIA_TYPES:
        for redacted in (False, True):
            params = {"redact": "pii"} if redacted else {}
            path = EXPORTS[dialect].format(seeded.session_id, fmt)
            full = await client.get(path, params=params, headers=headers)
            etag = full.headers["etag"]
            assert not etag.startswith("W/")
            tags[fmt, redacted] = etag
            # A download is the same bytes under another disposition: the same tag.
            download = await client.get(
                path,
                params={**params, "download": "1"},
                headers={**headers, "If-None-Match": etag},
            )
            assert download.status_code == 304
            assert download.content == b""
            assert download.headers["etag"] == etag
            # The tag of the other variant does not stand for this one.
            other = await client.get(
                path,
                params={} if redacted else {"redact": "pii"},
                headers={**headers, "If-None-Match": etag},
            )
            assert other.status_code == 200
            assert other.headers["etag"] != etag
    assert len(set(tags.values())) == len(tags)


@pytest.mark.parametrize("dialect", list(EXPORTS))
async def test_a_session_in_progress_has_no_tag_and_never_answers_304(
    client: httpx.AsyncClient, factory: Factory, dialect: str
) -> None:
    seeded = await seed(factory, finalized=False)
    headers = {"X-API-Key": seeded.key, "If-None-Match": "*"}
    paths = [READS[dialect].format(seeded.session_id)] + [
        EXPORTS[dialect].format(seeded.session_id, fmt) for fmt in MEDIA_TYPES
    ]
    for path in paths:
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, path
        assert "etag" not in response.headers
        assert "cache-control" not in response.headers
        assert response.content


async def test_finalizing_gives_the_read_a_tag(client: httpx.AsyncClient, factory: Factory) -> None:
    seeded = await seed(factory, finalized=False)
    path = READS["agents"].format(seeded.session_id)
    headers = {"X-API-Key": seeded.key}
    assert "etag" not in (await client.get(path, headers=headers)).headers
    finalized = await client.post(
        f"/api/agents/agent-session/{seeded.session_id}/finalize/", json={}, headers=headers
    )
    assert finalized.status_code == 200
    etag = (await client.get(path, headers=headers)).headers["etag"]
    assert (await client.get(path, headers={**headers, "If-None-Match": etag})).status_code == 304


@pytest.mark.parametrize("path", [READS["agents"], READS["anam"], EXPORTS["anam"]])
async def test_a_condition_on_another_owners_session_is_the_same_404(
    client: httpx.AsyncClient, factory: Factory, path: str
) -> None:
    seeded = await seed(factory)
    owner = await client.get(
        path.format(seeded.session_id, "vtt"), headers={"X-API-Key": seeded.key}
    )
    headers = {"X-API-Key": seeded.other_key, "If-None-Match": owner.headers["etag"]}
    not_owned = await client.get(path.format(seeded.session_id, "vtt"), headers=headers)
    missing = await client.get(path.format(uuid.uuid4(), "vtt"), headers=headers)
    assert not_owned.status_code == missing.status_code == 404
    assert not_owned.content == missing.content
    assert not_owned.headers == missing.headers


def serve(database_url: str) -> Iterator[Server]:
    env = {
        "TRANSCRIPTS_DATABASE_URL": database_url,
        "TRANSCRIPTS_ENVIRONMENT": "development",
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        "TRANSCRIPTS_DB_POOL_SIZE": "2",
    }
    with transcripts_process("serve", env=env, ready_path="/healthz") as server:
        yield server


def conditional_gets(server: Server, seeded: Seeded, tags: dict[str, str]) -> dict[str, str]:
    """Each read's and export's answer to the tags of a previous server (all of them 304),
    or, the first time, their tags."""
    found = {}
    paths = [path.format(seeded.session_id) for path in READS.values()] + [
        path.format(seeded.session_id, fmt) for path in EXPORTS.values() for fmt in ("vtt", "jsonl")
    ]
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": seeded.key}) as http:
        for path in paths:
            condition = {"If-None-Match": tags[path]} if tags else {}
            response = http.get(path, headers=condition)
            if tags:
                assert response.status_code == 304, path
                assert response.content == b""
                assert response.headers["etag"] == tags[path]
            else:
                assert response.status_code == 200
            found[path] = response.headers["etag"]
    return found


async def test_a_tag_still_answers_304_after_a_restart(factory: Factory, database_url: str) -> None:
    seeded = await seed(factory)
    first = serve(database_url)
    tags = conditional_gets(next(first), seeded, {})
    first.close()
    second = serve(database_url)
    assert conditional_gets(next(second), seeded, tags) == tags
    second.close()


@pytest.mark.parametrize("read", list(READS))
async def test_a_redacted_read_is_another_entity_with_its_own_tag(
    client: httpx.AsyncClient, factory: Factory, read: str
) -> None:
    seeded = await seed(factory)
    path = READS[read].format(seeded.session_id)
    headers = credential_headers(seeded, "key")
    plain = await client.get(path, headers=headers)
    redacted = await client.get(f"{path}?redact=pii", headers=headers)
    assert redacted.status_code == 200
    assert redacted.headers["cache-control"] == "private"
    assert redacted.headers["etag"] != plain.headers["etag"]
    # The plain read's tag never validates the redacted copy, nor the other way round.
    crossed = await client.get(
        f"{path}?redact=pii", headers={**headers, "If-None-Match": plain.headers["etag"]}
    )
    assert crossed.status_code == 200
    assert crossed.json() == redacted.json()
    back = await client.get(path, headers={**headers, "If-None-Match": redacted.headers["etag"]})
    assert back.status_code == 200
    again = await client.get(
        f"{path}?redact=pii", headers={**headers, "If-None-Match": redacted.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
