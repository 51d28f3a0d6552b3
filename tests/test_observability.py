"""Probes, metrics and the request log: what an operator sees."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory, turns
from tests.servers import free_port

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


async def test_one_json_friendly_log_line_per_request_without_secrets(
    client: httpx.AsyncClient, factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await factory.user()
    session = await factory.session(
        await factory.character(owner), turns=turns(("user", SECRET_TEXT))
    )
    _, key = await factory.api_key(owner)
    token = factory.token(owner.id)
    caplog.set_level(logging.INFO, logger="transcripts")

    await client.get(
        f"/v1/sessions/{session.session_id}/transcript",
        headers={"X-API-Key": key, "X-Request-ID": "req-42"},
    )
    await client.get(
        f"/api/billing/sessions/{session.session_id}/", headers={"Authorization": f"Bearer {token}"}
    )
    await client.get("/v1/sessions", headers={"Authorization": "Bearer not-a-jwt-but-secret"})

    access = [record for record in caplog.records if record.name == "transcripts.access"]
    assert len(access) == 3
    first = access[0]
    assert (first.request_id, first.method, first.route, first.status) == (  # type: ignore[attr-defined]
        "req-42",
        "GET",
        "/v1/sessions/{id}/transcript",
        200,
    )
    assert first.duration_ms > 0  # type: ignore[attr-defined]
    everything = caplog.text + json.dumps(
        [record.__dict__ for record in caplog.records], default=str
    )
    for secret in (key, token, SECRET_TEXT, "not-a-jwt-but-secret", str(session.session_id)):
        assert secret not in everything
