"""The ``transcripts`` command line.

Commands with ``--json`` print exactly one JSON document on stdout; everything else a
person reads goes to stdout as plain lines, and logs go to stderr. A failure is one line on
stderr, ``transcripts: ...``, and a non-zero exit code: never a traceback, never a password
(a database URL is shown as SQLAlchemy renders it with the password hidden).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import socket
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from typing import Any, TypeVar, cast

import orjson
from asyncpg import CannotConnectNowError
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from transcripts.auth import mint_access_token
from transcripts.db.engine import Database
from transcripts.domain import DeletionReceipt, ExpiredSession
from transcripts.errors import ServiceUnavailable, TranscriptsError
from transcripts.migrate import upgrade_to_head
from transcripts.observability import LOGGING_CONFIG
from transcripts.recordings import LocalRecordingStore, open_recording_store
from transcripts.server import guarded_protocol
from transcripts.services import accounts, deletions
from transcripts.settings import Settings

__all__ = ["main", "serve"]

T = TypeVar("T")


def _run_in_transaction(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(settings)
        try:
            async with database.sessionmaker.begin() as db:
                return await work(db)
        finally:
            await database.dispose()

    with _reaching(settings.database_url):
        return asyncio.run(run())


def _upgrade_to_head(settings: Settings) -> None:
    with _reaching(settings.database_url):
        upgrade_to_head(settings.database_url)


@contextmanager
def _reaching(database_url: str) -> Iterator[None]:
    """A failure to connect to the database, as the one sentence ``main`` prints."""
    try:
        yield
    except Exception as exc:
        reason = _connection_failure(exc)
        if reason is None:
            raise
        verb = "open" if database_url.startswith("sqlite") else "reach"
        raise ServiceUnavailable(
            f"cannot {verb} the database at {_redacted(database_url)} ({reason})"
        ) from None


def _connection_failure(exc: BaseException) -> str | None:
    """Why no connection could be made, if that is what ``exc`` says; else None.

    A refused or unresolvable PostgreSQL address comes from the socket, unwrapped (SQLAlchemy
    wraps only what the driver raises once connected); SQLite's is SQLITE_CANTOPEN.
    """
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return str(cause.strerror).lower()
    if isinstance(cause, OSError):
        if cause.errno:
            return os.strerror(cause.errno).lower()  # "connection refused"
        return str(cause).splitlines()[0]
    if isinstance(cause, CannotConnectNowError):  # the server is starting or shutting down
        return str(cause)
    if isinstance(cause, sqlite3.Error) and cause.sqlite_errorname == "SQLITE_CANTOPEN":
        return str(cause)
    return None


def _print_json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    _upgrade_to_head(settings)
    print(f"database is at the latest revision ({_redacted(settings.database_url)})")
    return 0


def serve(
    app_factory: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    graceful_timeout: int = 30,
    forwarded_allow_ips: str = "127.0.0.1,::1",
    http: Callable[..., asyncio.Protocol] | str = "auto",
) -> None:
    """Run ``module:factory`` under uvicorn as production does (the benchmark's baseline too,
    with uvicorn's own ``http`` protocol)."""
    import uvicorn

    uvicorn.run(
        app_factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # uvicorn calls ``http`` as it would a protocol class: a factory serves as well.
        http=cast("type[asyncio.Protocol] | str", http),
        # No route is a websocket: an Upgrade stays a plain request under the protocol's
        # bounds instead of going to a websocket library that has none of them.
        ws="none",
        # The lifespan owns every resource: a failure to start must stop the process.
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        access_log=False,  # the service writes its own, structured, one line per request
        log_config=LOGGING_CONFIG,
        timeout_graceful_shutdown=graceful_timeout,
    )


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    serve(
        "transcripts.app:create_app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        graceful_timeout=args.graceful_timeout,
        forwarded_allow_ips=args.forwarded_allow_ips or ",".join(settings.forwarded_allow_ips),
        http=guarded_protocol(settings),
    )
    return 0


def cmd_users_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(db: Any) -> dict[str, Any]:
        user = await accounts.create_user(
            db, args.email, tenant_slug=args.tenant, is_staff=args.staff
        )
        return {
            "id": user.id,
            "email": user.email,
            "tenant_id": user.tenant_slug,
            "is_staff": user.is_staff,
            "is_active": user.is_active,
        }

    user = _run_in_transaction(settings, work)
    if args.json:
        _print_json(user)
    else:
        role = "staff user" if user["is_staff"] else "user"
        print(f"created {role} {user['id']} <{user['email']}> in tenant {user['tenant_id']}")
    return 0


def cmd_api_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(db: Any) -> dict[str, Any]:
        api_key, generated = await accounts.create_api_key(db, args.user, args.name)
        return {
            "id": api_key.id,
            "name": api_key.name,
            "user": api_key.user_id,
            "key": generated.key,
            "key_preview": api_key.key_preview,
            "is_active": api_key.is_active,
        }

    api_key = _run_in_transaction(settings, work)
    if args.json:
        _print_json(api_key)
    else:
        print(f"API key {api_key['id']} for user {api_key['user']} (shown once, store it now):")
        print(api_key["key"])
    return 0


def cmd_api_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async def work(db: Any) -> None:
        await accounts.revoke_api_key(db, args.id)

    _run_in_transaction(settings, work)
    print(f"API key {args.id} revoked")
    return 0


def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    """Delete the sessions past their retention now (as the sweeper does), or list them."""

    async def dry_run() -> list[ExpiredSession]:
        database = Database(settings)
        try:
            return [
                expired
                async for expired in deletions.expired_sessions(
                    database, default_days=settings.retention_days
                )
            ]
        finally:
            await database.dispose()

    async def purge() -> DeletionReceipt:
        async with AsyncExitStack() as stack:
            database = Database(settings)
            stack.push_async_callback(database.dispose)
            store = await open_recording_store(settings, stack)
            recordings = deletions.RecordingDeletions(database, store)
            receipt = await deletions.purge_expired(
                database, recordings, default_days=settings.retention_days
            )
            await recordings.run()  # earlier failures, due again
            return receipt

    if args.dry_run:
        with _reaching(settings.database_url):
            expired = asyncio.run(dry_run())
        if args.json:
            _print_json(
                {
                    "dry_run": True,
                    "expired_sessions": len(expired),
                    "sessions": [
                        {
                            "session_id": str(session.session_id),
                            "character_slug": session.character_slug,
                            "created_at": session.created_at,
                        }
                        for session in expired
                    ],
                }
            )
            return 0
        for session in expired:
            print(
                f"{session.session_id}  {session.character_slug}  {session.created_at.isoformat()}"
            )
        print(f"{len(expired)} expired sessions would be deleted (dry run: nothing deleted)")
        return 0
    with _reaching(settings.database_url):
        receipt = asyncio.run(purge())
    if args.json:
        _print_json(
            {
                "dry_run": False,
                "erased_sessions": receipt.sessions,
                "erased_recordings": receipt.recordings,
                "pending_recordings": receipt.recordings_pending,
                "completed_at": receipt.completed_at,
            }
        )
        return 0
    print(
        f"{receipt.sessions} expired sessions deleted, {receipt.recordings} recordings deleted"
        + (f", {receipt.recordings_pending} to retry" if receipt.recordings_pending else "")
    )
    return 0


def cmd_tokens_mint(settings: Settings, args: argparse.Namespace) -> int:
    print(mint_access_token(settings, args.user, ttl_seconds=args.ttl))
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from transcripts.app import create_app
    from transcripts.demo import seed_demo

    # Before anything is seeded or any key revoked: a server already on the port (an
    # earlier demo, say) keeps working, and this one says why it cannot start.
    _refuse_a_busy_port(args.host, args.port)
    overrides: dict[str, Any] = {"environment": "demo"}
    # Fresh secrets per run: tokens and links printed by an earlier run stop working.
    if settings.jwt_secret is None:
        overrides["jwt_secret"] = SecretStr(secrets.token_urlsafe(48))
    if settings.recordings_signing_key is None:
        overrides["recordings_signing_key"] = SecretStr(secrets.token_urlsafe(48))
    if "public_url" not in settings.model_fields_set:
        # The recording links the demo prints point at the server it starts.
        overrides["public_url"] = f"http://{args.host}:{args.port}"
    settings = settings.model_copy(update=overrides)
    _upgrade_to_head(settings)
    recordings = LocalRecordingStore.from_settings(settings)
    demo = _run_in_transaction(settings, lambda db: seed_demo(db, settings.prices, recordings))
    token = mint_access_token(settings, demo.user_id, ttl_seconds=24 * 3600)
    base = f"http://{args.host}:{args.port}"
    example, long_session, in_progress = demo.session_ids[:3]
    key, bearer_key, bearer_token = (
        ("X-API-Key", demo.api_key),
        ("Authorization", f"Bearer {demo.api_key}"),
        ("Authorization", f"Bearer {token}"),
    )
    lines = [
        f"transcripts demo: {_redacted(settings.database_url)}, character '{demo.character_slug}',"
        f" {len(demo.session_ids)} sessions, user {demo.user_id}",
        "",
        "# Enveloped dialect (Oshara), API key:",
        _curl(f"{base}/api/agents/agent-session/{example}/transcript/", *key),
        "# Enveloped dialect at Oshara's billing path, JWT (a 320-turn session):",
        _curl(f"{base}/api/billing/sessions/{long_session}/", *bearer_token),
        "# Session History (totals and every session), API key:",
        _curl(f"{base}/api/billing/usage/", *key),
        "# Anam dialect, API key as a Bearer token (as Anam clients send it):",
        _curl(f"{base}/v1/sessions/{example}/transcript", *bearer_key),
        "# Anam dialect, JWT:",
        _curl(f"{base}/v1/sessions/{long_session}/transcript", *bearer_token),
        "# Anam dialect, the caller's sessions:",
        _curl(f"{base}/v1/sessions?perPage=10", *bearer_key),
        "# A session still in progress (no endTime yet; the worker is still appending):",
        _curl(f"{base}/v1/sessions/{in_progress}/transcript", *bearer_key),
        "",
        "# The example call's recording: a link signed for an hour, which plays in a browser:",
        _curl(f"{base}/v1/sessions/{example}/recording", *bearer_key),
        f"# API docs: {base}/docs",
        f"# Transcript viewer: {base}/ui/ (sign in with the API key above)",
        "",
    ]
    print("\n".join(lines), flush=True)
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        server_header=False,
        access_log=False,
        log_config=LOGGING_CONFIG,
        http=cast("type[asyncio.Protocol]", guarded_protocol(settings)),
        forwarded_allow_ips=",".join(settings.forwarded_allow_ips),
        ws="none",
        lifespan="on",
    )
    asyncio.run(uvicorn.Server(config).serve())
    return 0


