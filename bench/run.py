"""``make bench``: the service (S) against its baseline (B0) under wrk, on PostgreSQL and SQLite.

For every transcript size x dialect x credential kind, B0 and S are loaded alternately from
the same run, in short runs that alternate within each of ``BENCH_ROUNDS`` rounds, and the
medians are reported. Then: the instructions each executes per read, counted by callgrind
(``instructions.py``), the lookup at two scales, and the service's peak memory while 16
clients read the 10,000-turn transcript.

Environment: ``BENCH_QUICK=1`` (one short round, for development), ``BENCH_ROUNDS``,
``BENCH_SECONDS``, ``BENCH_INSTRUCTIONS`` (``0`` skips callgrind; the default in a quick
run), ``BENCH_BACKENDS`` (``postgresql,sqlite``), ``BENCH_SIZES``,
``BENCH_SESSIONS`` (100000), ``BENCH_DATABASE`` (``transcripts_bench``),
``BENCH_POSTGRES_ADMIN_URL``, ``BENCH_SERVICE_SRC`` (measure the service from another
``src/`` directory, e.g. an older commit's). A full run of this version rewrites the
generated part of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import asyncpg
import httpx

from bench.baseline_app import service_pool_bounds
from bench.data import SIZES, Fixture, prepare_postgres, prepare_sqlite
from bench.instructions import InstructionCount, PlannedCell, count_instructions
from bench.load import (
    LOAD_CPU,
    SERVER_CPU,
    Server,
    WrkResult,
    combine,
    peak_rss_while,
    pin_to_load_core,
    postgres_backend_of,
    run_wrk,
    server,
)
from bench.lookup import LookupCost, compare_lookups
from transcripts.auth import mint_access_token
from transcripts.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

DIALECTS = ("agents", "anam")
KINDS = ("key", "user")
KIND_LABELS = {"key": "API key", "user": "JWT"}
SQLITE_SIZES = (10, 1_000)
# The targets for S/B0 throughput, by transcript size (1 worker, 16 connections).
THROUGHPUT_TARGETS = {10: 0.70, 100: 0.85, 1_000: 0.90, 10_000: 0.90}
P99_VS_B0, P99_VS_P50 = 1.5, 4.0


@dataclass(frozen=True)
class Config:
    quick: bool
    rounds: int
    seconds: int
    warmup_seconds: int
    connections: int
    sessions: int
    backends: tuple[str, ...]
    sizes: tuple[int, ...]
    admin_dsn: str
    database: str
    instructions: bool  # count instructions per read under callgrind, too

    @classmethod
    def from_env(cls) -> Config:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        sizes = os.environ.get("BENCH_SIZES")
        return cls(
            quick=quick,
            rounds=int(os.environ.get("BENCH_ROUNDS", 1 if quick else 3)),
            seconds=int(os.environ.get("BENCH_SECONDS", 2 if quick else 10)),
            warmup_seconds=1,
            connections=16,
            sessions=int(os.environ.get("BENCH_SESSIONS", 100_000)),
            backends=tuple(os.environ.get("BENCH_BACKENDS", "postgresql,sqlite").split(",")),
            sizes=tuple(int(size) for size in sizes.split(",")) if sizes else SIZES,
            admin_dsn=os.environ.get(
                "BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
            database=os.environ.get("BENCH_DATABASE", "transcripts_bench"),
            instructions=os.environ.get("BENCH_INSTRUCTIONS", "0" if quick else "1") != "0",
        )


@dataclass(frozen=True)
class Cell:
    backend: str
    turns: int
    dialect: str
    kind: str


@dataclass
class CellResult:
    cell: Cell
    b0: list[WrkResult] = field(default_factory=list)
    s: list[WrkResult] = field(default_factory=list)

    def median(self, side: str, attribute: str) -> float:
        results: list[WrkResult] = getattr(self, side)
        return statistics.median(getattr(result, attribute) for result in results)

    @property
    def ratio(self) -> float:
        # Per round, then the median: each round's pair ran back to back.
        return statistics.median(
            s.requests_per_second / b0.requests_per_second
            for s, b0 in zip(self.s, self.b0, strict=True)
        )

    @property
    def errors(self) -> tuple[int, int]:
        return sum(r.errors for r in self.b0), sum(r.errors for r in self.s)

    def failures(self) -> list[str]:
        failed = []
        if self.ratio < THROUGHPUT_TARGETS[self.cell.turns]:
            failed.append("throughput")
        p99_s, p50_s = self.median("s", "p99_ms"), self.median("s", "p50_ms")
        if p99_s > P99_VS_B0 * self.median("b0", "p99_ms"):
            failed.append("p99 vs B0")
        if p99_s > P99_VS_P50 * p50_s:
            failed.append("p99 vs p50")
        if any(self.errors):
            failed.append("errors")
        return failed


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Credentials:
    fixture: Fixture
    token: str


def service_request(cell: Cell, credentials: Credentials) -> tuple[str, dict[str, str]]:
    session_id = credentials.fixture.session_ids[cell.turns]
    if cell.dialect == "agents":
        path = f"/api/agents/agent-session/{session_id}/transcript/"
        key_header = {"X-API-Key": credentials.fixture.api_key}
    else:
        # Anam clients send their key as a bearer token.
        path = f"/v1/sessions/{session_id}/transcript"
        key_header = {"Authorization": f"Bearer {credentials.fixture.api_key}"}
    if cell.kind == "key":
        return path, key_header
    return path, {"Authorization": f"Bearer {credentials.token}"}


def baseline_request(cell: Cell, credentials: Credentials) -> tuple[str, dict[str, str]]:
    return f"/{cell.dialect}/{cell.kind}/{credentials.fixture.session_ids[cell.turns]}", {}


def check_same_bodies(cells: list[Cell], b0: Server, s: Server, credentials: Credentials) -> None:
    """B0 must answer byte for byte what S answers, or the comparison means nothing."""
    with httpx.Client(timeout=60) as client:
        for cell in cells:
            s_path, s_headers = service_request(cell, credentials)
            b0_path, _ = baseline_request(cell, credentials)
            from_s = client.get(s.base_url + s_path, headers=s_headers)
            from_b0 = client.get(b0.base_url + b0_path)
            if from_s.status_code != 200 or from_b0.status_code != 200:
                raise SystemExit(f"{cell}: S {from_s.status_code}, B0 {from_b0.status_code}")
            if from_s.content != from_b0.content:
                raise SystemExit(f"{cell}: B0 and S bodies differ; the baseline is not comparable")
    log(f"B0 and S answer identical bodies for all {len(cells)} cells")


# ---------------------------------------------------------------- measuring


# A run of a slow cell may be longer than the round's seconds, up to this (or those seconds).
LONGEST_RUN_SECONDS = 30


def slices(seconds: int, rate: float, config: Config) -> list[int]:
    """How a round's ``seconds`` per server are cut into runs, alternated between B0 and S.

    The speed of this shared virtual machine drifts by 10-20% from one few-second stretch to
    the next, more than the differences to be measured; alternating often puts both servers
    in the same stretches. But wrk drops the requests in flight when a run ends (all
    ``connections`` start together, so a run counts whole latencies per connection): a run
    must last 20 times a request's latency (connections / rate) for that to cost under 5%,
    of both servers alike. Where one such run is longer than ``seconds`` (10,000 turns),
    the cell gets one run of that length: at 5 s, a 10,000-turn Anam cell counted 5 or 6
    requests a connection depending on a few milliseconds of latency, 17% apart.
    """
    if rate <= 0:
        return [seconds]  # nothing answered: nothing to size the runs by
    shortest = math.ceil(20 * config.connections / rate)
    if shortest >= seconds:
        return [min(shortest, max(seconds, LONGEST_RUN_SECONDS))]
    count = seconds // shortest
    return [seconds // count + (1 if index < seconds % count else 0) for index in range(count)]


def warm_up(url: str, headers: dict[str, str], config: Config) -> WrkResult:
    """A short run that opens the server's pool to the clients' count and measures its rate.

    A second, longer one follows where the first completed fewer requests than there are
    connections (a 10,000-turn Anam read can take longer than the first run): the rate it
    returns sizes the measured runs.
    """
    warmup = run_wrk(url, headers, config.warmup_seconds, config.connections)
    if warmup.requests < config.connections:
        warmup = run_wrk(url, headers, 3 * config.warmup_seconds, config.connections)
    return warmup


def database_backends(config: Config) -> list[int]:
    """The process ids of the PostgreSQL backends connected to the bench database."""

    async def listed() -> list[int]:
        admin = await asyncpg.connect(config.admin_dsn, timeout=5)
        try:
            rows = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type ="
                " 'client backend'",
                config.database,
            )
        finally:
            await admin.close()
        return [row["pid"] for row in rows]

    return asyncio.run(listed())


class BackendPinning:
    """Keeps the bench database's backends on the load core, away from the measured server.

    The backends that serve the servers' pools are moved after every warm-up (a pool may
    open connections as it warms up). Backends that cannot be moved (another user's server
    without root, a server in a container or on another host) stay where the scheduler puts
    them, and the report says so.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.refusal: str | None = None
        self.moved: set[int] = set()

    def __call__(self) -> None:
        if self.refusal is not None:
            return
        try:
            pids = [
                pid
                for pid in database_backends(self.config)
                if pid not in self.moved and postgres_backend_of(pid, self.config.database)
            ]
            self.moved.update(pin_to_load_core(pids))
        except OSError as exc:
            self.refusal = str(exc)
            log(f"PostgreSQL's backends stay where they are ({exc})")

    def describe(self) -> str:
        if self.refusal is not None:
            return (
                f"PostgreSQL's backends not pinned ({self.refusal}): they share the server's"
                " core as the scheduler decides"
            )
        if not self.moved:
            return (
                f"PostgreSQL's backends not pinned: none of {self.config.database}'s runs on"
                " this machine, as far as its process list tells"
            )
        return (
            f"PostgreSQL's backends for the servers' connections ({len(self.moved)}) pinned to"
            f" core {LOAD_CPU} with wrk, so the server under measurement has core {SERVER_CPU}"
            " to itself"
        )


