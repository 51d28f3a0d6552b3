"""Header floods and held connections: what they cost a server, before and after its bounds.

A measurement, not a test (``tests/test_server.py`` holds the pass/fail checks):

    .venv/bin/python -m bench.flood    # FLOOD_SECONDS (10), FLOOD_CLIENTS (4), FLOOD_MB (100),
                                       # FLOOD_HELD (5000)

Two servers run the same application on a fresh SQLite file, one after the other, pinned to
the server core as in ``make bench``:

- *before*: uvicorn's own httptools protocol, the flags ``transcripts serve`` had before
  ``transcripts.server`` existed;
- *after*: ``transcripts serve``, whose protocol caps the head as it arrives.

For FLOOD_SECONDS, FLOOD_CLIENTS threads each send, back to back, requests whose header block
is FLOOD_MB megabytes of one header value (1 MiB per ``sendall``), then read the answer. A
probe meanwhile opens a fresh connection every 0.1 s and times ``GET /healthz``; a sampler
reads the server's VmRSS every 10 ms. The bytes the server read from its sockets come from
``/proc/<pid>/io`` (``rchar``: uvloop reads sockets with read(2)).

Then FLOOD_HELD connections are opened, each sends the first line of a request and nothing
more, and the server's open file descriptors are counted 1 s and 12 s later (the head
timeout is 10 s), with a ``GET /healthz`` timed at each.
"""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Server, peak_rss_while, server

SECONDS = float(os.environ.get("FLOOD_SECONDS", "10"))
CLIENTS = int(os.environ.get("FLOOD_CLIENTS", "4"))
MEGABYTES = int(os.environ.get("FLOOD_MB", "100"))
HELD = int(os.environ.get("FLOOD_HELD", "5000"))
TRANSCRIPTS = str(Path(sys.executable).with_name("transcripts"))
SERVERS = {
    "before (uvicorn's httptools)": [
        sys.executable,
        "-m",
        "uvicorn",
        "transcripts.app:create_app",
        "--factory",
        "--http",
        "httptools",
        "--no-server-header",
        "--no-access-log",
        "--log-level",
        "warning",
    ],
    "after (transcripts serve)": [TRANSCRIPTS, "serve"],
}
CHUNK = b"a" * (1024 * 1024)


@dataclass
class Floods:
    count: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    sent_bytes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def flood_once(port: int) -> tuple[str, int, float]:
    """One request with a MEGABYTES header block: its status line, the bytes sent, seconds."""
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        try:
            connection.sendall(b"GET /v1/sessions HTTP/1.1\r\nHost: flood\r\nX-Flood: ")
            for _ in range(MEGABYTES):
                connection.sendall(CHUNK)
                sent += len(CHUNK)
            connection.sendall(b"\r\n\r\n")
        except OSError:
            pass  # refused part-way: the answer, if any, is waiting to be read
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except OSError as exc:
            if not answer:
                return type(exc).__name__, sent, time.monotonic() - started
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "EOF"
    return status, sent, time.monotonic() - started


def flood(port: int, until: float, floods: Floods, lock: threading.Lock) -> None:
    while True:
        status, sent, seconds = flood_once(port)
        with lock:
            floods.count += 1
            floods.statuses[status] += 1
            floods.sent_bytes.append(sent)
            floods.seconds.append(seconds)
        if time.monotonic() >= until:
            return


