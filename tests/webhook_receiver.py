"""A webhook receiver for tests and benches: a small real HTTP server on loopback that
verifies every delivery with the ``standardwebhooks`` library, as a customer's would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["Delivery", "Receiver", "receiver"]


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]
    received_at: float  # time.time()


class Receiver:
    """Answers the statuses in ``answers`` to the first requests, then 200. A request whose
    signature does not verify with any of ``secrets`` is recorded in ``rejected`` and
    answered 400 (a failed attempt, as a real receiver's refusal would be)."""

    def __init__(self, answers: tuple[int, ...] = ()) -> None:
        self.answers = list(answers)
        self.secrets: list[str] = []
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.requests += 1
            status = self.answers.pop(0) if self.answers else 200
            secrets = list(self.secrets)
        payload = None
        for secret in secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        if payload is None:
            with self.lock:
                self.rejected.append(headers.get("webhook-id", "?"))
            return 400
        if 200 <= status < 300:
            with self.lock:
                self.deliveries.append(
                    Delivery(headers["webhook-id"], headers, body, payload, time.time())
                )
        return status

    def start(self, port: int = 0) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                status = owner._handle(headers, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # http.server's default listen backlog is 5: a burst of new connections would
            # see SYNs dropped and retried a second later, as no production server would.
            request_queue_size = 128

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def of_type(self, event_type: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.payload["type"] == event_type]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Until ``condition()`` holds (a hang detector, not a speed check)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, (
                f"not received in {timeout} s: {self.requests} requests, "
                f"{len(self.deliveries)} accepted, rejected {self.rejected}"
            )
            time.sleep(0.02)

    @staticmethod
    def body_json(delivery: Delivery) -> Any:
        return json.loads(delivery.body)


@contextmanager
def receiver(answers: tuple[int, ...] = (), port: int = 0) -> Iterator[Receiver]:
    running = Receiver(answers)
    running.start(port)
    try:
        yield running
    finally:
        running.stop()
