"""``make bench-scale``: the dashboard reads at 1,000 and at 1,000,000 sessions (issue 17).

Two databases of the same shape (``scale_data.py``: built once with the service's own
migrations and COPY, then reused) are each served by the installed ``transcripts serve``,
one uvicorn worker on loopback, as in production. Every case in ``CASES`` is measured from
outside, over HTTP, on both:

- sequentially: ``SCALE_WARMUP`` requests unmeasured (caches, plans, the pool), then up to
  ``SCALE_REQUESTS`` one after another (fewer for a case slower than
  ``SCALE_SEQUENTIAL_SECONDS``, never under ``MIN_SEQUENTIAL``): p50, p99;
- under ``SCALE_CLIENTS`` concurrent clients (httpx, keep-alive), each sending its next
  request as soon as the last is answered, until ``SCALE_CONCURRENT_SECONDS`` have passed:
  p50, p99, max, throughput, and every answer that is not 200 (a statement that outlives the
  service's statement timeout answers 503; it is counted, not fatal).

For a case the two databases take turns (1k then 1M, sequential then concurrent), so a
slow stretch of this shared machine falls on both. Then the SQL of the two slowest dashboard
cases at 1M is captured (the service's app in process, SQLAlchemy's cursor events) and
run again under ``EXPLAIN (ANALYZE, BUFFERS)``.

A case is a name, a caller (the big owner's API key or the staff user's) and a path, which
may name the 20-turn session (``{session_id}``) or the label fragment (``{fragment}``), or be
a function of the ``Target`` for paths that must be discovered first: ``cursor_page(path,
caller, 1000)`` follows the keyset cursor 999 times. Adding an endpoint is adding a line to
``CASES``.

Environment: ``SCALE_SECTION`` (which section of ``bench/SCALE.md`` a full run rewrites:
``before`` or ``after``, the default), ``SCALE_QUICK=1`` (a few requests per case, nothing
rewritten), ``SCALE_CASES`` (comma-separated parts of case names to run), ``SCALE_SMALL``
(1000), ``SCALE_LARGE`` (1000000), ``SCALE_REQUESTS`` (30), ``SCALE_WARMUP`` (3),
``SCALE_SEQUENTIAL_SECONDS`` (60), ``SCALE_CLIENTS`` (16), ``SCALE_CONCURRENT_SECONDS``
(20), ``SCALE_WORKERS`` (2 row-generating processes), ``SCALE_EXPLAIN`` (2 cases; 0: none),
``SCALE_POSTGRES_ADMIN_URL``, ``SCALE_DATABASE_PREFIX`` (``transcripts_scale``: the databases
are ``<prefix>_1k`` and ``<prefix>_1m``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

import asyncpg
import httpx

from bench.load import Server, server
from bench.scale_data import LABEL_FRAGMENT, ScaleDatabase, Shape, prepare

__all__ = ["CASES", "Case", "Measurement", "Target", "cursor_page", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCALE_MD = ROOT / "bench" / "SCALE.md"
# The installed command, as production runs it: one worker.
SERVE = [str(Path(sys.executable).with_name("transcripts")), "serve", "--workers", "1"]
STATEMENT_TIMEOUT_SECONDS = 10.0  # the service's default db_statement_timeout_seconds
MIN_SEQUENTIAL = 10
# Targets (issue 17): at 1M within this factor of 1k, and under this p50; under
# concurrency, no request within half the statement timeout of it.
RATIO_TARGET, P50_TARGET_MS = 2.0, 50.0
NEAR_TIMEOUT_MS = STATEMENT_TIMEOUT_SECONDS * 1000 / 2

Caller = Literal["owner", "staff"]


@dataclass(frozen=True)
class Case:
    name: str
    caller: Caller
    # A template ({session_id}, {fragment}), or the path worked out against the target
    # (``cursor_page``, say).
    path: str | Callable[[Target], str]
    dashboard: bool = True  # held to the dashboard's targets (the transcript read is not)
    # An OFFSET page: kept for the vendors' clients and bounded (pagination.MAX_OFFSET), but
    # it costs what it skips, so the targets are for page 1 and cursor pages (issue 17).
    offset: bool = False


class Fetcher(Protocol):
    def get(self, caller: Caller, path: str) -> httpx.Response: ...


def cursor_page(path: str, caller: Caller, page: int) -> Callable[[Fetcher], str]:
    """A case's path: page ``page`` of ``path``, reached by following the opaque cursor
    (Session History's ``data.next_cursor``, ``/v1/sessions``' ``meta.nextCursor``). Where
    the history ends sooner (the 1k database), the last page there is."""

    def resolve(target: Fetcher) -> str:
        current = path
        for _ in range(page - 1):
            body = target.get(caller, current).json()
            if path.startswith("/v1/"):
                cursor = body["meta"].get("nextCursor")
            else:
                cursor = body["data"].get("next_cursor")
            if not cursor:
                break
            current = f"{path}&cursor={quote(cursor, safe='')}"
        return current

    return resolve


HISTORY = "/api/billing/usage/?page_size=50"
SESSIONS = "/v1/sessions?perPage=100"
CASES: tuple[Case, ...] = (
    Case("Session History, big owner, page 1", "owner", f"{HISTORY}&page=1"),
    Case(
        "Session History, big owner, cursor page 1000",
        "owner",
        cursor_page(HISTORY, "owner", 1000),
    ),
    Case("Session History, big owner, page=1000", "owner", f"{HISTORY}&page=1000", offset=True),
    Case("Session History, staff, page 1", "staff", f"{HISTORY}&page=1"),
    Case("Session History, staff, cursor page 1000", "staff", cursor_page(HISTORY, "staff", 1000)),
    Case("Session History, staff, page=1000", "staff", f"{HISTORY}&page=1000", offset=True),
    Case("/v1/sessions, big owner, page 1", "owner", f"{SESSIONS}&page=1"),
    Case(
        "/v1/sessions, big owner, cursor page 1000",
        "owner",
        cursor_page(SESSIONS, "owner", 1000),
    ),
    Case("/v1/sessions, big owner, page=1000", "owner", f"{SESSIONS}&page=1000", offset=True),
    Case("/v1/sessions, search a label fragment", "owner", f"{SESSIONS}&search={{fragment}}"),
    Case("/v1/sessions, search a full session id", "owner", f"{SESSIONS}&search={{session_id}}"),
    Case(
        "transcript, enveloped (20 turns)",
        "owner",
        "/api/agents/agent-session/{session_id}/transcript/",
        dashboard=False,
    ),
    Case("transcript, Anam (20 turns)", "owner", "/v1/sessions/{session_id}/transcript", False),
)


@dataclass(frozen=True)
class Config:
    section: str
    quick: bool
    cases: tuple[Case, ...]
    small: int
    large: int
    requests: int
    warmup: int
    sequential_seconds: float
    clients: int
    concurrent_seconds: float
    workers: int
    explain: int
    admin_dsn: str

    @classmethod
    def from_env(cls) -> Config:
        quick = os.environ.get("SCALE_QUICK", "") not in ("", "0")
        wanted = [part.strip() for part in os.environ.get("SCALE_CASES", "").split(",") if part]
        return cls(
            section=os.environ.get("SCALE_SECTION", "after"),
            quick=quick,
            cases=tuple(c for c in CASES if not wanted or any(w in c.name for w in wanted)),
            small=int(os.environ.get("SCALE_SMALL", 1_000)),
            large=int(os.environ.get("SCALE_LARGE", 1_000_000)),
            requests=int(os.environ.get("SCALE_REQUESTS", 5 if quick else 30)),
            warmup=int(os.environ.get("SCALE_WARMUP", 1 if quick else 3)),
            sequential_seconds=float(os.environ.get("SCALE_SEQUENTIAL_SECONDS", 60)),
            clients=int(os.environ.get("SCALE_CLIENTS", 16)),
            concurrent_seconds=float(
                os.environ.get("SCALE_CONCURRENT_SECONDS", 3 if quick else 20)
            ),
            workers=int(os.environ.get("SCALE_WORKERS", 2)),
            explain=int(os.environ.get("SCALE_EXPLAIN", 2)),
            admin_dsn=os.environ.get(
                "SCALE_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
        )


def log(message: str) -> None:
    print(f"[scale {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def scale_label(sessions: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if sessions >= size and sessions % size == 0:
            return f"{sessions // size}{suffix}"
    return str(sessions)


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    """One database and the server in front of it."""

    label: str  # "1k", "1M"
    database: ScaleDatabase
    server: Server

    def headers(self, caller: Caller, path: str) -> dict[str, str]:
        key = self.database.keys[caller]
        # Anam clients send their key as a bearer token; Oshara's as X-API-Key.
        if path.startswith("/v1/"):
            return {"Authorization": f"Bearer {key}"}
        return {"X-API-Key": key}

    def get(self, caller: Caller, path: str) -> httpx.Response:
        """One request, outside any measurement (for paths that must be discovered)."""
        return httpx.get(
            self.server.base_url + path, headers=self.headers(caller, path), timeout=120
        )

    def path(self, case: Case) -> str:
        if callable(case.path):
            return case.path(self)
        return case.path.format(
            session_id=self.database.featured_session_id, fragment=LABEL_FRAGMENT
        )


# ---------------------------------------------------------------- measuring


@dataclass
class Measurement:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    body_bytes: int = 0  # of the last 200 answer
    load: float = 0.0  # the machine's 1-minute load average when it ended

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != "200")

    def quantile(self, q: float) -> float:
        """Nearest rank: with fewer than 100 requests, p99 is the slowest."""
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    @property
    def max(self) -> float:
        return max(self.latencies_ms)

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies_ms),
            "p50_ms": self.p50,
            "p99_ms": self.p99,
            "max_ms": self.max,
            "per_second": self.rate,
            "statuses": dict(self.statuses),
            "body_bytes": self.body_bytes,
            "load": self.load,
            "latencies_ms": [round(value, 2) for value in self.latencies_ms],
        }


async def _timed_get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], into: Measurement
) -> None:
    started = time.perf_counter()
    try:
        response = await client.get(url, headers=headers)
        status = str(response.status_code)
        if response.status_code == 200:
            into.body_bytes = len(response.content)
    except httpx.TimeoutException:
        status = "client timeout"
    except httpx.TransportError as exc:
        status = type(exc).__name__
    into.latencies_ms.append((time.perf_counter() - started) * 1000)
    into.statuses[status] += 1


def _client(connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(120.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def sequential(url: str, headers: dict[str, str], config: Config) -> Measurement:
    measurement = Measurement()
    async with _client(1) as client:
        for _ in range(config.warmup):
            await _timed_get(client, url, headers, Measurement())
        started = time.perf_counter()
        while len(measurement.latencies_ms) < config.requests and (
            len(measurement.latencies_ms) < MIN_SEQUENTIAL
            or time.perf_counter() - started < config.sequential_seconds
        ):
            await _timed_get(client, url, headers, measurement)
        measurement.seconds = time.perf_counter() - started
        measurement.load = os.getloadavg()[0]
    return measurement


async def concurrent(url: str, headers: dict[str, str], config: Config) -> Measurement:
    measurement = Measurement()
    async with _client(config.clients) as client:
        started = time.perf_counter()
        deadline = started + config.concurrent_seconds

        async def one_client() -> None:
            while True:
                await _timed_get(client, url, headers, measurement)
                if time.perf_counter() >= deadline:
                    return

        await asyncio.gather(*(one_client() for _ in range(config.clients)))
        measurement.seconds = time.perf_counter() - started
        measurement.load = os.getloadavg()[0]
    return measurement


@dataclass
class CaseResult:
    case: Case
    paths: dict[str, str] = field(default_factory=dict)  # by target label
    sequential: dict[str, Measurement] = field(default_factory=dict)
    concurrent: dict[str, Measurement] = field(default_factory=dict)


async def measure(config: Config, targets: list[Target]) -> list[CaseResult]:
    results = []
    for case in config.cases:
        result = CaseResult(case)
        for target in targets:
            result.paths[target.label] = target.path(case)
        for phase, run, into in (
            ("sequential", sequential, result.sequential),
            (f"{config.clients} clients", concurrent, result.concurrent),
        ):
            for target in targets:
                path = result.paths[target.label]
                measured = await run(
                    target.server.base_url + path, target.headers(case.caller, path), config
                )
                into[target.label] = measured
                log(
                    f"{case.name} [{target.label}, {phase}]: p50 {measured.p50:.1f} ms,"
                    f" p99 {measured.p99:.1f} ms, max {measured.max:.1f} ms,"
                    f" {len(measured.latencies_ms)} requests, {dict(measured.statuses)}"
                )
        results.append(result)
    return results


async def warm_pool(target: Target, config: Config) -> None:
    """Open the server's pool to the clients' count before anything is measured."""
    path = target.path(CASES[-1])
    headers = target.headers("owner", path)
    async with _client(config.clients) as client:
        for _ in range(3):
            await asyncio.gather(
                *(
                    _timed_get(client, target.server.base_url + path, headers, Measurement())
                    for _ in range(config.clients)
                )
            )


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class Plan:
    case: str
    statements: list[tuple[str, float]]  # (SQL, execution ms) of every statement it ran
    sql: str  # the slowest
    parameters: str
    plan: str


async def explain(case: Case, target: Target) -> Plan:
    """The statements the service runs for ``case``, each under EXPLAIN (ANALYZE, BUFFERS).

    The service's app runs in this process against the same database, and SQLAlchemy's
    cursor events capture the SQL and its parameters as the driver receives them.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from transcripts.app import create_app
    from transcripts.settings import Settings
    from transcripts.state import app_state

    captured: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        _connection, _cursor, statement, parameters, _context, _many = args
        captured.append((statement, parameters))

    settings = Settings(
        _env_file=None,
        database_url=target.database.url,
        recordings_dir=str(RESULTS / "recordings"),
        recordings_signing_key="scale-bench-recordings-" + "k" * 32,
    )
    path = target.path(case)
    app = create_app(settings)
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scale") as client:
                response = await client.get(path, headers=target.headers(case.caller, path))
                response.raise_for_status()
            await app_state(app).key_usage.drain()
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    reads = [(sql, params) for sql, params in captured if sql.lstrip().upper().startswith("SELECT")]
    connection = await asyncpg.connect(target.database.dsn)
    try:
        await connection.execute("SET statement_timeout = '10min'")
        timed: list[tuple[str, float, list[str], Any]] = []
        for sql, params in reads:
            arguments = list(params or ())
            rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *arguments)
            lines = [row[0] for row in rows]
            execution = next(
                float(line.split(":")[1].split()[0])
                for line in reversed(lines)
                if line.startswith("Execution Time")
            )
            timed.append((sql, execution, lines, arguments))
    finally:
        await connection.close()
    sql, _, lines, arguments = max(timed, key=lambda item: item[1])
    return Plan(
        case=case.name,
        statements=[(statement, ms) for statement, ms, _, _ in timed],
        sql=sql,
        parameters=", ".join(f"${n} = {value!r}" for n, value in enumerate(arguments, 1)),
        plan="\n".join(lines),
    )


