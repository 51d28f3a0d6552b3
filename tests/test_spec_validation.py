"""The response validator itself: it must fail on what the specs do not allow."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.spec_validation import check_response

SESSION = str(uuid.uuid4())


def response(method: str, path: str, status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request(method, f"http://t{path}"))


def test_accepts_a_documented_error_body() -> None:
    body = {"statusCode": 404, "error": "Not Found", "message": "Session not found"}
    check_response(response("GET", f"/v1/sessions/{SESSION}/transcript", 404, body))


@pytest.mark.parametrize(
    ("method", "path", "status", "body", "reason"),
    [
        ("GET", f"/v1/sessions/{SESSION}/transcript", 200, {"sessionId": SESSION}, "required"),
        ("GET", f"/v1/sessions/{SESSION}", 418, {}, "not documented"),
        ("GET", f"/v1/sessions/{SESSION}", 404, {"detail": "nope"}, "does not match"),
        ("GET", "/v1/nothing", 404, {"success": False}, "does not match"),
        ("GET", "/api/agents/nothing/", 404, {"statusCode": 404}, "does not match"),
        ("POST", "/api/unknown/", 200, {}, "not in any spec"),
        (
            "GET",
            "/v1/sessions?page=1",
            200,
            {
                "data": [],
                "meta": {"total": 0, "lastPage": 0, "currentPage": 1, "perPage": 10, "prev": None},
            },
            "required",
        ),
        (
            "GET",
            f"/api/billing/sessions/{SESSION}/",
            401,
            {"success": False, "message": "x", "data": None, "errors": {"detail": "not a list"}},
            "does not match",
        ),
    ],
)
def test_refuses_what_the_specs_do_not_allow(
    method: str, path: str, status: int, body: object, reason: str
) -> None:
    with pytest.raises(AssertionError, match=reason):
        check_response(response(method, path, status, body))


def test_checks_formats() -> None:
    body = {
        "id": "not-a-uuid",
        "clientLabel": None,
        "personaId": None,
        "personaName": None,
        "status": "ACTIVE",
        "startTime": "yesterday",
        "endTime": None,
        "durationMs": None,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": None,
    }
    with pytest.raises(AssertionError, match="does not match"):
        check_response(response("GET", f"/v1/sessions/{SESSION}", 200, body))