def _refuse_a_busy_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: connections of an earlier server left in TIME_WAIT do not count,
        # a listening server does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValueError(
                f"cannot serve on {host}:{port} ({exc.strerror or exc}); is another server"
                " running there? Pick another port: transcripts demo --port 8001"
                " (make run PORT=8001)"
            ) from None


def _curl(url: str, header: str, value: str) -> str:
    return f"curl -s -H {shlex.quote(f'{header}: {value}')} {shlex.quote(url)}"


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transcripts", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="seed a demo into the SQLite default and serve it")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(handler=cmd_demo)

    serve = commands.add_parser("serve", help="run the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--forwarded-allow-ips",
        help="proxies trusted for X-Forwarded-* (the load balancer's addresses, or '*');"
        " overrides TRANSCRIPTS_FORWARDED_ALLOW_IPS (default: loopback only)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=int,
        default=30,
        help="seconds for in-flight requests at shutdown",
    )
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database to the latest revision")
    migrate.set_defaults(handler=cmd_migrate)

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    create_user = users.add_parser("create", help="create a user")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--staff", action="store_true", help="may read every session")
    create_user.add_argument("--tenant", help="tenant slug (created when new)")
    create_user.add_argument("--json", action="store_true")
    create_user.set_defaults(handler=cmd_users_create)

    api_keys = commands.add_parser("api-keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create_key = api_keys.add_parser("create", help="issue a key (printed once)")
    create_key.add_argument("--user", type=int, required=True)
    create_key.add_argument("--name", default="default")
    create_key.add_argument("--json", action="store_true")
    create_key.set_defaults(handler=cmd_api_keys_create)
    revoke_key = api_keys.add_parser("revoke", help="deactivate a key")
    revoke_key.add_argument("id", type=int)
    revoke_key.set_defaults(handler=cmd_api_keys_revoke)

    purge = commands.add_parser(
        "purge", help="delete the sessions past their retention (RETENTION_DAYS, per character)"
    )
    purge.add_argument("--dry-run", action="store_true", help="list them; delete nothing")
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(handler=cmd_purge)

    tokens = commands.add_parser("tokens", help="access tokens").add_subparsers(
        dest="action", required=True
    )
    mint = tokens.add_parser("mint", help="print an HS256 access JWT (development helper)")
    mint.add_argument("--user", type=int, required=True)
    mint.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    mint.set_defaults(handler=cmd_tokens_mint)
    return parser


def _quiet_aiosqlite_after_a_failed_open(
    default: Callable[[threading.ExceptHookArgs], object],
) -> Callable[[threading.ExceptHookArgs], None]:
    """aiosqlite 0.22 stops a connection that failed to open without waiting for its worker
    thread, which may then hand the result to an event loop ``asyncio.run`` has already
    closed (omnilib/aiosqlite#241): a traceback from that thread after the failure has been
    reported, with nothing lost. That one is dropped; any other goes to ``default``."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (
            isinstance(args.exc_value, RuntimeError)
            and str(args.exc_value) == "Event loop is closed"
            and args.thread is not None
            and "_connection_worker_thread" in args.thread.name
        ):
            default(args)

    return hook


def main(argv: Sequence[str] | None = None) -> int:
    threading.excepthook = _quiet_aiosqlite_after_a_failed_open(threading.excepthook)
    args = build_parser().parse_args(argv)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        settings = Settings()
        return handler(settings, args)
    except ValidationError as exc:
        for error in exc.errors():
            # Only the sentence: pydantic's rendering of the error would quote the value,
            # which may be a secret.
            message = str(error["msg"]).removeprefix("Value error, ")
            print(f"transcripts: configuration error: {message}", file=sys.stderr)
        return 2
    except (TranscriptsError, ValueError) as exc:
        print(f"transcripts: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"transcripts: database error: {cause}".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
