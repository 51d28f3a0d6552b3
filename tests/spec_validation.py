"""Every response the suite sees is checked against the dialect specs in ``openapi/``.

A response must be documented for its operation and status, and its body must validate
against the documented JSON schema (formats included). Responses for paths no operation
matches (an unknown route, a wrong method) must still be the dialect's error body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from transcripts.app import DIALECTS
from transcripts.dialects import dialect_for_path
from transcripts.docs_ui import ASSET_PATHS

OPENAPI_DIR = Path(__file__).resolve().parents[1] / "openapi"
SPECS = {dialect.name: dialect.spec for dialect in DIALECTS if dialect.spec}
# Operational endpoints, and the local store's signed links, belong to no dialect.
OUTSIDE_THE_DIALECTS = {"/openapi.json", "/docs", *ASSET_PATHS, "/healthz", "/readyz", "/metrics"}
LINKS_PREFIX = "/recordings/"
ERROR_SCHEMAS = {
    dialect.name: f"#/components/schemas/{dialect.error_model.__name__}" for dialect in DIALECTS
}


@dataclass(frozen=True)
class Operation:
    spec: str
    template: str
    pattern: re.Pattern[str]
    method: str
    responses: dict[str, Any]


@cache
def _spec(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((OPENAPI_DIR / SPECS[name]).read_text())
    return document


@cache
def _registry() -> Registry:
    resources = [
        (f"urn:{name}", Resource.from_contents(_spec(name), default_specification=DRAFT202012))
        for name in SPECS
    ]
    return Registry().with_resources(resources)


@cache
def _operations() -> list[Operation]:
    operations = []
    for name in SPECS:
        for template, item in _spec(name)["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template.rstrip("/")) + "/?$")
            for method, operation in item.items():
                operations.append(
                    Operation(name, template, pattern, method.upper(), operation["responses"])
                )
    return operations


def _dialect(path: str) -> str:
    return dialect_for_path(DIALECTS, path).name


def _resolve(spec: str, node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#/").split("/")
        target: Any = _spec(spec)
        for part in pointer:
            target = target[part]
        node = target
    return node


def _validate(spec: str, schema_ref: str, body: Any, context: str) -> None:
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"urn:{spec}{schema_ref}"},
        registry=_registry(),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
    if errors:
        details = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        raise AssertionError(f"{context} does not match {SPECS[spec]}: {details}")


def check_response(response: httpx.Response) -> None:
    request = response.request
    path = request.url.path
    context = f"{request.method} {path} -> {response.status_code}"
    if path in OUTSIDE_THE_DIALECTS:
        return
    preflight = request.method == "OPTIONS" and "access-control-request-method" in request.headers
    if preflight and response.status_code != 503:
        # A CORS preflight is answered by the CORS layer (cors.py), for the browser alone:
        # no dialect's body, "OK" or Starlette's "Disallowed CORS ..." in plain text (but a
        # database it cannot reach is a 503 in the dialect's body, as everywhere).
        assert response.status_code in {200, 400}, context
        assert response.headers["content-type"].startswith("text/plain"), context
        return
    if path.startswith(LINKS_PREFIX):
        # Errors still come in the default (enveloped) body; a HEAD's answer has none.
        if response.status_code >= 400 and request.method != "HEAD":
            _validate("agents", ERROR_SCHEMAS["agents"], response.json(), context)
        return
    matching = [
        operation
        for operation in _operations()
        if operation.method == request.method and operation.pattern.match(path)
    ]
    if not matching:
        if response.status_code < 400:
            raise AssertionError(f"{context}: the operation is not in any spec under openapi/")
        spec = _dialect(path)
        _validate(spec, ERROR_SCHEMAS[spec], response.json(), context)
        return
    # The most specific template wins (/v1/sessions/{id} over nothing, literal over variable).
    operation = max(matching, key=lambda op: (op.template.count("/"), -op.template.count("{")))
    documented = operation.responses.get(str(response.status_code))
    if documented is None:
        raise AssertionError(f"{context}: status not documented in {SPECS[operation.spec]}")
    content = _resolve(operation.spec, documented).get("content")
    if content is None:
        assert not response.content, f"{context}: documented without a body"
        return
    if "text/event-stream" in content:
        # A live stream: its events are checked by tests/test_live_streams.py.
        assert response.headers["content-type"].startswith("text/event-stream"), context
        return
    assert response.headers["content-type"].startswith("application/json"), context
    schema = content["application/json"]["schema"]
    pointer = schema.get("$ref")
    if pointer is None:
        raise AssertionError(f"{context}: inline schemas are not supported here; name it")
    _validate(operation.spec, pointer, response.json(), context)


async def validate_response_hook(response: httpx.Response) -> None:
    await response.aread()
    check_response(response)
