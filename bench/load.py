"""Processes under measurement: servers pinned to one core, wrk pinned to the other."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = [
    "RATE_LIMIT",
    "Server",
    "WrkResult",
    "combine",
    "peak_rss_while",
    "pin_to_load_core",
    "postgres_backend_of",
    "run_wrk",
    "server",
]

QUANTILES_SCRIPT = Path(__file__).with_name("quantiles.lua")
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "0")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "1")
# The service counts every request against its caller's budget, as deployed; this budget
# never runs out, so the benchmark measures the counting and never meets a refusal.
RATE_LIMIT = "1000000000/minute"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    name: str
    base_url: str
    pid: int


@contextmanager
def server(
    name: str, argv: list[str], env: Mapping[str, str], log: Path, cwd: Path
) -> Iterator[Server]:
    """Run ``argv --port N`` pinned to the server core until the block ends."""
    port = _free_port()
    clean = {key: value for key, value in os.environ.items() if not key.startswith("TRANSCRIPTS_")}
    with (
        log.open("w") as output,
        subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv, "--host", "127.0.0.1", "--port", str(port)],
            env={**clean, "TRANSCRIPTS_RATE_LIMIT": RATE_LIMIT, **env},
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        running = Server(name, f"http://127.0.0.1:{port}", process.pid)
        try:
            _wait_until_ready(running, process, log)
            yield running
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(running: Server, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(running.base_url + "/", timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError(f"{running.name} exited:\n{log.read_text()}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{running.name} not ready in 30 s:\n{log.read_text()}"
                ) from None
            time.sleep(0.1)


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # HTTP status >= 400, plus socket errors and timeouts
    seconds: float
    # (percent, ms): the run's latency distribution, sampled (bench/quantiles.lua)
    quantiles: tuple[tuple[float, float], ...] = ()


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _latency_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def _parse(output: str) -> WrkResult:
    def number(pattern: str) -> str:
        match = re.search(pattern, output)
        if match is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match[1]

    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(number(r"(\d+) requests in"))
    requests_per_second = float(number(r"Requests/sec:\s+([\d.]+)"))
    return WrkResult(
        requests_per_second=requests_per_second,
        p50_ms=_latency_ms(number(r"\n\s+50%\s+(\S+)")),
        p99_ms=_latency_ms(number(r"\n\s+99%\s+(\S+)")),
        requests=requests,
        errors=(int(statuses[1]) if statuses else 0)
        + (sum(int(group) for group in socket_errors.groups()) if socket_errors else 0),
        seconds=requests / requests_per_second if requests_per_second else 0.0,
        quantiles=tuple(
            (float(percent), int(microseconds) / 1000)
            for percent, microseconds in re.findall(r"^quantile ([\d.]+) (\d+)$", output, re.M)
        ),
    )


def combine(runs: Sequence[WrkResult]) -> WrkResult:
    """Several runs against one server as one: their requests and time summed, their
    latency percentiles those of all their requests together (to the quantiles' grain)."""
    requests = sum(run.requests for run in runs)
    seconds = sum(run.seconds for run in runs)

    def percentile(percent: float) -> float:
        # The smallest sampled latency at or below which `percent` of all requests fall.
        wanted = percent / 100 * requests
        for value in sorted({value for run in runs for _, value in run.quantiles}):
            at_or_below = sum(
                run.requests * max((p for p, v in run.quantiles if v <= value), default=0) / 100
                for run in runs
            )
            if at_or_below >= wanted - 1e-9:
                return value
        raise ValueError("runs without quantiles (bench/quantiles.lua)")

    return WrkResult(
        requests_per_second=requests / seconds,
        p50_ms=percentile(50),
        p99_ms=percentile(99),
        requests=requests,
        errors=sum(run.errors for run in runs),
        seconds=seconds,
    )


def run_wrk(url: str, headers: Mapping[str, str], seconds: int, connections: int) -> WrkResult:
    """One wrk run from the load core: one thread, ``connections`` keep-alive connections."""
    header_args = [
        argument for item in headers.items() for argument in ("-H", f"{item[0]}: {item[1]}")
    ]
    command = [
        "taskset",
        "-c",
        LOAD_CPU,
        "wrk",
        "--latency",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "30s",
        "--script",
        str(QUANTILES_SCRIPT),
        *header_args,
        url,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    return _parse(completed.stdout)


def pin_to_load_core(pids: Sequence[int]) -> list[int]:
    """Move processes (the database's backends) onto the load generator's core; those moved.

    Left to the scheduler, PostgreSQL's backends ran on the server's core a varying part of
    the time, taking a varying share of it: two identical B0 processes measured against each
    other differed by up to 15% a round that way. ``taskset`` does the moving, so that
    ``BENCH_LOAD_CPU`` means the same here as for wrk. Raises OSError with taskset's reason
    when a process that still exists cannot be moved (another user's, without root).
    """
    moved = []
    for pid in pids:
        completed = subprocess.run(
            ["taskset", "-pc", LOAD_CPU, str(pid)], capture_output=True, text=True, check=False
        )
        if completed.returncode == 0:
            moved.append(pid)
        elif Path(f"/proc/{pid}").exists():
            raise OSError(completed.stderr.strip() or f"taskset exited {completed.returncode}")
    return moved


def postgres_backend_of(pid: int, database: str) -> bool:
    """Whether ``pid`` is, on this machine, a PostgreSQL backend connected to ``database``.

    pg_stat_activity's process ids are those of the server's own process namespace: a server
    in a container or on another host lists ids that mean other processes here.
    """
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return False
    # A backend's title: "postgres: [<cluster name>: ]<user> <database> <host>(<port>) <state>"
    if not title or title[0] != b"postgres:":
        return False
    words = title[2:] if len(title) > 1 and title[1].endswith(b":") else title[1:]
    return len(words) > 1 and words[1] == database.encode()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def peak_rss_while(pid: int, interval: float = 0.01) -> Iterator[dict[str, int]]:
    """Sample the process's resident set while the block runs: idle before, peak during."""
    result = {"idle_kib": _rss_kib(pid), "peak_kib": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result["peak_kib"] = max(result["peak_kib"], _rss_kib(pid))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
