"""The documented limits: each one in the README, and the header limits in each dialect's
body, in-process and through a real uvicorn process. (Bodies, batches, texts and page sizes
are pinned beside their routes: test_turns.py, test_finalize.py, test_anam.py, test_session_history.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import TEST_JWT_SECRET, migrate
from tests.factories import Factory
from tests.servers import Server, transcripts_process
from transcripts.limits import (
    MAX_BODY_BYTES,
    MAX_CREDENTIAL_BYTES,
    MAX_HEAD_BYTES,
    MAX_HEADER_BYTES,
    MAX_PAGE,
    MAX_PAGE_SIZE,
    MAX_PER_PAGE,
)

ROOT = Path(__file__).resolve().parents[1]
READS = {"anam": "/v1/sessions/{}/transcript", "agents": "/api/agents/agent-session/{}/transcript/"}
TURNS = "/api/agents/agent-session/{}/turns/"


def too_large(dialect: str, message: str) -> dict[str, object]:
    if dialect == "anam":
        return {
            "statusCode": 431,
            "error": "Request Header Fields Too Large",
            "message": message.removesuffix("."),
        }
    return {"success": False, "message": message, "data": None, "errors": {"detail": [message]}}


def test_every_limit_is_in_the_readme() -> None:
    section = (ROOT / "README.md").read_text().split("### Limits", 1)[1].split("\n## ", 1)[0]
    schemas = yaml.safe_load((ROOT / "openapi" / "agents.yaml").read_text())["components"][
        "schemas"
    ]
    limits = {
        "request body": (MAX_BODY_BYTES, 413),
        "turns per batch": (schemas["TurnBatch"]["maxItems"], 400),
        "`text` of a turn": (schemas["TurnInput"]["properties"]["text"]["maxLength"], 400),
        "`page_size`": (MAX_PAGE_SIZE, 400),
        "`perPage`": (MAX_PER_PAGE, 400),
        "`page`": (MAX_PAGE, 400),
        "header block": (MAX_HEADER_BYTES, 431),
        "credential": (MAX_CREDENTIAL_BYTES, 431),
    }
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for what, (number, status) in limits.items():
        row = next((row for row in rows if what in row), None)
        assert row is not None, f"README's Limits table has no row for the {what}"
        assert f"{number:,}" in row, f"README gives the {what} limit other than {number:,}"
        assert f"| {status}" in row, f"README gives the {what} limit another status than {status}"


def padded(base: dict[str, str], client: httpx.AsyncClient, url: str, total: int) -> dict[str, str]:
    """``base`` plus an X-Pad header that brings the request's header bytes to ``total``."""
    request = client.build_request("GET", url, headers={**base, "X-Pad": ""})
    used = sum(len(name) + len(value) for name, value in request.headers.raw)
    return {**base, "X-Pad": "p" * (total - used)}


@pytest.mark.parametrize("dialect", ["anam", "agents"])
async def test_header_block_over_its_limit_is_431(
    client: httpx.AsyncClient, factory: Factory, dialect: str
) -> None:
    owner = await factory.user()
    session = await factory.session(await factory.character(owner))
    _, key = await factory.api_key(owner)
    url = READS[dialect].format(session.session_id)

    at_limit = await client.get(
        url, headers=padded({"X-API-Key": key}, client, url, MAX_HEADER_BYTES)
    )
    over = await client.get(
        url, headers=padded({"X-API-Key": key}, client, url, MAX_HEADER_BYTES + 1)
    )

    assert at_limit.status_code == 200
    assert over.status_code == 431
    assert over.json() == too_large(
        dialect, f"The request headers exceed {MAX_HEADER_BYTES} bytes in all."
    )
    assert "www-authenticate" not in over.headers


@pytest.mark.parametrize("dialect", ["anam", "agents"])
@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
async def test_a_credential_over_its_limit_is_431_on_reads_and_writes(
    client: httpx.AsyncClient, dialect: str, header: str
) -> None:
    prefix = "Bearer " if header == "Authorization" else ""
    oversized = prefix + "a" * (MAX_CREDENTIAL_BYTES + 1 - len(prefix))
    at_limit = prefix + "a" * (MAX_CREDENTIAL_BYTES - len(prefix))
    urls = [READS[dialect].format(uuid.uuid4())]
    if dialect == "agents":
        urls.append(TURNS.format(uuid.uuid4()))
    for url in urls:
        method = "POST" if url.endswith("/turns/") else "GET"
        refused = await client.request(method, url, headers={header: oversized}, json=[])
        assert refused.status_code == 431, url
        assert refused.json() == too_large(
            dialect, f"The {header} header exceeds {MAX_CREDENTIAL_BYTES} bytes."
        )
        # One byte less is only a bad credential.
        answered = await client.request(method, url, headers={header: at_limit}, json=[])
        assert answered.status_code == 401, url


@pytest.fixture(scope="module")
def live_server(sqlite_url: str) -> Iterator[Server]:
    env = {
        "TRANSCRIPTS_DATABASE_URL": migrate(sqlite_url),
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
    }
    with transcripts_process("serve", env=env) as server:
        yield server


@pytest.mark.parametrize("dialect", ["anam", "agents"])
def test_header_limits_hold_through_uvicorn(live_server: Server, dialect: str) -> None:
    url = live_server.base_url + READS[dialect].format(uuid.uuid4())
    with httpx.Client(timeout=10) as http:
        response = http.get(url, headers={"X-Pad": "p" * (MAX_HEADER_BYTES + 1)})
        assert response.status_code == 431
        assert response.json() == too_large(
            dialect, f"The request headers exceed {MAX_HEADER_BYTES} bytes in all."
        )
        # Past the server's own cap on the head, the server answers before the app, in the
        # same body (tests/test_server.py).
        response = http.get(url, headers={"X-Pad": "p" * 1024 * 1024})
        assert response.status_code == 431
        assert response.json() == too_large(
            dialect, f"The request head exceeds {MAX_HEAD_BYTES} bytes."
        )
        token = http.get(url, headers={"Authorization": "Bearer " + "a" * MAX_CREDENTIAL_BYTES})
        assert token.status_code == 431
        assert token.json() == too_large(
            dialect, f"The Authorization header exceeds {MAX_CREDENTIAL_BYTES} bytes."
        )
        assert http.get(url, headers={"X-Pad": "p" * 4000}).status_code == 401
