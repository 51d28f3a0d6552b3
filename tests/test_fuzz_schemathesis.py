"""Schemathesis against the service's own OpenAPI document: every operation of both dialects,
with an API key, with a JWT and with no (or fuzzed) credentials, on both databases.

Each operation gets Schemathesis's coverage cases (every boundary and wrong type its
schema implies, and the methods it does not declare), then Hypothesis-generated valid and
invalid requests. No answer may be a 5xx or a 422; status, content type and body must be
what the document says; an undeclared method must be a 405 with ``Allow``. Path, query and
body values are often swapped for the ids of real rows the caller owns, so the requests
reach past the 404 into the code that reads and writes data.

Requests go through the suite's ASGI client on the test's event loop (the app's database
pool lives there); Hypothesis drives them from a worker thread. Everything is
derandomized: CI sees the same cases every run. ``TRANSCRIPTS_TEST_FUZZ_EXAMPLES`` raises
the number of generated examples for a deeper search.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.factories import SEED_USAGE, Factory, turns
from transcripts.app import openapi_document

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {
    operation.definition.raw["operationId"]: operation
    for operation in (result.ok() for result in SCHEMA.get_all_operations())
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
UNDECLARED_METHOD_CHECKS = [not_a_server_error, unsupported_method]
# Per operation, credential kind and generation mode (valid, invalid), on top of the
# coverage cases: the whole file stays near a minute per database.
MAX_EXAMPLES = int(os.environ.get("TRANSCRIPTS_TEST_FUZZ_EXAMPLES", "12"))
WIDGET_ORIGIN = "https://widget.example"
CREDENTIAL_HEADERS = {"authorization", "x-api-key"}

Send = Callable[[dict[str, Any]], httpx.Response]
Choose = Callable[[str, list[Any]], Any]  # (what, candidates) -> a candidate, or None


@dataclass(frozen=True)
class World:
    """Rows the caller owns, for the fuzzer to aim at."""

    headers: dict[str, str]
    session_ids: list[str]
    slug: str
    persona_id: str
    spare_key_id: int


async def build_world(factory: Factory, credentials: str) -> World:
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    # Not the key in use: revoking it must not lock the rest of the run out.
    spare_key_id, _ = await factory.api_key(owner)
    character = await factory.character(owner, allowed_origins=[WIDGET_ORIGIN])
    finalized = await factory.session(
        character,
        user_id=owner.id,
        turns=turns(("assistant", "Hi! How can I help?"), ("user", "Tell me a joke.")),
        usage=SEED_USAGE,
        recording_url="s3://fuzz/recording.mp4",
    )
    in_progress = await factory.session(character, turns=turns(("assistant", "Hello")))
    headers = {
        "key": {"X-API-Key": key},
        "jwt": {"Authorization": f"Bearer {factory.token(owner.id)}"},
        "none": {},
    }[credentials]
    return World(
        headers=headers,
        session_ids=[str(finalized.session_id), str(in_progress.session_id)],
        slug=character.slug,
        persona_id=str(character.public_id),
        spare_key_id=spare_key_id,
    )


def real_values(world: World) -> dict[str, list[Any]]:
    """For each parameter or body field that names a row: the caller's own rows."""
    return {
        "session_id": world.session_ids,
        "id": world.session_ids,
        "slug": [world.slug],
        "api_key_id": [world.spare_key_id],
        "personaId": [world.persona_id],
        "character_slug": [world.slug],
        "agent": [world.slug],
    }


def aim_at_real_rows(case: schemathesis.Case, world: World, choose: Choose) -> None:
    real = real_values(world)
    containers: list[dict[str, Any] | None] = [case.path_parameters, case.query]
    if isinstance(case.body, dict):
        containers.append(case.body)
    for container in containers:
        for name in list(container or {}):
            if name in real:
                replacement = choose(name, real[name])
                if replacement is not None:
                    container[name] = replacement  # type: ignore[index]


def prepare(case: schemathesis.Case, world: World, credentials: str, widget: bool) -> None:
    if credentials != "none":
        # Ours replace whatever the fuzzer made up for the security schemes.
        case.headers = {
            name: value
            for name, value in (case.headers or {}).items()
            if name.lower() not in CREDENTIAL_HEADERS
        }
    elif widget:
        case.headers = {**(case.headers or {}), "Origin": WIDGET_ORIGIN}


def check(case: schemathesis.Case, world: World, send: Send) -> None:
    request = case.as_transport_kwargs(base_url="http://testserver", headers=world.headers)
    response = send(request)
    assert response.status_code != 422, "the service never answers 422"
    declared = case.method.upper() == case.operation.method.upper()
    case.validate_response(response, checks=CHECKS if declared else UNDECLARED_METHOD_CHECKS)


def run_coverage_cases(operation_id: str, world: World, credentials: str, send: Send) -> None:
    operation = OPERATIONS[operation_id]
    cases = SCHEMA.iter_coverage_cases(
        operation,
        generation_modes=list(schemathesis.GenerationMode),
        generation_config=SCHEMA.config.generation_for(operation=operation),
    )
    for number, case in enumerate(cases):
        # Every other case aims at the caller's own rows, the first of each kind.
        if number % 2:
            aim_at_real_rows(case, world, lambda _name, candidates: candidates[0])
        prepare(case, world, credentials, widget=number % 4 == 1)
        check(case, world, send)


def run_generated_cases(operation_id: str, world: World, credentials: str, send: Send) -> None:
    operation = OPERATIONS[operation_id]
    for mode in schemathesis.GenerationMode:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        def fuzz(case: schemathesis.Case, data: st.DataObject) -> None:
            def choose(name: str, candidates: list[Any]) -> Any:
                return data.draw(st.none() | st.sampled_from(candidates), label=name)

            aim_at_real_rows(case, world, choose)
            prepare(case, world, credentials, widget=data.draw(st.booleans(), label="widget"))
            check(case, world, send)

        fuzz()


def _httpx_arguments(request: dict[str, Any]) -> dict[str, Any]:
    arguments = {
        "method": request["method"],
        "url": request["url"],
        "headers": request.get("headers") or {},
        "params": request.get("params") or None,
    }
    if "json" in request:
        arguments["json"] = request["json"]
    elif request.get("data") is not None:
        data = request["data"]
        arguments["content"] = data if isinstance(data, bytes) else str(data).encode()
    return arguments


@pytest.mark.parametrize("credentials", ["key", "jwt", "none"])
@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
async def test_every_operation_answers_as_documented(
    client: httpx.AsyncClient, factory: Factory, operation_id: str, credentials: str
) -> None:
    world = await build_world(factory, credentials)
    loop = asyncio.get_running_loop()

    def send(request: dict[str, Any]) -> httpx.Response:
        call = client.request(**_httpx_arguments(request))
        return asyncio.run_coroutine_threadsafe(call, loop).result(timeout=60)

    await asyncio.to_thread(run_coverage_cases, operation_id, world, credentials, send)
    await asyncio.to_thread(run_generated_cases, operation_id, world, credentials, send)
