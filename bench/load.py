"""Processes under measurement: servers pinned to one core, wrk pinned to the other."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["Server", "WrkResult", "peak_rss_while", "run_wrk", "server"]

SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "0")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "1")


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
            env={**clean, **env},
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
    return WrkResult(
        requests_per_second=float(number(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_latency_ms(number(r"\n\s+50%\s+(\S+)")),
        p99_ms=_latency_ms(number(r"\n\s+99%\s+(\S+)")),
        requests=int(number(r"(\d+) requests in")),
        errors=(int(statuses[1]) if statuses else 0)
        + (sum(int(group) for group in socket_errors.groups()) if socket_errors else 0),
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
        *header_args,
        url,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    return _parse(completed.stdout)


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