def measure(
    config: Config,
    cells: list[Cell],
    b0: Server,
    s: Server,
    credentials: Credentials,
    after_warm_up: Callable[[], None] = lambda: None,
) -> list[CellResult]:
    results = [CellResult(cell) for cell in cells]
    for round_number in range(config.rounds):
        for position, result in enumerate(results):
            cell = result.cell
            sides = [("b0", b0, baseline_request), ("s", s, service_request)]
            if (round_number + position) % 2:
                sides.reverse()  # alternate who goes first, so drift cancels out
            urls = {}
            rates = []
            for side, target, request in sides:
                path, headers = request(cell, credentials)
                urls[side] = (target.base_url + path, headers)
                rates.append(warm_up(*urls[side], config).requests_per_second)
            after_warm_up()
            runs: dict[str, list[WrkResult]] = {"b0": [], "s": []}
            for number, seconds in enumerate(slices(config.seconds, min(rates), config)):
                # B0, S, S, B0, ...: the two share every stretch of the machine's time.
                for side, _, _ in sides if number % 2 == 0 else sides[::-1]:
                    runs[side].append(run_wrk(*urls[side], seconds, config.connections))
            result.b0.append(combine(runs["b0"]))
            result.s.append(combine(runs["s"]))
            log(
                f"round {round_number + 1}/{config.rounds} {cell.backend} {cell.turns:>6} turns"
                f" {cell.dialect:<6} {KIND_LABELS[cell.kind]:<7}"
                f" B0 {result.b0[-1].requests_per_second:8.1f}/s"
                f" S {result.s[-1].requests_per_second:8.1f}/s"
                f" S/B0 {result.s[-1].requests_per_second / result.b0[-1].requests_per_second:.2f}"
            )
    return results


