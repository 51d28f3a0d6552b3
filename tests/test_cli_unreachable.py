"""The command line against a database it cannot reach: one sentence on stderr, exit code 1.

No traceback, and the URL is shown as SQLAlchemy renders it with the password hidden.
(``transcripts serve`` starts without the database by design: ``/readyz`` answers 503 until
it can be reached, see tests/test_outages.py.)
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.servers import TRANSCRIPTS, free_port

PASSWORD = "hunter2-never-printed"

COMMANDS = {
    "migrate": ["migrate"],
    "users create": ["users", "create", "--email", "dana@example.com"],
    "users create --json": ["users", "create", "--email", "dana@example.com", "--json"],
    "api-keys create": ["api-keys", "create", "--user", "1"],
    "api-keys revoke": ["api-keys", "revoke", "1"],
}


def run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRANSCRIPTS_")}
    return subprocess.run(
        [TRANSCRIPTS, *args],
        env={**env, "TRANSCRIPTS_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_refused_connection_is_one_sentence(command: str) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://transcripts:{PASSWORD}@127.0.0.1:{port}/transcripts"

    result = run(url, *COMMANDS[command])

    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "transcripts: cannot reach the database at"
        f" postgresql+asyncpg://transcripts:***@127.0.0.1:{port}/transcripts"
        " (connection refused)\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["migrate", "users create"])
def test_an_unknown_host_is_one_sentence(command: str) -> None:
    # .invalid never resolves (RFC 6761); the resolver says so at once.
    url = f"postgresql+asyncpg://transcripts:{PASSWORD}@db.example.invalid:5432/transcripts"

    result = run(url, *COMMANDS[command])

    assert result.returncode == 1, result.stderr
    prefix = (
        "transcripts: cannot reach the database at"
        " postgresql+asyncpg://transcripts:***@db.example.invalid:5432/transcripts ("
    )
    assert result.stderr.startswith(prefix), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize("command", ["migrate", "users create"])
def test_a_sqlite_file_that_cannot_be_opened_is_one_sentence(command: str) -> None:
    result = run("sqlite+aiosqlite:////nonexistent-directory/transcripts.db", *COMMANDS[command])

    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "transcripts: cannot open the database at"
        " sqlite+aiosqlite:////nonexistent-directory/transcripts.db (unable to open database file)\n"
    )
