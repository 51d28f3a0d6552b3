"""`transcripts demo`, as a newcomer meets it: a real uvicorn process and its printed curl lines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.test_failures import closed_port

SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TRANSCRIPTS = str(Path(sys.executable).with_name("transcripts"))


@contextmanager
def demo_server(database_url: str, cwd: Path) -> Iterator[tuple[str, list[str]]]:
    port = closed_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRANSCRIPTS_")}
    env["TRANSCRIPTS_DATABASE_URL"] = database_url
    with subprocess.Popen(
        [TRANSCRIPTS, "demo", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("# API docs"):
                break
        # Keep draining, so the server's access log never blocks on a full pipe.
        drain = threading.Thread(target=lines.extend, args=(process.stdout,), daemon=True)
        drain.start()
        try:
            yield from _ready(process, port, lines)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)
            drain.join(timeout=5)


def _ready(
    process: subprocess.Popen[str], port: int, lines: list[str]
) -> Iterator[tuple[str, list[str]]]:
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None, "\n".join(lines)
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.1)
    yield base, lines


def paste(curl_line: str) -> tuple[int, str]:
    """Run a printed line the way a person pasting it into bash would, noting the status."""
    result = subprocess.run(
        ["bash", "-c", curl_line + " -o /dev/stderr -w '%{http_code}'"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(result.stdout), result.stderr


def test_demo_prints_curl_lines_that_answer_200(database_url: str, tmp_path: Path) -> None:
    with demo_server(database_url, tmp_path) as (_, lines):
        curls = [line for line in lines if line.startswith("curl ")]
        assert any("X-API-Key: sk_" in line for line in curls)
        assert any("Authorization: Bearer ey" in line for line in curls)
        first_key = re.search(r"sk_[0-9a-f]{64}", "\n".join(curls))
        for line in curls:
            status, body = paste(line)
            assert status == 200, (line, body)
            assert '"success":true' in body

    # A second run reuses the data, issues a new key and retires the old one.
    with demo_server(database_url, tmp_path) as (_base, second_lines):
        second = [line for line in second_lines if line.startswith("curl ")]
        assert SESSION_ID.findall("\n".join(second)) == SESSION_ID.findall("\n".join(curls))
        for line in second:
            assert paste(line)[0] == 200
        assert first_key is not None
        stale = httpx.get(
            second[0].split()[-1].strip("'"), headers={"X-API-Key": first_key.group(0)}
        )
        assert stale.status_code == 401


def test_long_demo_transcript(database_url: str, tmp_path: Path) -> None:
    with demo_server(database_url, tmp_path) as (_, lines):
        jwt_line = next(line for line in lines if "Bearer ey" in line)
        status, body = paste(jwt_line)
        assert status == 200
        assert body.count('"turn_index"') >= 300
