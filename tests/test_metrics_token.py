"""``/metrics`` behind ``TRANSCRIPTS_METRICS_TOKEN``: open without it, a bearer token with it."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory
from transcripts.settings import Settings

TOKEN = "m3tr1cs-" + "t" * 32


async def test_metrics_are_open_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "transcripts_http_requests_total" in response.text


async def test_metrics_need_the_bearer_token_when_one_is_set(
    database_url: str, factory: Factory
) -> None:
    owner = await factory.user(staff=True)
    _, api_key = await factory.api_key(owner)
    async for app in running_app(make_settings(database_url, metrics_token=TOKEN)):
        async with asgi_client(app) as client:
            for spelling in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"\tBEARER   {TOKEN} "):
                response = await client.get("/metrics", headers={"Authorization": spelling})
                assert response.status_code == 200, spelling
                assert response.headers["content-type"].startswith("text/plain; version=")
                assert "transcripts_http_requests_total" in response.text

            refused: dict[str, dict[str, bytes]] = {
                "no credentials": {},
                "the token as an API key": {"X-API-Key": TOKEN.encode()},
                "another token": {"Authorization": f"Bearer {TOKEN[:-1]}x".encode()},
                "a prefix of the token": {"Authorization": f"Bearer {TOKEN[:-1]}".encode()},
                "the token and more": {"Authorization": f"Bearer {TOKEN}x".encode()},
                "another scheme": {"Authorization": f"Basic {TOKEN}".encode()},
                "a staff user's API key": {"Authorization": f"Bearer {api_key}".encode()},
                "NBSP after the token": {"Authorization": f"Bearer {TOKEN}".encode() + b"\xa0"},
                "empty": {"Authorization": b"Bearer "},
            }
            for name, headers in refused.items():
                response = await client.get("/metrics", headers=headers)
                assert response.status_code == 401, name
                assert response.headers["www-authenticate"] == "Bearer", name
                assert response.headers["content-type"].startswith("text/plain"), name
                assert "transcripts_" not in response.text, name

            # The probes stay open: the platform calls them without credentials.
            assert (await client.get("/healthz")).status_code == 200


def test_the_setting_comes_from_the_environment_and_refuses_a_short_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRANSCRIPTS_METRICS_TOKEN", TOKEN)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)

    monkeypatch.setenv("TRANSCRIPTS_METRICS_TOKEN", "short")
    with pytest.raises(ValidationError, match="TRANSCRIPTS_METRICS_TOKEN"):
        Settings(_env_file=None)  # type: ignore[call-arg]
