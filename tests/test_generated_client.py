"""A client generated from openapi/service.json, used unchanged against a real uvicorn process."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import TEST_JWT_SECRET
from tests.factories import SEED_USAGE, Factory, turns
from tests.servers import Server, transcripts_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def generated_client(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """openapi-python-client's package for our document, generated in this run, not committed."""
    output = tmp_path_factory.mktemp("client") / "transcripts_client"
    bin_dir = str(Path(sys.executable).parent)
    subprocess.run(
        [
            str(Path(bin_dir) / "openapi-python-client"),
            "generate",
            "--path",
            str(ROOT / "openapi" / "service.json"),
            "--output-path",
            str(output),
            "--meta",
            "none",
        ],
        check=True,
        capture_output=True,
        timeout=180,
        # Its formatting hook looks for ruff on PATH.
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    sys.path.insert(0, str(output.parent))
    return importlib.import_module("transcripts_client")


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[Server]:
    env = {"TRANSCRIPTS_DATABASE_URL": database_url, "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET}
    with transcripts_process("serve", env=env) as server:
        yield server


async def test_generated_client_reads_both_dialects(
    generated_client: ModuleType, live_server: Server, factory: Factory
) -> None:
    api = importlib.import_module("transcripts_client.api.sessions.get_session_transcript")
    agents_api = importlib.import_module(
        "transcripts_client.api.agent_sessions.get_agent_session_transcript"
    )
    list_api = importlib.import_module("transcripts_client.api.sessions.list_sessions")
    client_module = importlib.import_module("transcripts_client.client")

    owner = await factory.user()
    character = await factory.character(owner, name="Cara")
    spoken = turns(("assistant", "Hello there"), ("user", "Hi!"), ("assistant", "How can I help?"))
    session = await factory.session(character, user_id=owner.id, turns=spoken, usage=SEED_USAGE)
    _, key = await factory.api_key(owner)
    token = factory.token(owner.id)

    def by_key() -> object:
        return client_module.AuthenticatedClient(base_url=live_server.base_url, token=key)

    def by_jwt() -> object:
        return client_module.AuthenticatedClient(base_url=live_server.base_url, token=token)

    def by_header() -> object:
        return client_module.Client(base_url=live_server.base_url, headers={"X-API-Key": key})

    texts = [turn.text for turn in spoken]
    for make_client in (by_key, by_jwt):
        async with make_client() as client:
            transcript = await api.asyncio(id=session.session_id, client=client)
            assert transcript.session_id == str(session.session_id)
            assert transcript.persona_name == "Cara"
            assert [message.message for message in transcript.messages] == texts
            assert [message.role.value for message in transcript.messages] == [
                "persona",
                "user",
                "persona",
            ]
            assert transcript.total_messages == 3
            listed = await list_api.asyncio(client=client, persona_id=character.public_id)
            assert [item.id for item in listed.data] == [session.session_id]

    for make_client in (by_header, by_jwt):
        async with make_client() as client:
            envelope = await agents_api.asyncio(session_id=session.session_id, client=client)
            assert envelope.success is True
            assert [item.text for item in envelope.data.transcript] == texts
            assert envelope.data.estimated_cost_usd == "0.009873"

    async with client_module.Client(base_url=live_server.base_url) as anonymous:
        detailed = await api.asyncio_detailed(id=session.session_id, client=anonymous)
        assert detailed.status_code == 401
        assert detailed.parsed.message == "Authentication credentials were not provided"