# ---------------------------------------------------------------- report


async def _postgres_facts(database: ScaleDatabase) -> dict[str, str]:
    connection = await asyncpg.connect(database.dsn)
    try:
        facts = {
            "version": await connection.fetchval("SHOW server_version"),
            "size": await connection.fetchval(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            ),
        }
        for setting in (
            "shared_buffers",
            "work_mem",
            "effective_cache_size",
            "random_page_cost",
            "max_parallel_workers_per_gather",
            "jit",
        ):
            facts[setting] = await connection.fetchval(f"SHOW {setting}")
    finally:
        await connection.close()
    return facts


def _machine(load_at_start: tuple[float, ...]) -> list[str]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "httpx")
    )
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores (shared with other work); memory"
        f" {memory_kib / 1024 / 1024:.0f} GiB; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {packages}",
        "- load average at the start / end: "
        + " / ".join(
            " ".join(f"{v:.2f}" for v in load) for load in (load_at_start, os.getloadavg())
        ),
    ]


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _verdict(result: CaseResult, small: str, large: str) -> str:
    if not result.case.dashboard:
        return "compare with before"
    seq, conc = result.sequential, result.concurrent[large]
    failed = []
    if result.case.offset:
        near = conc.max >= NEAR_TIMEOUT_MS or conc.errors
        return "offset page: no target" + (", **near the timeout**" if near else "")
    if seq[large].p50 > RATIO_TARGET * seq[small].p50:
        failed.append(f"> {RATIO_TARGET:g}x")
    if seq[large].p50 >= P50_TARGET_MS:
        failed.append(f"p50 ≥ {P50_TARGET_MS:g} ms")
    if conc.max >= NEAR_TIMEOUT_MS or conc.errors:
        failed.append("near the timeout")
    return "yes" if not failed else "**no**: " + ", ".join(failed)