@dataclass(frozen=True)
class Memory:
    server: str
    dialect: str
    idle_mib: float
    peak_mib: float
    requests_per_second: float


def measure_memory(
    config: Config, servers: dict[str, Server], credentials: Credentials
) -> list[Memory]:
    """Resident memory while ``connections`` clients read the 10,000-turn transcript."""
    memory = []
    for name, target in servers.items():
        for dialect in DIALECTS:
            cell = Cell("postgresql", 10_000, dialect, "key")
            request = service_request if name == "S" else baseline_request
            path, headers = request(cell, credentials)
            with peak_rss_while(target.pid) as rss:
                result = run_wrk(
                    target.base_url + path, headers, config.seconds, config.connections
                )
            memory.append(
                Memory(
                    name,
                    dialect,
                    rss["idle_kib"] / 1024,
                    rss["peak_kib"] / 1024,
                    result.requests_per_second,
                )
            )
    return memory


# ---------------------------------------------------------------- servers


def servers_for(
    stack: ExitStack, backend: str, database_url: str, fixture: Fixture, jwt_secret: str
) -> tuple[Server, Server]:
    env = {"TRANSCRIPTS_DATABASE_URL": database_url, "TRANSCRIPTS_JWT_SECRET": jwt_secret}
    low, high = service_pool_bounds(Settings(_env_file=None, database_url=database_url))
    binaries = Path(sys.executable).parent
    # Another version of the service (e.g. a checkout of an older commit's src/) against
    # the same B0: the way to measure a change before and after.
    other = os.environ.get("BENCH_SERVICE_SRC")
    s = stack.enter_context(
        server(
            "S",
            [str(binaries / "transcripts"), "serve", "--workers", "1"],
            {**env, "PYTHONPATH": other} if other else env,
            RESULTS / f"{backend}-S.log",
            ROOT,
        )
    )
    b0 = stack.enter_context(
        server(
            "B0",
            [sys.executable, "-m", "bench.baseline_app"],
            {
                **env,
                "BENCH_KEY_HASH": fixture.api_key_hash,
                "BENCH_USER_ID": str(fixture.user_id),
                "BENCH_POOL_MIN": str(low),
                "BENCH_POOL_MAX": str(high),
            },
            RESULTS / f"{backend}-B0.log",
            ROOT,
        )
    )
    return b0, s