def probe(port: int, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                latencies.append(time.monotonic() - started)
            else:
                failures.append(str(response.status))
        except OSError as exc:
            failures.append(type(exc).__name__)
        finally:
            connection.close()
        stop.wait(0.1)


@dataclass
class Figures:
    name: str
    idle_mib: float
    peak_mib: float
    after_mib: float
    probes: list[float]
    probe_failures: list[str]
    floods: Floods
    read_bytes: int


def measure(running: Server) -> Figures:
    port = int(running.base_url.rsplit(":", 1)[1])
    for _ in range(20):
        http.client.HTTPConnection("127.0.0.1", port).request("GET", "/healthz")
    time.sleep(1)
    floods = Floods()
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    stop = threading.Event()
    read_before = _read_bytes(running.pid)
    with peak_rss_while(running.pid) as rss:
        prober = threading.Thread(target=probe, args=(port, stop, latencies, failures))
        prober.start()
        until = time.monotonic() + SECONDS
        flooders = [
            threading.Thread(target=flood, args=(port, until, floods, lock)) for _ in range(CLIENTS)
        ]
        for thread in flooders:
            thread.start()
        for thread in flooders:
            thread.join()
        stop.set()
        prober.join()
    read = _read_bytes(running.pid) - read_before
    time.sleep(2)
    after = _rss_mib(running.pid)
    return Figures(
        running.name,
        rss["idle_kib"] / 1024,
        rss["peak_kib"] / 1024,
        after,
        latencies,
        failures,
        floods,
        read,
    )


@dataclass
class Held:
    name: str
    fds_before: int
    opened: int
    fds: dict[float, int]  # seconds after the last was opened: the server's open descriptors
    healthz_ms: dict[float, float]


def hold(running: Server) -> Held:
    """HELD connections that each send a request line and stop; the server's descriptors."""
    port = int(running.base_url.rsplit(":", 1)[1])
    fds_before = _open_fds(running.pid)
    held = []
    try:
        for _ in range(HELD):
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue
            held.append(connection)
            with suppress(OSError):  # closed at once: the server is at its cap
                connection.sendall(b"GET /v1/sessions HTTP/1.1\r\n")
        opened = time.monotonic()
        fds, healthz = {}, {}
        for after in (1.0, 12.0):
            time.sleep(max(0.0, opened + after - time.monotonic()))
            fds[after] = _open_fds(running.pid)
            started = time.monotonic()
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                probe.request("GET", "/healthz")
                probe.getresponse().read()
                healthz[after] = (time.monotonic() - started) * 1000
            except OSError:
                healthz[after] = float("nan")
            finally:
                probe.close()
    finally:
        for connection in held:
            connection.close()
    return Held(running.name, fds_before, len(held), fds, healthz)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def held_table(results: list[Held]) -> str:
    lines = [
        f"{HELD:,} connections, each sending a request line and then nothing:",
        "",
        "| server | connections made | server's descriptors before | 1 s after | 12 s after"
        " | /healthz at 1 s, ms | at 12 s, ms |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.opened:,} | {r.fds_before:,} | {r.fds[1.0]:,} | {r.fds[12.0]:,}"
            f" | {r.healthz_ms[1.0]:.1f} | {r.healthz_ms[12.0]:.1f} |"
        )
    return "\n".join(lines)


def _read_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError(f"no rchar for {pid}")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def table(figures: list[Figures]) -> str:
    lines = [
        f"{CLIENTS} clients, each sending {MEGABYTES} MB header blocks back to back for"
        f" {SECONDS:g} s; GET /healthz on a fresh connection every 0.1 s meanwhile.",
        "",
        "| server | RSS idle, MiB | RSS peak, MiB | RSS 2 s after, MiB | floods | answers"
        " | client sent per flood, max MiB | server read per flood, mean KiB"
        " | /healthz answered | /healthz median ms | /healthz max ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        answers = ", ".join(f"{status} x{n}" for status, n in f.floods.statuses.most_common())
        probes = sorted(f.probes)
        median = statistics.median(probes) * 1000 if probes else float("nan")
        worst = probes[-1] * 1000 if probes else float("nan")
        failed = f" ({len(f.probe_failures)} failed)" if f.probe_failures else ""
        lines.append(
            f"| {f.name} | {f.idle_mib:.0f} | {f.peak_mib:.0f} | {f.after_mib:.0f}"
            f" | {f.floods.count} | {answers} | {max(f.floods.sent_bytes) / 2**20:.1f}"
            f" | {f.read_bytes / f.floods.count / 1024:,.0f}"
            f" | {len(probes)}{failed} | {median:.1f} | {worst:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    results: list[Figures] = []
    held: list[Held] = []
    with tempfile.TemporaryDirectory(prefix="flood-") as directory:
        work = Path(directory)
        env = {
            "TRANSCRIPTS_DATABASE_URL": f"sqlite+aiosqlite:///{work}/flood.db",
            "TRANSCRIPTS_ENVIRONMENT": "development",
            "TRANSCRIPTS_JWT_SECRET": "flood-" + "x" * 40,
        }
        clean = {
            key: value for key, value in os.environ.items() if not key.startswith("TRANSCRIPTS_")
        }
        subprocess.run([TRANSCRIPTS, "migrate"], env={**clean, **env}, cwd=work, check=True)
        for name, argv in SERVERS.items():
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            with server(name, argv, env, work / "server.log", work) as running:
                results.append(measure(running))
                held.append(hold(running))
    print(table(results))
    print()
    print(held_table(held))


if __name__ == "__main__":
    main()
