"""The server's own bounds (``transcripts.server``), against a real ``transcripts serve``:
header floods, slow heads, too many connections, overload, and bodies left unread.

Clients here speak raw HTTP over sockets, as attackers do. The bounds that come from
time ("within N seconds") are generous: they only tell a refusal from a hang.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET, migrate
from tests.servers import Server, transcripts_process

HEAD_CAP = 16 * 1024
ANAM_431 = {
    "statusCode": 431,
    "error": "Request Header Fields Too Large",
    "message": "The request head exceeds 16384 bytes",
}
FLOOD_BYTES = 100 * 1024 * 1024
MiB = 1024 * 1024


def serve(tmp_path_factory: pytest.TempPathFactory, **settings: str) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("server")
    env = {
        "TRANSCRIPTS_DATABASE_URL": migrate(f"sqlite+aiosqlite:///{directory}/t.db"),
        "TRANSCRIPTS_ENVIRONMENT": "development",
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        **{f"TRANSCRIPTS_{name.upper()}": value for name, value in settings.items()},
    }
    with transcripts_process("serve", env=env, cwd=directory, ready_path="/healthz") as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory, header_timeout_seconds="2", body_timeout_seconds="2")


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Few connections and requests in flight, and a head timeout out of the way."""
    yield from serve(
        tmp_path_factory,
        max_connections="8",
        max_requests_in_flight="2",
        header_timeout_seconds="120",
        body_timeout_seconds="120",
    )


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Fewer connections than requests in flight: every connection can be busy at once."""
    yield from serve(
        tmp_path_factory,
        max_connections="3",
        max_requests_in_flight="100",
        header_timeout_seconds="120",
        body_timeout_seconds="120",
    )


# ------------------------------------------------------------------ raw HTTP


def address(server: Server) -> tuple[str, int]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return host, int(port)


def read_until_closed(connection: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails on a hang."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the connection is still open after {within} s: {received!r}"
        connection.settimeout(remaining)
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            continue
        if not chunk:
            return received
        received += chunk


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, json.loads(body) if body else None)


def get(server: Server, path: str, *, close: bool = True) -> Answer:
    """One request; without ``close``, only the server's own choice ends the connection."""
    closing = "Connection: close\r\n" if close else ""
    with socket.create_connection(address(server)) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{closing}\r\n".encode())
        return parse(read_until_closed(connection, within=10))


def healthz(server: Server, within: float = 10) -> int:
    return httpx.get(server.base_url + "/healthz", timeout=within).status_code