def cells_for(backend: str, sizes: tuple[int, ...]) -> list[Cell]:
    allowed = sizes if backend == "postgresql" else tuple(s for s in sizes if s in SQLITE_SIZES)
    return [
        Cell(backend, turns, dialect, kind)
        for turns in allowed
        for dialect in DIALECTS
        for kind in KINDS
    ]


# ---------------------------------------------------------------- report


def _machine() -> list[str]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    postgres = subprocess.run(
        ["psql", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in (
            "fastapi",
            "starlette",
            "uvicorn",
            "uvloop",
            "sqlalchemy",
            "asyncpg",
            "aiosqlite",
            "orjson",
        )
    )
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {memory_kib / 1024 / 1024:.0f} GiB;"
        f" {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {packages}",
        f"- {postgres} (server on the same machine); "
        f"{(wrk.stdout or wrk.stderr).splitlines()[0].split(' Copyright')[0]}",
        f"- load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
    ]


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def table(results: list[CellResult]) -> list[str]:
    lines = [
        "| backend | turns | dialect | credential | B0 req/s | S req/s | **S/B0** | target"
        " | B0 p50 / p99 ms | S p50 / p99 ms | p99 S/B0 | p99/p50 S | non-2xx B0 / S | ok |",
        "|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for result in results:
        cell = result.cell
        p99_s, p50_s, p99_b0 = (
            result.median("s", "p99_ms"),
            result.median("s", "p50_ms"),
            result.median("b0", "p99_ms"),
        )
        failed = result.failures()
        lines.append(
            f"| {cell.backend} | {cell.turns:,} | {cell.dialect} | {KIND_LABELS[cell.kind]}"
            f" | {result.median('b0', 'requests_per_second'):,.0f}"
            f" | {result.median('s', 'requests_per_second'):,.0f}"
            f" | **{result.ratio:.2f}** | {THROUGHPUT_TARGETS[cell.turns]:.2f}"
            f" | {_ms(result.median('b0', 'p50_ms'))} / {_ms(p99_b0)}"
            f" | {_ms(p50_s)} / {_ms(p99_s)}"
            f" | {p99_s / p99_b0:.2f} | {p99_s / p50_s:.1f}"
            f" | {result.errors[0]} / {result.errors[1]}"
            f" | {'yes' if not failed else 'no: ' + ', '.join(failed)} |"
        )
    return lines


def lookup_section(small: LookupCost, big: LookupCost) -> list[str]:
    return [
        "| sessions | round trip, median µs | server execution, median µs | shared buffers hit |",
        "|--:|--:|--:|--:|",
        *(
            f"| {cost.sessions:,} | {cost.round_trip_us:.0f} | {cost.execution_us:.0f}"
            f" | {cost.shared_hit} |"
            for cost in (small, big)
        ),
        "",
        f"Cost at {big.sessions:,} / cost at {small.sessions:,}: round trip"
        f" **{big.round_trip_us / small.round_trip_us:.2f}**, server execution"
        f" **{big.execution_us / small.execution_us:.2f}** (target: within 10%).",
        "",
        f"Plan at {big.sessions:,} sessions (`EXPLAIN (ANALYZE, BUFFERS)`, API key, 10 turns):",
        "",
        "```",
        big.plan,
        "```",
    ]


def memory_section(memory: list[Memory], connections: int) -> list[str]:
    return [
        f"Resident memory while {connections} connections read the 10,000-turn transcript:",
        "",
        "| server | dialect | RSS before, MiB | peak RSS, MiB | req/s meanwhile |",
        "|---|---|--:|--:|--:|",
        *(
            f"| {m.server} | {m.dialect} | {m.idle_mib:.0f} | {m.peak_mib:.0f}"
            f" | {m.requests_per_second:.1f} |"
            for m in memory
        ),
    ]


def instructions_section(counts: list[tuple[Cell, InstructionCount]]) -> list[str]:
    return [
        "Counted by callgrind in process, on uvloop, 16 concurrent clients, after a warm-up"
        " (`instructions.py`): instructions per read, which move far less with the machine"
        " than time does.",
        "",
        "| backend | turns | dialect | credential | B0 instructions | S instructions"
        " | **S/B0** | S - B0 |",
        "|---|--:|---|---|--:|--:|--:|--:|",
        *(
            f"| {cell.backend} | {cell.turns:,} | {cell.dialect} | {KIND_LABELS[cell.kind]}"
            f" | {count.baseline:,.0f} | {count.service:,.0f}"
            f" | **{count.service / count.baseline:.3f}**"
            f" | {count.service - count.baseline:+,.0f} |"
            for cell, count in counts
        ),
    ]


def report(
    config: Config,
    results: list[CellResult],
    lookups: tuple[LookupCost, LookupCost] | None,
    memory: list[Memory],
    instructions: list[tuple[Cell, InstructionCount]],
    started: datetime,
    notes: list[str],
) -> str:
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    lines = [
        f"Run of {started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} min):"
        f" {config.rounds} round(s) of {config.seconds} s per server and cell (longer where a"
        f" request takes over 1/20 of a run), after a {config.warmup_seconds} s warm-up,"
        f" {config.connections} connections, 1 uvicorn worker each, {config.sessions:,}"
        " sessions in the database.",
        "",
        *_machine(),
        *(f"- {note}" for note in notes),
        "",
        *table(results),
    ]
    if lookups:
        lines += ["", "### Lookup cost and plan", "", *lookup_section(*lookups)]
    if memory:
        lines += ["", "### Peak memory", "", *memory_section(memory, config.connections)]
    if instructions:
        lines += ["", "### Instructions per read", "", *instructions_section(instructions)]
    return "\n".join(lines) + "\n"


def save(text: str, config: Config, started: datetime) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if config.quick else "") + (
        "-other-service" if os.environ.get("BENCH_SERVICE_SRC") else ""
    )
    path = RESULTS / f"{started:%Y%m%d-%H%M%S}{suffix}.md"
    path.write_text(text)
    if not config.quick and not os.environ.get("BENCH_SERVICE_SRC"):
        current = RESULTS_MD.read_text()
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        RESULTS_MD.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    return path


