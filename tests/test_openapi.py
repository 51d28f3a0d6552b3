"""The contracts in openapi/: generated models and the service's own document must not drift."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from transcripts.app import DIALECTS, openapi_document
from transcripts.dialects import dialect_for_path

ROOT = Path(__file__).resolve().parents[1]
WIDGET_OPERATIONS = {"startAgentSession", "createFormResponse"}


def test_service_json_matches_the_app() -> None:
    committed = json.loads((ROOT / "openapi" / "service.json").read_text())
    assert committed == openapi_document(), "openapi/service.json drifted: run `make openapi`"


async def test_served_document_is_the_same(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.json() == openapi_document()


def test_no_422_and_every_error_in_its_dialects_body() -> None:
    document = openapi_document()
    assert "422" not in json.dumps(document["paths"])
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        dialect = dialect_for_path(DIALECTS, path)
        assert dialect.covers(path), path
        expected = f"#/components/schemas/{dialect.error_model.__name__}"
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert {"400", "401", "429", "431", "500", "503"} <= statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": expected}, (method, path, status)
            schemes = [scheme for scheme in operation["security"] if scheme]
            assert sorted(map(str, schemes)) == ["{'ApiKeyAuth': []}", "{'BearerAuth': []}"]
            # Anonymous access ({}) only where the browser widget comes without credentials.
            anonymous = {} in operation["security"]
            assert anonymous == (operation["operationId"] in WIDGET_OPERATIONS), path


@pytest.mark.parametrize("profile", ["agents", "anam"])
def test_generated_models_match_their_specs(profile: str) -> None:
    # --check regenerates in memory and diffs against the committed file.
    result = subprocess.run(
        [str(Path(sys.executable).with_name("datamodel-codegen")), "--profile", profile, "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"src/transcripts/generated/{profile}.py drifted from openapi/{profile}.yaml"
        f" (run `make generate`):\n{result.stdout}{result.stderr}"
    )
