"""The command line, run as a user runs it: a real process, on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi import FastAPI

from tests.conftest import TEST_JWT_SECRET
from tests.factories import Factory, turns

TRANSCRIPTS = str(Path(sys.executable).with_name("transcripts"))


def run(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TRANSCRIPTS_DATABASE_URL": database_url,
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
    }
    return subprocess.run(
        [TRANSCRIPTS, *args], env=env, capture_output=True, text=True, timeout=60, check=check
    )


def test_migrate_is_idempotent(database_url: str) -> None:
    result = run(database_url, "migrate")
    assert "latest revision" in result.stdout
    assert "password" not in result.stdout


def test_alembic_check_finds_no_drift(database_url: str, project_root: Path) -> None:
    env = {**os.environ, "TRANSCRIPTS_DATABASE_URL": database_url}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("alembic")), "check"],
        cwd=project_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


async def test_users_keys_and_tokens_from_the_command_line(
    database_url: str, client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    created = run(database_url, "users", "create", "--email", email, "--tenant", tenant, "--json")
    user = json.loads(created.stdout)  # exactly one JSON document
    assert user == {
        "id": user["id"],
        "email": email,
        "tenant_id": tenant,
        "is_staff": False,
        "is_active": True,
    }

    issued = json.loads(
        run(
            database_url, "api-keys", "create", "--user", str(user["id"]), "--name", "ci", "--json"
        ).stdout
    )
    assert issued["key"].startswith("sk_")
    assert len(issued["key"]) == 67
    assert issued["key_preview"] == f"{issued['key'][:5]}...{issued['key'][-4:]}"
    assert (issued["user"], issued["name"], issued["is_active"]) == (user["id"], "ci", True)

    token = run(
        database_url, "tokens", "mint", "--user", str(user["id"]), "--ttl", "120"
    ).stdout.strip()
    claims = jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"])
    assert claims["user_id"] == user["id"]
    assert claims["token_type"] == "access"
    assert claims["exp"] - claims["iat"] == 120

    # The CLI's user owns a character and reads its session with the CLI's key and token.
    from transcripts.db.tables import User

    async with factory.database.sessionmaker() as db:
        owner = await db.get(User, user["id"])
    session = await factory.session(await factory.character(owner), turns=turns(("user", "hello")))
    path = f"/api/agents/agent-session/{session.session_id}/transcript/"
    assert (await client.get(path, headers={"X-API-Key": issued["key"]})).status_code == 200
    assert (await client.get(path, headers={"Authorization": f"Bearer {token}"})).status_code == 200

    # In a thread: the reads above left a last_used_at write in flight on this loop, holding
    # the key's row on PostgreSQL; a blocked loop would never let it commit.
    revoked = await asyncio.to_thread(run, database_url, "api-keys", "revoke", str(issued["id"]))
    assert revoked.returncode == 0
    assert (await client.get(path, headers={"X-API-Key": issued["key"]})).status_code == 401


def test_errors_are_one_line_on_stderr(database_url: str) -> None:
    result = run(database_url, "api-keys", "create", "--user", "999999999", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "transcripts: User not found."


@pytest.mark.parametrize("secret", ["changethis", "too-short"])
def test_refuses_a_weak_secret(secret: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TRANSCRIPTS_JWT_SECRET": secret,
        "TRANSCRIPTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
    }
    result = subprocess.run(
        [TRANSCRIPTS, "tokens", "mint", "--user", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "TRANSCRIPTS_JWT_SECRET" in result.stderr
    assert secret not in result.stderr