# ---------------------------------------------------------------- main


def require_tools(config: Config) -> None:
    needed = ["wrk", "taskset"] + (["valgrind", "callgrind_control"] if config.instructions else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench needs {', '.join(missing)}: apt-get install -y wrk util-linux valgrind"
            " (make bench installs them when it runs as root;"
            " BENCH_INSTRUCTIONS=0 goes without valgrind)"
        )
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench pins the server and wrk to different cores: it needs two")


def instructions_of(
    cells: list[Cell], url: str, secret: str, fixture: Fixture, credentials: Credentials
) -> list[tuple[Cell, InstructionCount]]:
    """Each cell with the instructions B0 and S execute per read of it, under callgrind."""
    labelled = {f"{cell.backend}-{cell.turns}-{cell.dialect}-{cell.kind}": cell for cell in cells}
    counts = count_instructions(
        [
            PlannedCell(
                label,
                cell.turns,
                service_request(cell, credentials),
                baseline_request(cell, credentials),
            )
            for label, cell in labelled.items()
        ],
        database_url=url,
        jwt_secret=secret,
        key_hash=fixture.api_key_hash,
        user_id=fixture.user_id,
        pool=service_pool_bounds(Settings(_env_file=None, database_url=url)),
        work_dir=RESULTS / f"callgrind-{cells[0].backend}",
        cpus=(SERVER_CPU, LOAD_CPU),
        service_src=os.environ.get("BENCH_SERVICE_SRC"),
    )
    return [(labelled[count.label], count) for count in counts]