def served_again(server: Server, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if healthz(server) == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# ------------------------------------------------------------------ head size


def test_a_head_past_the_cap_is_refused_before_it_ends(server: Server) -> None:
    """A head still unfinished at 20 KiB is answered at once, in the dialect of its path."""
    for path, expected in [
        ("/v1/sessions", ANAM_431),
        (
            "/api/billing/usage/",
            {
                "success": False,
                "message": "The request head exceeds 16384 bytes.",
                "data": None,
                "errors": {"detail": ["The request head exceeds 16384 bytes."]},
            },
        ),
    ]:
        with socket.create_connection(address(server)) as connection:
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nX-Big: ".encode())
            connection.sendall(b"a" * (20 * 1024))  # and never the end of the head
            answer = parse(read_until_closed(connection, within=10))
        assert (answer.status, answer.headers["connection"]) == (431, "close")
        assert answer.body == expected


def responses(raw: bytes) -> list[Answer]:
    """The answers in what a pipelined connection received, in order."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(parse(head + b"\r\n\r\n").headers.get("content-length", "0"))
        answers.append(parse(head + b"\r\n\r\n" + rest[:length]))
        raw = rest[length:]
    return answers


def test_pipelined_heads_in_one_write_each_have_the_whole_budget(server: Server) -> None:
    """150 heads of 240 bytes, 36 KiB in one write, over twice the cap: each is its own."""
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    last = head.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
    with socket.create_connection(address(server)) as connection:
        connection.sendall(head * 149 + last)
        answers = responses(read_until_closed(connection, within=30))
    assert [answer.status for answer in answers] == [200] * 150


@pytest.mark.parametrize("first", [60, 4_000, 8_100])  # head1 within the 8 KiB of headers
def test_a_pipelined_head_over_the_cap_is_refused_whatever_came_before_it(
    server: Server, first: int
) -> None:
    """The second head's bytes in the first head's read count toward its own cap: it is
    refused by the server (not let through to the application's own 431) though it is
    only 17 KiB, and the first is answered."""
    pad = b"X-Pad: " + b"p" * max(0, first - 60) + b"\r\n" if first > 60 else b""
    one = b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + pad + b"\r\n"
    two = (
        b"GET /v1/sessions HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"b" * (17 * 1024) + b"\r\n\r\n"
    )
    with socket.create_connection(address(server)) as connection:
        connection.sendall(one + two)
        answers = responses(read_until_closed(connection, within=30))
    assert [answer.status for answer in answers] == [200, 431]
    assert answers[1].headers["connection"] == "close"
    assert answers[1].body == ANAM_431


@pytest.mark.parametrize("split", [0.5, 0.99])
def test_a_pipelined_head_that_starts_in_the_first_heads_read_has_one_cap(
    server: Server, split: float
) -> None:
    """The first read holds a small head and most of a second one; the rest of the second
    comes in a later read. The cap counts the second head's bytes of both reads."""
    one = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    two = (
        b"GET /v1/sessions HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"b" * (20 * 1024) + b"\r\n\r\n"
    )
    cut = int(HEAD_CAP * split) - len(one)
    with socket.create_connection(address(server)) as connection:
        connection.sendall(one + two[:cut])
        time.sleep(0.5)
        with suppress(OSError):  # the server may have refused the head already
            connection.sendall(two[cut:])
        answers = responses(read_until_closed(connection, within=30))
    assert [answer.status for answer in answers] == [200, 431]
    assert answers[1].body == ANAM_431


def test_a_head_under_the_cap_still_meets_the_applications_limit(server: Server) -> None:
    with socket.create_connection(address(server)) as connection:
        connection.sendall(b"GET /v1/sessions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
        connection.sendall(b"X-Big: " + b"a" * (12 * 1024) + b"\r\n\r\n")
        answer = parse(read_until_closed(connection, within=10))
    assert answer.status == 431
    assert answer.body["message"] == "The request headers exceed 8192 bytes in all"


@dataclass
class Floods:
    answers: list[Answer] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def flood(server: Server, floods: Floods, lock: threading.Lock, until: float) -> None:
    """100 MB header blocks, one after another, each on a new connection."""
    chunk = b"a" * MiB
    try:
        while True:
            sent = 0
            with socket.create_connection(address(server)) as connection:
                try:
                    connection.sendall(b"GET /v1/sessions HTTP/1.1\r\nHost: t\r\nX-Flood: ")
                    while sent < FLOOD_BYTES:
                        connection.sendall(chunk)
                        sent += len(chunk)
                    connection.sendall(b"\r\n\r\n")
                except OSError:
                    pass  # closed on us: the answer is waiting to be read
                answer = parse(read_until_closed(connection, within=60))
            with lock:
                floods.answers.append(answer)
                floods.sent.append(sent)
            if time.monotonic() > until:
                return
    except BaseException as exc:  # reported by the test, not lost in a thread
        with lock:
            floods.errors.append(exc)


def test_parallel_100_mb_header_floods_cost_no_memory(server: Server) -> None:
    """Four clients sending 100 MB header blocks back to back: each is refused within the
    cap, the server's resident memory stays put, and /healthz answers meanwhile."""
    pid = server.process.pid
    lock = threading.Lock()
    warm_up = Floods()
    flood(server, warm_up, lock, until=0)  # the refusal's own first-use allocations
    assert not warm_up.errors, warm_up.errors
    idle = rss_kib(pid)
    peak = idle
    floods = Floods()
    until = time.monotonic() + 3
    flooders = [
        threading.Thread(target=flood, args=(server, floods, lock, until)) for _ in range(4)
    ]
    for thread in flooders:
        thread.start()
    probes = []
    while any(thread.is_alive() for thread in flooders):
        peak = max(peak, rss_kib(pid))
        probes.append(healthz(server, within=10))
        time.sleep(0.05)
    for thread in flooders:
        thread.join()
    assert not floods.errors, floods.errors
    assert len(floods.answers) >= 4
    assert all(answer.status == 431 for answer in floods.answers)
    assert all(answer.body == ANAM_431 for answer in floods.answers)
    # What the client got into the sockets' buffers before the server closed on it.
    assert max(floods.sent) < FLOOD_BYTES // 2, floods.sent
    assert probes
    assert set(probes) == {200}
    assert peak - idle < 16 * 1024, f"RSS grew by {(peak - idle) / 1024:.0f} MiB"


# ------------------------------------------------------------------ head time


def test_a_head_sent_a_byte_a_second_is_cut_off(server: Server) -> None:
    """Slowloris: each byte comes before any idle timer would fire; the head never ends."""
    head = b"GET /v1/sessions HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 15  # 60 bytes
    received = b""
    with socket.create_connection(address(server)) as connection:
        for byte in head:  # one a second, until the server answers or 60 s have passed
            readable, _, _ = select.select([connection], [], [], 1.0)
            if readable:
                received = read_until_closed(connection, within=10)
                break
            try:
                connection.send(bytes([byte]))
            except OSError:
                received = read_until_closed(connection, within=10)
                break
        else:
            pytest.fail("the server was still reading a head sent a byte a second after 60 s")
    answer = parse(received)
    assert (answer.status, answer.headers["connection"]) == (408, "close")
    # In Anam's words ("... in time") if the path got as far as /v1/, else the envelope's.
    assert answer.body["message"].removesuffix(".") == "The request head did not arrive in time"


def test_a_connection_that_sends_nothing_is_closed_silently(server: Server) -> None:
    with socket.create_connection(address(server)) as connection:
        assert read_until_closed(connection, within=30) == b""


def test_a_keep_alive_connection_in_use_outlives_the_head_timeout(server: Server) -> None:
    """Each head's time starts at the previous response, not at the connection's start."""
    connection = http.client.HTTPConnection(*address(server), timeout=10)
    try:
        for _ in range(4):  # 4.5 s in all, past two of the server's 2 s head timeouts
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            assert not response.will_close
            time.sleep(1.5)
    finally:
        connection.close()


# ------------------------------------------------------------------ body time

SLOW_BODY = "The request body did not arrive in time."


def post_head(length: int) -> bytes:
    """A write's head: the route reads the body before it looks at credentials."""
    return (
        b"POST /api/ai-characters/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def test_a_body_that_never_comes_is_cut_off(server: Server) -> None:
    with socket.create_connection(address(server)) as connection:
        connection.sendall(post_head(100) + b'{"slug": ')
        answer = parse(read_until_closed(connection, within=30))
    assert (answer.status, answer.headers["connection"]) == (408, "close")
    assert answer.body == {
        "success": False,
        "message": SLOW_BODY,
        "data": None,
        "errors": {"detail": [SLOW_BODY]},
    }


def test_a_body_sent_a_byte_at_a_time_is_cut_off(server: Server) -> None:
    """Each byte comes long before any idle timer would fire; the body never ends."""
    received = b""
    sent = 0
    with socket.create_connection(address(server)) as connection:
        connection.sendall(post_head(10_000))
        while sent < 120:  # two a second, for 60 s at most
            readable, _, _ = select.select([connection], [], [], 0.5)
            if readable:
                break
            try:
                connection.send(b" ")
            except OSError:
                break
            sent += 1
        else:
            pytest.fail("the server was still reading a body sent two bytes a second after 60 s")
        received = read_until_closed(connection, within=10)
    answer = parse(received)
    assert (answer.status, answer.headers["connection"]) == (408, "close")
    assert answer.body["message"] == SLOW_BODY
    assert sent < 20, f"{sent} bytes went in before the 408"


def test_a_steady_body_may_take_longer_than_the_body_timeout(server: Server) -> None:
    """4 s for 4,000 bytes against a 2 s timeout: each 500 bytes buys another second."""
    body = b'{"slug": "steady", "name": "' + b"n" * 3_970 + b'"}'
    with socket.create_connection(address(server)) as connection:
        connection.sendall(post_head(len(body)))
        for start in range(0, len(body), 500):
            time.sleep(0.5)
            connection.sendall(body[start : start + 500])
        answer = parse(read_until_closed(connection, within=30))
    # Read whole, then refused for its missing credentials: not cut off as slow.
    assert answer.status == 401, answer


def test_a_client_waiting_for_100_continue_is_not_cut_off(server: Server) -> None:
    """The time before the route asks for the body is not the client's."""
    with socket.create_connection(address(server)) as connection:
        connection.sendall(post_head(2)[:-2] + b"Expect: 100-continue\r\n\r\n")
        connection.settimeout(10)
        assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue")
        time.sleep(1)
        connection.sendall(b"{}")
        answer = parse(read_until_closed(connection, within=30))
    assert answer.status == 401, answer


# ------------------------------------------------------------------ upgrades


def test_a_websocket_upgrade_is_answered_as_plain_http(server: Server) -> None:
    """No route is a websocket: an Upgrade is not handed to a websocket library (which would
    take the connection out of this protocol's bounds), it is an ordinary request."""
    with socket.create_connection(address(server)) as connection:
        connection.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        connection.settimeout(10)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            assert chunk, received
            received += chunk
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 200 OK", received
    assert b"sec-websocket-accept" not in received.lower()


# ------------------------------------------------------------------ forwarded addresses


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        # The default: a proxy on the same host is believed, each address has its budget.
        (None, [401, 401, 401]),
        # Loopback not among the proxies: its X-Forwarded-For is ignored, one budget.
        ("10.0.0.1,192.168.0.0/16", [401, 401, 429]),
    ],
)
def test_x_forwarded_for_is_believed_only_from_the_configured_proxies(
    tmp_path_factory: pytest.TempPathFactory, trusted: str | None, expected: list[int]
) -> None:
    settings = {"rate_limit_anonymous": "2/minute"}
    if trusted is not None:
        settings["forwarded_allow_ips"] = trusted
    for server in serve(tmp_path_factory, **settings):
        statuses = [
            httpx.get(
                server.base_url + "/v1/sessions",
                headers={"X-Forwarded-For": f"203.0.113.{number}"},
                timeout=10,
            ).status_code
            for number in range(3)
        ]
    assert statuses == expected


# ------------------------------------------------------------------ connections, overload


def in_flight(stack: ExitStack, server: Server) -> socket.socket:
    """A connection whose request is being answered: the route reads the body first, says
    so (100 Continue), and waits for a body that never comes."""
    connection = stack.enter_context(socket.create_connection(address(server)))
    connection.sendall(
        b"POST /api/ai-characters/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    )
    connection.settimeout(10)
    assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue")
    return connection


def test_at_the_connection_cap_those_waiting_longest_make_room(small_server: Server) -> None:
    """Connections that send a head slowly cannot keep out a client that sends it at once."""
    with ExitStack() as stack:
        slow = []
        for number in range(8):
            connection = stack.enter_context(socket.create_connection(address(small_server)))
            connection.sendall(b"GET /v1/sessions HTTP/1.1\r\n")  # and no more, for now
            slow.append(connection)
            if number == 0:
                time.sleep(0.2)  # the oldest by far: the one to make room
        assert get(small_server, "/healthz").status == 200
        oldest = parse(read_until_closed(slow[0], within=10))
        assert (oldest.status, oldest.headers["connection"]) == (408, "close")
        slow[-1].sendall(b"Host: t\r\nConnection: close\r\n\r\n")
        assert parse(read_until_closed(slow[-1], within=10)).status == 401
    assert served_again(small_server)


def test_at_the_connection_cap_with_every_one_busy_a_new_one_is_closed(
    busy_server: Server,
) -> None:
    with ExitStack() as stack:
        for _ in range(3):
            in_flight(stack, busy_server)
        with socket.create_connection(address(busy_server)) as extra:
            assert read_until_closed(extra, within=10) == b""
    assert served_again(busy_server)


def test_requests_past_the_in_flight_cap_get_503_in_their_dialect(small_server: Server) -> None:
    with ExitStack() as stack:
        for _ in range(2):
            in_flight(stack, small_server)
        answers = {
            path: get(small_server, path, close=False)
            for path in ("/v1/sessions", "/api/billing/usage/")
        }
    for answer in answers.values():
        assert answer.status == 503
        assert (answer.headers["retry-after"], answer.headers["connection"]) == ("1", "close")
    assert answers["/v1/sessions"].body == {
        "statusCode": 503,
        "error": "Service Unavailable",
        "message": "The server is at capacity; retry shortly",
    }
    assert answers["/api/billing/usage/"].body["errors"] == {
        "detail": ["The server is at capacity; retry shortly."]
    }
    assert served_again(small_server)


# ------------------------------------------------------------------ bodies left unread


def test_a_413_on_a_chunked_upload_closes_the_connection(server: Server) -> None:
    """The rest of the body is neither read nor parsed: the connection is closed."""
    total = 64 * MiB
    chunk = b"%x\r\n" % (64 * 1024) + b"a" * (64 * 1024) + b"\r\n"
    sent = [0]
    failures: list[BaseException] = []

    def upload(connection: socket.socket) -> None:
        try:
            connection.sendall(
                b"POST /api/ai-characters/ HTTP/1.1\r\nHost: t\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            while sent[0] < total:
                connection.sendall(chunk)
                sent[0] += 64 * 1024
        except OSError:
            pass  # the server closed the connection
        except BaseException as exc:
            failures.append(exc)

    with socket.create_connection(address(server)) as connection:
        uploader = threading.Thread(target=upload, args=(connection,))
        uploader.start()
        try:
            answer = parse(read_until_closed(connection, within=30))
        finally:
            with suppress(OSError):  # already reset by the server
                connection.shutdown(socket.SHUT_RDWR)
            uploader.join()
    assert not failures, failures
    assert (answer.status, answer.headers["connection"]) == (413, "close")
    assert answer.body["message"] == "The request body exceeds 1048576 bytes."
    assert sent[0] < total // 2, f"{sent[0] / MiB:.0f} MiB went into the connection"
