"""Real server processes for end-to-end tests: the installed `transcripts` command, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TRANSCRIPTS = str(Path(sys.executable).with_name("transcripts"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)


def clean_environment() -> dict[str, str]:
    """This process's environment without the service's own settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("TRANSCRIPTS_")}


@contextmanager
def transcripts_process(
    *args: str, env: dict[str, str], cwd: Path | None = None, ready_path: str = "/openapi.json"
) -> Iterator[Server]:
    """Run `transcripts <args> --port <free port>` until the block ends (SIGINT, then wait)."""
    port = free_port()
    clean_env = clean_environment()
    with subprocess.Popen(
        [TRANSCRIPTS, *args, "--port", str(port)],
        cwd=cwd,
        env={**clean_env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        server = Server(f"http://127.0.0.1:{port}", process)
        assert process.stdout is not None
        # Drain continuously, so the server's log never blocks on a full pipe.
        reader = threading.Thread(
            target=lambda: server.output.extend(line.rstrip("\n") for line in process.stdout),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        try:
            _wait_until_ready(server, ready_path)
            yield server
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            finally:
                if process.poll() is None:
                    process.kill()
            reader.join(timeout=5)


def _wait_until_ready(server: Server, path: str) -> None:
    # A hang detector, not a speed check: a loaded two-core machine starts slowly.
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(server.base_url + path, timeout=1)
            return
        except httpx.TransportError:
            log = "\n".join(server.output)
            assert server.process.poll() is None, f"server exited:\n{log}"
            assert time.monotonic() < deadline, f"server not ready in 90 s:\n{log}"
            time.sleep(0.1)