def table(results: list[CaseResult], small: str, large: str, clients: int) -> list[str]:
    lines = [
        f"| endpoint | caller | {small} p50 ms | {large} p50 ms | {large}/{small} | {large} p99 ms"
        f" | {clients} clients at {large}: p50 / p99 / max ms | errors ({large}: sequential"
        f" / {clients} clients) | target met |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for result in results:
        seq, conc = result.sequential, result.concurrent[large]
        lines.append(
            f"| {result.case.name} | {result.case.caller}"
            f" | {_ms(seq[small].p50)} | {_ms(seq[large].p50)}"
            f" | **{seq[large].p50 / seq[small].p50:,.1f}** | {_ms(seq[large].p99)}"
            f" | {_ms(conc.p50)} / {_ms(conc.p99)} / {_ms(conc.max)}"
            f" | {seq[large].errors} / {_errors(conc)} | {_verdict(result, small, large)} |"
        )
    return lines


def _errors(measurement: Measurement) -> str:
    if not measurement.errors:
        return "0"
    detail = ", ".join(
        f"{count} x {status}" for status, count in measurement.statuses.items() if status != "200"
    )
    return f"{measurement.errors} of {len(measurement.latencies_ms)} ({detail})"


def details(results: list[CaseResult], labels: list[str], clients: int) -> list[str]:
    lines = [
        "| endpoint | database | path | sequential: requests, p50 / p99 ms | body KiB"
        f" | {clients} clients: requests, p50 / p99 / max ms, req/s | non-200 | load average |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        for label in labels:
            seq, conc = result.sequential[label], result.concurrent[label]
            path = result.paths[label].replace("|", "\\|")
            if len(path) > 70:
                path = path[:67] + "..."
            lines.append(
                f"| {result.case.name} | {label} | `{path}`"
                f" | {len(seq.latencies_ms)}: {_ms(seq.p50)} / {_ms(seq.p99)}"
                f" | {seq.body_bytes / 1024:,.1f}"
                f" | {len(conc.latencies_ms)}: {_ms(conc.p50)} / {_ms(conc.p99)}"
                f" / {_ms(conc.max)}, {conc.rate:.1f} | {_errors(seq)} ; {_errors(conc)}"
                f" | {seq.load:.1f} / {conc.load:.1f} |"
            )
    return lines


def plans_section(plans: list[Plan], large: str) -> list[str]:
    lines: list[str] = []
    for plan in plans:
        lines += [
            f"#### {plan.case} ({large})",
            "",
            "Statements it runs, each re-run under EXPLAIN ANALYZE (execution ms): "
            + "; ".join(f"{' '.join(sql.split())[:60]}… {ms:,.1f}" for sql, ms in plan.statements),
            "",
            "The slowest:",
            "",
            "```sql",
            plan.sql.strip(),
            f"-- {plan.parameters}",
            "```",
            "",
            "```",
            plan.plan,
            "```",
            "",
        ]
    return lines


def report(
    config: Config,
    targets: list[Target],
    results: list[CaseResult],
    plans: list[Plan],
    facts: dict[str, str],
    started: datetime,
    load_at_start: tuple[float, ...],
) -> str:
    small, large = targets[0].label, targets[-1].label
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    databases = []
    for target in targets:
        info = target.database.info
        databases.append(
            f"- `{target.database.name}`: {info.sessions:,} sessions, {info.turns:,} turns,"
            f" the big owner {info.big_owner_sessions:,} sessions; {facts[target.label]};"
            f" built {info.built_at} in {info.build_seconds:,.0f} s"
            f" ({'this run' if target.database.built else 'reused'}), generator"
            f" {info.generator}, schema {info.revision}"
        )
    pg = facts["postgresql"]
    lines = [
        f"Run of {started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} min): {len(results)} cases; per"
        f" case and database {config.warmup} warm-up requests, then up to {config.requests}"
        f" sequential (none started after {config.sequential_seconds:g} s once there are"
        f" {min(MIN_SEQUENTIAL, config.requests)}),"
        f" then {config.clients} concurrent clients for {config.concurrent_seconds:g} s;"
        " `transcripts serve`, 1 worker, pinned to one core; client: httpx on the same machine.",
        "",
        *_machine(load_at_start),
        f"- PostgreSQL {pg}",
        *databases,
        "",
        *table(results, small, large, config.clients),
        "",
        f'"target met": at {large}, p50 within {RATIO_TARGET:g}x of {small} and under'
        f" {P50_TARGET_MS:g} ms, and with {config.clients} clients no request at or over"
        f" {NEAR_TIMEOUT_MS / 1000:g} s (half the statement timeout) and no error. The"
        " transcript read is held to its figures before the change.",
        "",
        "<details><summary>Every figure, both databases</summary>",
        "",
        *details(results, [t.label for t in targets], config.clients),
        "",
        "</details>",
    ]
    if plans:
        lines += [
            "",
            f"#### Plans of the {len(plans)} slowest dashboard reads at {large}",
            "",
            *plans_section(plans, large),
        ]
    return "\n".join(lines).rstrip() + "\n"


def write_section(section: str, text: str) -> None:
    begin, end = f"<!-- scale:{section}:begin -->", f"<!-- scale:{section}:end -->"
    current = SCALE_MD.read_text()
    if begin not in current or end not in current:
        raise SystemExit(f"{SCALE_MD} has no {begin} ... {end} to write into")
    head, _, rest = current.partition(begin)
    _, _, tail = rest.partition(end)
    SCALE_MD.write_text(f"{head}{begin}\n{text}{end}{tail}")


# ---------------------------------------------------------------- main


async def _prepare_all(config: Config) -> list[ScaleDatabase]:
    databases = []
    for sessions in (config.small, config.large):
        databases.append(
            await prepare(
                config.admin_dsn,
                f"{os.environ.get('SCALE_DATABASE_PREFIX', 'transcripts_scale')}_"
                f"{scale_label(sessions).lower()}",
                Shape(sessions),
                workers=config.workers,
                log=log,
            )
        )
    return databases


async def _measure_all(
    config: Config, targets: list[Target]
) -> tuple[list[CaseResult], list[Plan], dict[str, str]]:
    for target in targets:
        await warm_pool(target, config)
    results = await measure(config, targets)
    large = targets[-1]
    slowest = sorted(
        (result for result in results if result.case.dashboard),
        key=lambda result: result.sequential[large.label].p50,
        reverse=True,
    )[: config.explain]
    plans = []
    for result in slowest:
        log(f"EXPLAIN (ANALYZE, BUFFERS): {result.case.name} at {large.label}")
        plans.append(await explain(result.case, large))
    facts = {}
    for target in targets:
        pg = await _postgres_facts(target.database)
        facts[target.label] = pg.pop("size")
        facts["postgresql"] = f"{pg.pop('version')}, same machine; " + ", ".join(
            f"{name} {value}" for name, value in pg.items()
        )
    return results, plans, facts


def main() -> None:
    config = Config.from_env()
    if config.section not in ("before", "after"):
        raise SystemExit("SCALE_SECTION is before or after")
    started = datetime.now(UTC)
    load_at_start = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    databases = asyncio.run(_prepare_all(config))
    env = {
        "TRANSCRIPTS_RECORDINGS_DIR": str(RESULTS / "recordings"),
        "TRANSCRIPTS_RECORDINGS_SIGNING_KEY": "scale-bench-recordings-" + "k" * 32,
    }
    with ExitStack() as stack:
        targets = [
            Target(
                label=scale_label(database.info.sessions),
                database=database,
                server=stack.enter_context(
                    server(
                        f"S-{database.name}",
                        SERVE,
                        {**env, "TRANSCRIPTS_DATABASE_URL": database.url},
                        RESULTS / f"scale-{database.name}.log",
                        ROOT,
                    )
                ),
            )
            for database in databases
        ]
        results, plans, facts = asyncio.run(_measure_all(config, targets))
    text = report(config, targets, results, plans, facts, started, load_at_start)
    print()
    print(text)
    stamp = f"{started:%Y%m%d-%H%M%S}{'-quick' if config.quick else ''}"
    (RESULTS / f"scale-{stamp}.md").write_text(text)
    (RESULTS / f"scale-{stamp}.json").write_text(
        json.dumps(
            {
                "section": config.section,
                "databases": [asdict(database.info) for database in databases],
                "cases": [
                    {
                        "name": result.case.name,
                        "caller": result.case.caller,
                        "paths": result.paths,
                        "sequential": {k: m.summary() for k, m in result.sequential.items()},
                        "concurrent": {k: m.summary() for k, m in result.concurrent.items()},
                    }
                    for result in results
                ],
                "plans": [asdict(plan) for plan in plans],
            },
            indent=1,
        )
    )
    if not config.quick and len(config.cases) == len(CASES):
        write_section(config.section, text)
        log(f"wrote the {config.section} section of {SCALE_MD.relative_to(ROOT)}")
    log(f"saved bench/results/scale-{stamp}.md and .json")


if __name__ == "__main__":
    main()