@dataclass
class BackendRun:
    results: list[CellResult]
    fixture: Fixture
    servers: dict[str, Server]
    credentials: Credentials
    instructions: list[tuple[Cell, InstructionCount]]
    notes: list[str]


def run_backend(
    config: Config, backend: str, stack: ExitStack, pinning: BackendPinning
) -> BackendRun:
    if backend == "postgresql":
        fixture = asyncio.run(
            prepare_postgres(config.admin_dsn, config.database, config.sessions, log)
        )
        base = config.admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        url = f"{base}/{config.database}"
    else:
        path = RESULTS / "bench.sqlite3"
        fixture = prepare_sqlite(path, config.sessions, log)
        url = f"sqlite+aiosqlite:///{path}"
    secret = secrets.token_urlsafe(48)
    token_settings = Settings(_env_file=None, database_url=url, jwt_secret=secret)
    credentials = Credentials(fixture, mint_access_token(token_settings, fixture.user_id, 7200))
    b0, s = servers_for(stack, backend, url, fixture, secret)
    cells = cells_for(backend, config.sizes)
    check_same_bodies(cells, b0, s, credentials)
    # SQLite runs inside the server's process, on its core.
    after_warm_up = pinning if backend == "postgresql" else lambda: None
    results = measure(config, cells, b0, s, credentials, after_warm_up)
    instructions: list[tuple[Cell, InstructionCount]] = []
    notes = []
    if config.instructions:
        log(f"instructions per read under callgrind, {backend}")
        try:
            instructions = instructions_of(cells, url, secret, fixture, credentials)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            # The wrk figures stand on their own: report them, and why these are missing.
            log(f"no instruction counts for {backend}: {exc}")
            notes.append(f"Instructions not counted on {backend}: {str(exc).splitlines()[0]}")
    return BackendRun(results, fixture, {"B0": b0, "S": s}, credentials, instructions, notes)


def main() -> None:
    config = Config.from_env()
    require_tools(config)
    started = datetime.now(UTC)
    RESULTS.mkdir(parents=True, exist_ok=True)
    log(
        f"{'quick' if config.quick else 'full'} run: {config.rounds} round(s) x"
        f" {config.seconds} s, backends {', '.join(config.backends)}"
    )
    results: list[CellResult] = []
    lookups = None
    memory: list[Memory] = []
    instructions: list[tuple[Cell, InstructionCount]] = []
    notes: list[str] = []
    pinning = BackendPinning(config)
    for backend in config.backends:
        with ExitStack() as stack:
            run = run_backend(config, backend, stack, pinning)
            results += run.results
            instructions += run.instructions
            notes += run.notes
            fixture = run.fixture
            if backend == "postgresql" and 10_000 in config.sizes:
                log("peak memory at 10,000 turns")
                memory = measure_memory(config, run.servers, run.credentials)
        if backend == "postgresql":
            log("lookup cost at two scales")
            lookups = asyncio.run(
                compare_lookups(
                    config.admin_dsn,
                    config.database,
                    config.sessions,
                    fixture,
                    500 if config.quick else 3_000,
                    log,
                )
            )
    if "postgresql" in config.backends:
        notes.insert(0, pinning.describe())
    text = report(config, results, lookups, memory, instructions, started, notes)
    print()
    print(text)
    log(f"saved {save(text, config, started).relative_to(ROOT)}")


if __name__ == "__main__":
    started_at = time.monotonic()
    main()
    log(f"done in {(time.monotonic() - started_at) / 60:.1f} min")
