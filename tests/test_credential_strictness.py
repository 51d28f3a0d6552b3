"""What a credential is, to the byte: only HTTP's optional whitespace (SP, HTAB) around it is
ignored, and a token's time claims are JSON numbers.

Python's ``str.strip()`` also removes NO-BREAK SPACE (U+00A0) and NEXT LINE (U+0085), which a
header decoded as ISO-8859-1 carries as the bytes 0xA0 and 0x85; PyJWT reads ``"exp": "..."``
with ``int()``. Each case runs through the hot path (a plain GET of a transcript) and through
FastAPI's routes (the same GET with a query string, a write), in both dialects.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.factories import Factory
from tests.test_attacks import unauthorized, victim

# (dialect, method, path template, body); a query string sends a read past the hot path.
ROUTES: dict[str, tuple[str, str, str, Any]] = {
    "agents read, hot path": ("agents", "GET", "/api/agents/agent-session/{}/transcript/", None),
    "agents read, FastAPI": (
        "agents",
        "GET",
        "/api/agents/agent-session/{}/transcript/?via=fastapi",
        None,
    ),
    "anam read, hot path": ("anam", "GET", "/v1/sessions/{}/transcript", None),
    "anam read, FastAPI": ("anam", "GET", "/v1/sessions/{}/transcript?via=fastapi", None),
    "append turns": ("agents", "POST", "/api/agents/agent-session/{}/turns/", []),
}

NBSP, NEL = b"\xa0", b"\x85"  # U+00A0 and U+0085 as ISO-8859-1 header bytes


async def send(
    client: httpx.AsyncClient, route: str, session_id: object, headers: dict[str, bytes]
) -> httpx.Response:
    _, method, template, body = ROUTES[route]
    return await client.request(method, template.format(session_id), json=body, headers=headers)


@pytest.mark.parametrize("route", list(ROUTES))
async def test_only_spaces_and_tabs_around_a_credential_are_ignored(
    client: httpx.AsyncClient, factory: Factory, route: str
) -> None:
    dialect = ROUTES[route][0]
    owner, session = await victim(factory)
    _, raw_key = await factory.api_key(owner)
    key, token = raw_key.encode(), factory.token(owner.id).encode()

    accepted = {
        "key, spaces and tabs around": {"X-API-Key": b" \t" + key + b"\t "},
        "Bearer key, spaces and tabs around": {"Authorization": b"\t Bearer  " + key + b" \t"},
        "Bearer token, spaces and tabs around": {"Authorization": b" Bearer " + token + b"\t"},
    }
    for name, headers in accepted.items():
        response = await send(client, route, session.session_id, headers)
        assert response.status_code == 200, name

    refused: dict[str, tuple[dict[str, bytes], str]] = {}
    for label, char in (("NBSP", NBSP), ("NEL", NEL)):
        refused |= {
            f"key, {label} before": ({"X-API-Key": char + key}, "Invalid API key."),
            f"key, {label} after": ({"X-API-Key": key + char}, "Invalid API key."),
            f"Bearer key, {label} after": (
                {"Authorization": b"Bearer " + key + char},
                "Invalid API key.",
            ),
            f"Bearer key, {label} before the key": (
                {"Authorization": b"Bearer " + char + key},
                "Invalid token.",
            ),
            f"{label} before the scheme": (
                {"Authorization": char + b"Bearer " + key},
                "Authorization header must be 'Bearer <token>'.",
            ),
            f"{label} for the space": (
                {"Authorization": b"Bearer" + char + key},
                "Authorization header must be 'Bearer <token>'.",
            ),
            f"Bearer token, {label} after": (
                {"Authorization": b"Bearer " + token + char},
                "Invalid token.",
            ),
            f"Bearer token, {label} before the token": (
                {"Authorization": b"Bearer " + char + token},
                "Invalid token.",
            ),
        }
    for name, (headers, message) in refused.items():
        response = await send(client, route, session.session_id, headers)
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer", name
        assert response.json() == unauthorized(dialect, message), name


@pytest.mark.parametrize("route", list(ROUTES))
async def test_time_claims_must_be_json_numbers(
    client: httpx.AsyncClient, factory: Factory, route: str
) -> None:
    dialect = ROUTES[route][0]
    owner, session = await victim(factory)
    now = datetime.now(UTC)
    later, earlier = int((now + timedelta(hours=1)).timestamp()), int(now.timestamp()) - 60

    accepted = {
        "integers": {"iat": earlier, "nbf": earlier, "exp": later},
        "fractions": {"iat": earlier + 0.5, "nbf": earlier + 0.25, "exp": later + 0.75},
    }
    for name, claims in accepted.items():
        token = factory.token(owner.id, **claims)
        # Twice: the second answer comes from the verified-token cache.
        for attempt in (1, 2):
            response = await send(
                client, route, session.session_id, {"Authorization": f"Bearer {token}".encode()}
            )
            assert response.status_code == 200, (name, attempt)

    refused = {
        "exp as a string": {"exp": str(later)},
        "exp as a string, in the past": {"exp": str(earlier)},
        "exp true": {"exp": True},
        "exp as a list": {"exp": [later]},
        "nbf as a string": {"nbf": str(earlier)},
        "nbf false": {"nbf": False},
        "iat as a string": {"iat": str(earlier)},
        "iat true": {"iat": True},
        "iat as an object": {"iat": {"seconds": earlier}},
    }
    for name, claims in refused.items():
        token = factory.token(owner.id, **claims)
        for attempt in (1, 2):
            response = await send(
                client, route, session.session_id, {"Authorization": f"Bearer {token}".encode()}
            )
            assert response.status_code == 401, (name, attempt)
            assert response.json() == unauthorized(dialect, "Invalid token."), (name, attempt)

    expired = factory.token(owner.id, exp=earlier)
    response = await send(
        client, route, session.session_id, {"Authorization": f"Bearer {expired}".encode()}
    )
    assert response.json() == unauthorized(dialect, "Token has expired.")
