"""Real S3-compatible HTTP endpoints on loopback, started by the tests.

moto's server mode is the S3 of most tests. It does not check a presigned URL's expiry, so
the expiry test uses s3rver (Node), which refuses an expired URL as AWS does.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

S3RVER = Path(__file__).parent / "s3rver" / "node_modules" / ".bin" / "s3rver"


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}", "testing", "testing")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    assert S3RVER.exists(), "s3rver is missing: `make test` installs it (npm ci in tests/s3rver)"
    node = shutil.which("node")
    assert node, "the expiry test needs Node.js (s3rver)"
    port = free_port()
    directory = tmp_path_factory.mktemp("s3rver")
    with subprocess.Popen(
        [
            node,
            str(S3RVER.resolve()),
            "-d",
            str(directory),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-s",
            "--configure-bucket",
            "expiring",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "s3rver exited"
                assert time.monotonic() < deadline, "s3rver did not start"
                time.sleep(0.1)
        try:
            yield S3Endpoint(url, "S3RVER", "S3RVER")
        finally:
            process.terminate()
            process.wait(timeout=10)
