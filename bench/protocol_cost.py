"""The guarded protocol's cost per request, against uvicorn's own httptools protocol.

A measurement, not a test. Both protocols serve one keep-alive connection in process, on
uvloop, through a transport that discards what it is given, for an application that answers
a small 200 at once, so that the protocol's own work is most of what is measured:

- **instructions** per request, counted by callgrind (as ``bench/instructions.py`` counts
  reads): after a warm-up, the instructions of PROTOCOL_COUNTED requests, less those of an
  empty count, divided by their number. They hardly move with the machine's load.
- **CPU time** per request (``time.process_time``), the protocols alternating over
  PROTOCOL_ROUNDS rounds of PROTOCOL_REQUESTS requests; the median and the range. It moves
  with the machine (caches, other tenants of the core), so read it beside the counts.

    .venv/bin/python -m bench.protocol_cost      # a few minutes; without valgrind, CPU time only

A GET is what the hot read is; a POST with a small body takes the path that watches for a
body left unread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench.instructions import read_dumps
from transcripts.server import guarded_protocol
from transcripts.settings import Settings

REQUESTS = int(os.environ.get("PROTOCOL_REQUESTS", "20000"))
ROUNDS = int(os.environ.get("PROTOCOL_ROUNDS", "7"))
COUNTED = int(os.environ.get("PROTOCOL_COUNTED", "2000"))
REQUEST = {
    "GET": (
        b"GET /v1/sessions/6f0c1f5e-8b4a-4a53-9d43-2f4f1f0f6c11/transcript HTTP/1.1\r\n"
        b"Host: api.example.com\r\nAuthorization: Bearer sk_live_0123456789abcdef\r\n"
        b"Accept: */*\r\nUser-Agent: bench\r\n\r\n"
    ),
    "POST": (
        b"POST /api/agents/agent-session/6f0c1f5e/turns/ HTTP/1.1\r\nHost: api.example.com\r\n"
        b"X-API-Key: sk_live_0123456789abcdef\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n[]"
    ),
}
UVICORN = "uvicorn HttpToolsProtocol"
GUARDED = "GuardedHttpToolsProtocol"
FLOOR = "floor"


def protocols() -> dict[str, Callable[..., HttpToolsProtocol]]:
    return {UVICORN: HttpToolsProtocol, GUARDED: guarded_protocol(Settings(_env_file=None))}


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["method"] == "POST":
        await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


class Transport(asyncio.Transport):
    """Discards what it is given; reports a loopback peer."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )


class Connection:
    """One keep-alive connection to a fresh protocol."""

    def __init__(self, factory: Callable[..., HttpToolsProtocol]) -> None:
        config = Config(app, lifespan="off", log_config=None, access_log=False)
        config.load()
        self.state = ServerState()
        self.protocol = factory(
            config=config, server_state=self.state, app_state={}, _loop=asyncio.get_running_loop()
        )
        self.transport = Transport()
        self.protocol.connection_made(self.transport)

    async def serve(self, request: bytes, count: int) -> None:
        for _ in range(count):
            self.protocol.data_received(request)
            await asyncio.gather(*self.state.tasks)
        assert not self.transport.closing, "the protocol closed a keep-alive connection"

    def close(self) -> None:
        self.protocol.connection_lost(None)


# ---------------------------------------------------------------- CPU time


async def cpu_times() -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    factories = protocols()
    for _ in range(ROUNDS):
        for method, request in REQUEST.items():
            for name, factory in factories.items():
                connection = Connection(factory)
                await connection.serve(request, 100)
                started = time.process_time()
                await connection.serve(request, REQUESTS)
                elapsed = time.process_time() - started
                connection.close()
                results.setdefault((method, name), []).append(elapsed / REQUESTS)
    return results


# ---------------------------------------------------------------- instructions


def _callgrind(*arguments: str) -> None:
    subprocess.run(
        ["callgrind_control", *arguments, str(os.getpid())],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def count_inside() -> None:
    """What runs in valgrind: a dump per method and protocol, and the empty count."""
    first = True
    for method, request in REQUEST.items():
        for name, factory in protocols().items():
            connection = Connection(factory)
            await connection.serve(request, 300)
            if first:
                _callgrind("--instr=on")
                _callgrind("--zero")
                _callgrind(f"--dump={FLOOR}")
                first = False
            _callgrind("--zero")
            await connection.serve(request, COUNTED)
            _callgrind(f"--dump={method}/{name}")
            connection.close()


def instructions() -> dict[tuple[str, str], float]:
    with tempfile.TemporaryDirectory(prefix="protocol-cost-") as directory:
        out = Path(directory) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.protocol_cost",
                "--inside",
            ],
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
            capture_output=True,
            timeout=3600,
        )
        counts = read_dumps(out)
    floor = counts.pop(FLOOR)
    return {
        tuple(label.split("/", 1)): (total - floor) / COUNTED  # type: ignore[misc]
        for label, total in counts.items()
    }


# ---------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inside", action="store_true", help="(what valgrind runs)")
    if parser.parse_args().inside:
        uvloop.run(count_inside())
        return
    counted = {}
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        print("counting instructions under callgrind ...", file=sys.stderr, flush=True)
        counted = instructions()
    print("measuring CPU time ...", file=sys.stderr, flush=True)
    times = uvloop.run(cpu_times())
    print(
        f"Per request on one keep-alive connection, in process on uvloop, a 200 answered at"
        f" once: instructions ({COUNTED:,} requests under callgrind) and CPU time (median and"
        f" range of {ROUNDS} rounds of {REQUESTS:,}).\n"
    )
    print("| request | protocol | instructions | CPU µs, median | CPU µs, range |")
    print("|---|---|--:|--:|--:|")
    for (method, name), costs in times.items():
        count = f"{counted[(method, name)]:,.0f}" if counted else "-"
        print(
            f"| {method} | {name} | {count} | {statistics.median(costs) * 1e6:.2f}"
            f" | {min(costs) * 1e6:.2f}-{max(costs) * 1e6:.2f} |"
        )
    print()
    for method in REQUEST:
        base, guarded = (statistics.median(times[(method, name)]) for name in (UVICORN, GUARDED))
        added = f"{(guarded - base) * 1e6:+.2f} µs"
        if counted:
            extra = counted[(method, GUARDED)] - counted[(method, UVICORN)]
            added = (
                f"{extra:+,.0f} instructions ({extra / counted[(method, UVICORN)]:+.1%}), {added}"
            )
        print(f"- {method}: the guarded protocol adds {added} a request")


if __name__ == "__main__":
    main()
