"""Shared fixtures. Every test that touches the database runs once on SQLite and once on
PostgreSQL (a fresh database per run, built by the real Alembic history).

Isolation comes from ownership, the service's own rule: each test creates its own tenant,
users and characters, and every read is scoped to its caller, so tests never see each
other's rows and nothing is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from tests.factories import Factory, Keys
from tests.spec_validation import validate_response_hook
from transcripts.app import create_app
from transcripts.migrate import upgrade_to_head
from transcripts.settings import Settings
from transcripts.state import app_state

# Signing must never reach for the EC2 metadata endpoint from a test machine.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# A developer's own configuration must not leak into the suite.
for _name in [name for name in os.environ if name.startswith("TRANSCRIPTS_")]:
    if not _name.startswith("TRANSCRIPTS_TEST_"):
        del os.environ[_name]

# The local recording store of every test app (tests that need their own pass their own).
TEST_RECORDINGS_DIR = tempfile.mkdtemp(prefix="transcripts-test-recordings-")
TEST_JWT_SECRET = "test-secret-" + "x" * 40
POSTGRES_ADMIN_URL = os.environ.get(
    "TRANSCRIPTS_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
pytest_plugins = ["tests.s3_servers", "tests.browser"]

T = TypeVar("T")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def run_elsewhere(coroutine_function: Callable[[], Coroutine[object, object, T]]) -> T:
    """Run a coroutine on a loop of its own, in a thread: session setup happens outside
    the test loop, and Alembic's env starts a loop of its own anyway."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine_function()).result()


async def _admin_execute(sql: str) -> None:
    admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL), timeout=5)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this run.

    `.ci/run` creates one and passes it in TRANSCRIPTS_TEST_POSTGRES_URL; otherwise one is
    created on the local server and dropped at the end. Under CI=true an unreachable
    server fails the run: the PostgreSQL half never silently skips there.
    """
    given = os.environ.get("TRANSCRIPTS_TEST_POSTGRES_URL")
    if given:
        yield _sqlalchemy_url(given)
        return
    name = f"transcripts_test_{uuid.uuid4().hex[:12]}"
    try:
        run_elsewhere(lambda: _admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield _sqlalchemy_url(f"{base}/{name}")
    finally:
        run_elsewhere(lambda: _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "transcripts.db"
    return f"sqlite+aiosqlite:///{path}"


def migrate(url: str) -> str:
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(upgrade_to_head, url).result()
    return url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    return migrate(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="session")
def migrated_postgresql_url(postgresql_url: str) -> str:
    """For the few tests that are about PostgreSQL itself (its processes, its locks)."""
    return migrate(postgresql_url)


@pytest.fixture(scope="session")
def keys() -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    return Keys(
        hs_secret=TEST_JWT_SECRET,
        rsa_private=rsa_key,
        rsa_public_pem=public_pem(rsa_key),
        ec_private=ec_key,
        ec_public_pem=public_pem(ec_key),
    )


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "_env_file": None,
        "database_url": database_url,
        "environment": "development",
        "jwt_secret": TEST_JWT_SECRET,
        "recordings_dir": TEST_RECORDINGS_DIR,
        "recordings_signing_key": "test-recordings-" + "k" * 32,
        # Where the suite's ASGI client sends requests: local links lead back to the app.
        "public_url": "http://testserver",
        # The suite's apps compare answers header for header and share one client address:
        # rate limits are tested on apps of their own (tests/test_rate_limits.py).
        "rate_limit_enabled": False,
        # No app of the suite sends webhooks unless its test asks for it (tests/test_webhooks.py
        # does, on databases of its own): an endpoint a fuzzer created must never be called.
        "webhook_deliverer_enabled": False,
        # The suite's apps share databases with tests that make sessions expire on purpose:
        # only the tests of the sweeper (tests/test_retention.py) let it run on its own.
        "retention_sweep_seconds": 24 * 3600,
        # The in-process client reads a live stream whole: one of a session in progress
        # ends soon after it has nothing more to send (tests/test_live_streams.py runs
        # real servers for the live part).
        "stream_idle_seconds": 0.5,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(database_url: str, keys: Keys) -> Settings:
    return make_settings(database_url, jwt_public_key=keys.rsa_public_pem)


async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async for running in running_app(settings):
        yield running


def asgi_client(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        # One request id for the whole suite, so two answers compare equal headers and all;
        # tests/test_observability.py checks minting with a client of its own.
        headers={"X-Request-ID": "suite"},
        event_hooks={"response": [validate_response_hook]},
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        yield client
    # A key's last_used_at is written after the response. Left pending, a synchronous test
    # next would stop the loop in the middle of that write and hold SQLite's lock for good.
    await app_state(app).key_usage.drain()


@pytest.fixture
def factory(app: FastAPI, settings: Settings) -> Factory:
    return Factory(app_state(app).database, settings)


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture(scope="session")
def project_root() -> Iterator[Path]:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own with no schema yet: migration tests start from nothing."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migration.db'}"
        return
    name = f"transcripts_migration_{uuid.uuid4().hex[:12]}"
    run_elsewhere(lambda: _admin_execute(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        run_elsewhere(lambda: _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
