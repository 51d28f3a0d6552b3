"""The command line, run as a user runs it: a real process, on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from tests.conftest import TEST_JWT_SECRET
from tests.factories import Factory, turns
from tests.servers import free_port

TRANSCRIPTS = str(Path(sys.executable).with_name("transcripts"))


def run(database_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TRANSCRIPTS_DATABASE_URL": database_url,
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
    }
    result = subprocess.run(
        [TRANSCRIPTS, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


async def run_async(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    # A thread keeps the event loop turning, so the app's own writes never hold SQLite's
    # lock while the CLI waits for it.
    return await asyncio.to_thread(run, database_url, *args)


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
    created = await run_async(
        database_url, "users", "create", "--email", email, "--tenant", tenant, "--json"
    )
    user = json.loads(created.stdout)  # exactly one JSON document
    assert user == {
        "id": user["id"],
        "email": email,
        "tenant_id": tenant,
        "is_staff": False,
        "is_active": True,
    }

    created_key = await run_async(
        database_url, "api-keys", "create", "--user", str(user["id"]), "--name", "ci", "--json"
    )
    issued = json.loads(created_key.stdout)
    assert issued["key"].startswith("sk_")
    assert len(issued["key"]) == 67
    assert issued["key_preview"] == f"{issued['key'][:5]}...{issued['key'][-4:]}"
    assert (issued["user"], issued["name"], issued["is_active"]) == (user["id"], "ci", True)

    minted = await run_async(
        database_url, "tokens", "mint", "--user", str(user["id"]), "--ttl", "120"
    )
    token = minted.stdout.strip()
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

    revoked = await run_async(database_url, "api-keys", "revoke", str(issued["id"]))
    assert revoked.stdout.strip() == f"API key {issued['id']} revoked"
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


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, private: bool = False) -> str:
    if private:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


NOT_A_PUBLIC_KEY = (
    "TRANSCRIPTS_JWT_PUBLIC_KEY is not a PEM public key"
    " (-----BEGIN PUBLIC KEY----- ...; not a private key, nor a certificate)"
)
WRONG_KIND_OF_KEY = (
    "TRANSCRIPTS_JWT_PUBLIC_KEY must be an RSA key of at least 2048 bits (RS256)"
    " or a P-256 EC key (ES256)"
)
LIVEKIT = {
    "TRANSCRIPTS_LIVEKIT_URL": "wss://voice.example.livekit.cloud",
    "TRANSCRIPTS_LIVEKIT_API_KEY": "APIdevkey",
}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"TRANSCRIPTS_JWT_PUBLIC_KEY": "ssh-rsa AAAAB3NzaC1yc2E secret-ish"}, NOT_A_PUBLIC_KEY),
        (
            {
                "TRANSCRIPTS_JWT_PUBLIC_KEY": _pem(
                    ec.generate_private_key(ec.SECP256R1()), private=True
                )
            },
            NOT_A_PUBLIC_KEY,
        ),
        (
            {"TRANSCRIPTS_JWT_PUBLIC_KEY": _pem(rsa.generate_private_key(65537, 1024))},  # noqa: S505 (refused)
            WRONG_KIND_OF_KEY,
        ),
        (
            {"TRANSCRIPTS_JWT_PUBLIC_KEY": _pem(ec.generate_private_key(ec.SECP384R1()))},
            WRONG_KIND_OF_KEY,
        ),
        (
            {"TRANSCRIPTS_RECORDINGS_SIGNING_KEY": "sign-links-0123456789"},
            "TRANSCRIPTS_RECORDINGS_SIGNING_KEY must be at least 32 bytes long"
            " (e.g. the output of: openssl rand -base64 48)",
        ),
        (
            {"TRANSCRIPTS_RECORDINGS_SIGNING_KEY": "changeme-" + "0123456789" * 4},
            "TRANSCRIPTS_RECORDINGS_SIGNING_KEY is a placeholder value; set a random secret",
        ),
        (
            {**LIVEKIT, "TRANSCRIPTS_LIVEKIT_API_SECRET": "lk-secret-0123456789"},
            "TRANSCRIPTS_LIVEKIT_API_SECRET must be at least 32 bytes long"
            " (e.g. the output of: openssl rand -base64 48)",
        ),
    ],
    ids=[
        "not PEM",
        "a private key",
        "RSA 1024",
        "EC P-384",
        "short signing key",
        "placeholder signing key",
        "short LiveKit secret",
    ],
)
def test_keys_and_secrets_are_checked_at_start_in_one_sentence(
    variables: dict[str, str], message: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "TRANSCRIPTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        **variables,
    }
    result = subprocess.run(
        [TRANSCRIPTS, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"transcripts: configuration error: {message}\n"
    for value in variables.values():
        for line in value.splitlines():
            if len(line) > 8 and "-----" not in line:
                assert line not in result.stderr


async def test_a_user_created_without_a_tenant_gets_one_and_can_create_a_character(
    database_url: str, client: httpx.AsyncClient
) -> None:
    email = f"solo.{uuid.uuid4().hex[:6]}@example.com"
    user = json.loads(
        (await run_async(database_url, "users", "create", "--email", email, "--json")).stdout
    )
    assert re.fullmatch(r"solo-[0-9a-f]{6}-[0-9a-f]{6}", user["tenant_id"]), user["tenant_id"]
    key = json.loads(
        (
            await run_async(database_url, "api-keys", "create", "--user", str(user["id"]), "--json")
        ).stdout
    )["key"]
    created = await client.post(
        "/api/ai-characters/",
        json={"slug": f"solo-{uuid.uuid4().hex[:8]}", "name": "Solo"},
        headers={"X-API-Key": key},
    )
    assert created.status_code == 201, created.text
