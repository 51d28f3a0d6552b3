"""Probes, metrics and the request log: what an operator sees."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import sys
import time
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_JWT_SECRET, asgi_client, make_settings, migrate, running_app
from tests.factories import Factory, turns
from tests.servers import free_port, transcripts_process
from transcripts.observability import LATENCY_BUCKETS, AccessLog, Metrics
from transcripts.settings import Settings
from transcripts.state import app_state

SECRET_TEXT = "my card number is 4242 4242 4242 4242"


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_liveness_does_not_depend_on_the_database() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    async for app in running_app(make_settings(url, db_connect_timeout_seconds=1)):
        async with asgi_client(app) as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "unavailable", "database": "unreachable"}


async def test_probes_and_metrics_are_not_in_the_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


async def test_request_id_is_echoed_or_minted(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await _request_ids(client)


async def _request_ids(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "lb-1234.abc"})
    assert given.headers["x-request-id"] == "lb-1234.abc"
    minted = await client.get("/healthz")
    assert len(minted.headers["x-request-id"]) == 32
    hostile = await client.get("/healthz", headers={"X-Request-ID": "evil\tvalue" + "x" * 200})
    assert hostile.headers["x-request-id"] != "evil\tvalue" + "x" * 200
    assert len(hostile.headers["x-request-id"]) == 32
    errors = await client.get(f"/v1/sessions/{uuid.uuid4()}", headers={"X-Request-ID": "abc"})
    assert (errors.status_code, errors.headers["x-request-id"]) == (401, "abc")


async def test_metrics_count_by_route_template(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.user()
    session = await factory.session(await factory.character(owner))
    _, key = await factory.api_key(owner)
    for _ in range(3):
        await client.get(f"/v1/sessions/{session.session_id}", headers={"X-API-Key": key})
    await client.get(f"/v1/sessions/{uuid.uuid4()}", headers={"X-API-Key": key})

    text = (await client.get("/metrics")).text

    def sample(name: str, **labels: str) -> float:
        wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no sample {name}{{{wanted}}}")

    route = "/v1/sessions/{id}"
    assert sample("transcripts_http_requests_total", route=route, method="GET", status="200") >= 3
    assert sample("transcripts_http_requests_total", route=route, method="GET", status="404") >= 1
    assert sample("transcripts_http_request_duration_seconds_count", route=route, method="GET") >= 4
    assert str(session.session_id) not in text  # ids never become labels
    for gauge in ("size", "checked_out", "checked_in", "overflow"):
        assert f"transcripts_db_pool_{gauge} " in text


def test_metrics_expose_what_prometheus_clients_own_types_would() -> None:
    """Metrics keeps plain numbers; scrapers must see what Counter and Histogram write."""
    metrics = Metrics()
    registry = CollectorRegistry()
    requests = Counter(
        "transcripts_http_requests",
        "HTTP requests, by route template, method and status.",
        ["route", "method", "status"],
        registry=registry,
    )
    latency = Histogram(
        "transcripts_http_request_duration_seconds",
        "Time to answer, by route template and method.",
        ["route", "method"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    # Bucket bounds themselves (le is inclusive), between them, past the last, and zero.
    observations = [
        ("/v1/sessions/{id}/transcript", "GET", 200, seconds)
        for seconds in (0.0, 0.001, 0.0010001, 0.0031, 0.0031, 0.25, 9.99, 10.0, 10.5, 42.0)
    ] + [
        ("/v1/sessions/{id}/transcript", "GET", 404, 0.002),
        ("/api/agents/agent-session/", "POST", 201, 0.02),
    ]
    for route, method, status, seconds in observations:
        metrics.observe(route, method, status, seconds)
        requests.labels(route, method, str(status)).inc()
        latency.labels(route, method).observe(seconds)

    def exposed(source: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        text = generate_latest(source).decode()
        return sorted(
            (sample.name, tuple(sorted(sample.labels.items())), round(sample.value, 9))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.name.endswith("_created")  # when each series began: differs
        )

    ours = exposed(metrics.registry)
    assert ours == exposed(registry)
    transcript = (("method", "GET"), ("route", "/v1/sessions/{id}/transcript"))
    buckets = {
        dict(labels)["le"]: value
        for name, labels, value in ours
        if name.endswith("_bucket") and set(transcript) <= set(labels)
    }
    # le is inclusive: 0.0 and 0.001 itself; 0.0010001 is in the next bucket.
    assert (buckets["0.001"], buckets["0.0025"], buckets["10.0"], buckets["+Inf"]) == (2, 4, 9, 11)
    text = generate_latest(metrics.registry).decode()
    created = {
        line.split("{")[0] for line in text.splitlines() if line.split("{")[0].endswith("_created")
    }
    assert created == {
        "transcripts_http_requests_created",
        "transcripts_http_request_duration_seconds_created",
    }


@pytest.fixture
def access_lines_on(caplog: pytest.LogCaptureFixture) -> None:
    """The level `transcripts serve` configures (observability.LOGGING_CONFIG)."""
    caplog.set_level(logging.INFO, logger="transcripts")


@pytest.mark.usefixtures("access_lines_on")
async def test_one_json_log_line_per_request_without_secrets(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = await factory.user()
    session = await factory.session(
        await factory.character(owner), turns=turns(("user", SECRET_TEXT))
    )
    _, key = await factory.api_key(owner)
    token = factory.token(owner.id)
    app_state(app).access_log.flush()
    capsys.readouterr()

    await client.get(
        f"/v1/sessions/{session.session_id}/transcript",
        headers={"X-API-Key": key, "X-Request-ID": "req-42"},
    )
    await client.get(
        f"/api/billing/sessions/{session.session_id}/", headers={"Authorization": f"Bearer {token}"}
    )
    await client.get("/v1/sessions", headers={"Authorization": "Bearer not-a-jwt-but-secret"})
    app_state(app).access_log.flush()

    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line.pop("duration_ms") > 0
        assert datetime.fromisoformat(line.pop("time")).utcoffset() == timedelta(0)
    common = {"level": "INFO", "logger": "transcripts.access", "message": "request"}
    assert lines == [
        {
            **common,
            "request_id": "req-42",
            "method": "GET",
            "route": "/v1/sessions/{id}/transcript",
            "status": 200,
        },
        {
            **common,
            "request_id": "suite",
            "method": "GET",
            "route": "/api/billing/sessions/{session_id}/",
            "status": 200,
        },
        {**common, "request_id": "suite", "method": "GET", "route": "/v1/sessions", "status": 401},
    ]
    for secret in (key, token, SECRET_TEXT, "not-a-jwt-but-secret", str(session.session_id)):
        assert secret not in output


@pytest.mark.usefixtures("access_lines_on")
async def test_request_lines_are_written_within_a_quarter_second_and_at_shutdown(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            await client.get("/healthz", headers={"X-Request-ID": "by-the-timer"})
            assert "by-the-timer" not in capsys.readouterr().err  # buffered, not yet written
            await asyncio.sleep(app_state(app).access_log.flush_after + 0.25)
            assert '"request_id":"by-the-timer"' in capsys.readouterr().err
            await client.get("/healthz", headers={"X-Request-ID": "at-shutdown"})
    assert '"request_id":"at-shutdown"' in capsys.readouterr().err


@pytest.mark.usefixtures("access_lines_on")
async def test_the_access_logger_level_turns_request_lines_off(
    app: FastAPI,
    client: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await client.get("/healthz", headers={"X-Request-ID": "switched-on"})
    caplog.set_level(logging.WARNING, logger="transcripts.access")
    await client.get("/healthz", headers={"X-Request-ID": "switched-off"})
    app_state(app).access_log.flush()
    output = capsys.readouterr().err
    assert "switched-on" in output
    assert "switched-off" not in output


def test_a_served_process_writes_request_lines_to_stderr(sqlite_url: str) -> None:
    env = {
        "TRANSCRIPTS_DATABASE_URL": migrate(sqlite_url),
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
    }
    with transcripts_process("serve", env=env) as server:
        httpx.get(server.base_url + "/healthz", headers={"X-Request-ID": "from-uvicorn"})
        deadline = time.monotonic() + 5
        while not any("from-uvicorn" in line for line in server.output):
            assert time.monotonic() < deadline, "\n".join(server.output)
            time.sleep(0.05)
    [line] = [json.loads(line) for line in server.output if "from-uvicorn" in line]
    assert (line["logger"], line["route"], line["status"]) == (
        "transcripts.access",
        "/healthz",
        200,
    )


@pytest.mark.usefixtures("access_lines_on")
async def test_request_lines_are_written_whole_at_most_pipe_buf_bytes_a_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers sharing a stderr pipe never interleave halves of their lines."""
    writes: list[str] = []

    class Stderr:
        def write(self, text: str) -> None:
            writes.append(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Stderr())
    access_log = AccessLog()
    count = 0
    while not writes:  # until the buffer fills up: the timer cannot fire inside this loop
        access_log.request(f"request-{count}", "GET", "/v1/sessions/{id}/transcript", 200, 1.5)
        count += 1
    access_log.request("last", "GET", "/healthz", 200, 0.1)
    access_log.flush()

    assert all(len(text.encode()) <= select.PIPE_BUF and text.endswith("\n") for text in writes)
    written = [json.loads(line)["request_id"] for text in writes for line in text.splitlines()]
    assert written == [f"request-{index}" for index in range(count)] + ["last"]
