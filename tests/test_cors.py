"""CORS, as a browser does it: a preflight, then the real request (DESIGN.md, "Caching,
limits, browsers").

The widget routes (session start, form responses) admit the origins on an active
character's ``allowed_origins``: the preflight (which names no character) for any of them,
the real request's answer only for the character it is for. Everything else admits the
origins of ``TRANSCRIPTS_CORS_ALLOW_ORIGINS`` (none by default).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Page
from pydantic import ValidationError
from sqlalchemy import event

from tests.conftest import asgi_client, make_settings, migrate, running_app
from tests.factories import Factory, turns
from tests.servers import free_port, transcripts_process
from tests.write_path import START, deactivate_character
from transcripts.db.engine import Database
from transcripts.domain import CharacterRecord, SessionRef, UserRecord
from transcripts.settings import Settings
from transcripts.state import app_state

SHOP = "https://shop.example"
OTHER_SHOP = "https://other-shop.example"
CLOSED_SHOP = "https://closed-shop.example"
EVIL = "https://evil.example"
DASHBOARD = "https://dashboard.example"
FORMS = "/api/agents/{}/form-responses/"
ACAO = "access-control-allow-origin"


@dataclass(frozen=True)
class Widget:
    owner: UserRecord
    shop: CharacterRecord  # allows SHOP
    other: CharacterRecord  # allows OTHER_SHOP only
    shop_session: SessionRef
    other_session: SessionRef


@pytest.fixture
async def widget(factory: Factory) -> Widget:
    owner = await factory.user()
    shop = await factory.character(owner, allowed_origins=[SHOP])
    other = await factory.character(owner, allowed_origins=[OTHER_SHOP])
    closed = await factory.character(owner, allowed_origins=[CLOSED_SHOP])
    await deactivate_character(factory, closed.id)
    return Widget(owner, shop, other, await factory.session(shop), await factory.session(other))


async def preflight(
    client: httpx.AsyncClient, path: str, origin: str, method: str = "POST", headers: str = ""
) -> httpx.Response:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    return await client.options(path, headers=request_headers)


def assert_admitted(response: httpx.Response, origin: str) -> None:
    assert response.headers.get(ACAO) == origin, response.headers
    assert "Origin" in response.headers["vary"]


def assert_refused(preflight_response: httpx.Response) -> None:
    # Starlette's answer to a preflight it refuses: a plain 400 without the grant.
    assert preflight_response.status_code == 400
    assert preflight_response.headers["content-type"].startswith("text/plain")
    assert ACAO not in preflight_response.headers
    assert "Origin" in preflight_response.headers["vary"]


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


async def test_widget_session_start(client: httpx.AsyncClient, widget: Widget) -> None:
    for path in (START, START.rstrip("/")):
        response = await preflight(client, path, SHOP, headers="content-type")
        assert response.status_code == 200, path
        assert_admitted(response, SHOP)
        assert "post" in listed(response.headers["access-control-allow-methods"])
        assert "content-type" in listed(response.headers["access-control-allow-headers"])
        assert int(response.headers["access-control-max-age"]) > 0

    started = await client.post(START, json={"agent": widget.shop.slug}, headers={"Origin": SHOP})
    assert started.status_code == 201
    assert_admitted(started, SHOP)
    assert "x-request-id" in listed(started.headers["access-control-expose-headers"])

    # On some character's list, but not this one's: the service refuses, the page reads nothing.
    refused = await client.post(START, json={"agent": widget.other.slug}, headers={"Origin": SHOP})
    assert refused.status_code == 403
    assert ACAO not in refused.headers

    for origin in (EVIL, CLOSED_SHOP):
        assert_refused(await preflight(client, START, origin, headers="content-type"))
        refused = await client.post(
            START, json={"agent": widget.shop.slug}, headers={"Origin": origin}
        )
        assert refused.status_code == 403
        assert ACAO not in refused.headers

    # What a widget may not ask for: another method, a credential header.
    assert_refused(await preflight(client, START, SHOP, method="PUT"))
    assert_refused(await preflight(client, START, SHOP, headers="content-type, x-api-key"))


async def test_widget_form_responses(client: httpx.AsyncClient, widget: Widget) -> None:
    shop_forms = FORMS.format(widget.shop.slug)
    form = {"session_id": str(widget.shop_session.session_id), "form_id": "contact", "values": {}}

    for path in (shop_forms, shop_forms.rstrip("/")):
        response = await preflight(client, path, SHOP, headers="Content-Type")
        assert response.status_code == 200, path
        assert_admitted(response, SHOP)

    submitted = await client.post(shop_forms, json=form, headers={"Origin": SHOP})
    assert submitted.status_code == 201
    assert_admitted(submitted, SHOP)

    # The other character's path, from an origin only the shop allows.
    other_forms = FORMS.format(widget.other.slug)
    other_form = {**form, "session_id": str(widget.other_session.session_id)}
    response = await preflight(client, other_forms, SHOP, headers="content-type")
    assert response.status_code == 200  # the preflight names no character
    refused = await client.post(other_forms, json=other_form, headers={"Origin": SHOP})
    assert refused.status_code == 403
    assert ACAO not in refused.headers

    assert_refused(await preflight(client, shop_forms, EVIL, headers="content-type"))
    refused = await client.post(shop_forms, json=form, headers={"Origin": EVIL})
    assert refused.status_code == 403
    assert ACAO not in refused.headers
    # Listing form responses is the dashboard's (a read), not the widget's.
    assert_refused(await preflight(client, shop_forms, SHOP, method="GET"))


@pytest.fixture
async def dashboard_app(database_url: str) -> AsyncIterator[FastAPI]:
    async for app in running_app(make_settings(database_url, cors_allow_origins=DASHBOARD)):
        yield app


async def owned_session(factory: Factory) -> tuple[str, SessionRef]:
    owner = await factory.user()
    character = await factory.character(owner, allowed_origins=[SHOP])
    session = await factory.session(character, turns=turns(("assistant", "Hi")))
    _, key = await factory.api_key(owner)
    return key, session


READS = {
    "anam, hot path": "/v1/sessions/{}/transcript",
    "anam, FastAPI": "/v1/sessions/{}/transcript?via=fastapi",
    "agents, hot path": "/api/agents/agent-session/{}/transcript/",
    "agents, FastAPI": "/api/agents/agent-session/{}/transcript/?via=fastapi",
}


async def test_the_read_api_admits_the_configured_origins(
    dashboard_app: FastAPI, factory: Factory
) -> None:
    key, session = await owned_session(factory)
    async with asgi_client(dashboard_app) as client:
        response = await preflight(
            client,
            f"/v1/sessions/{session.session_id}/transcript",
            DASHBOARD,
            method="GET",
            headers="authorization, if-none-match",
        )
        assert response.status_code == 200
        assert_admitted(response, DASHBOARD)
        allowed = listed(response.headers["access-control-allow-headers"])
        assert {"authorization", "x-api-key", "content-type", "if-none-match"} <= allowed
        assert "last-event-id" in allowed

        for name, template in READS.items():
            read = await client.get(
                template.format(session.session_id),
                headers={"Origin": DASHBOARD, "Authorization": f"Bearer {key}"},
            )
            assert read.status_code == 200, name
            assert_admitted(read, DASHBOARD)
            exposed = listed(read.headers["access-control-expose-headers"])
            assert {"etag", "x-request-id", "retry-after", "ratelimit-remaining"} <= exposed, name

            stranger = await client.get(
                template.format(session.session_id),
                headers={"Origin": EVIL, "Authorization": f"Bearer {key}"},
            )
            assert stranger.status_code == 200, name  # answered; the browser keeps it from EVIL
            assert ACAO not in stranger.headers, name

        assert_refused(
            await preflight(
                client, f"/v1/sessions/{session.session_id}/transcript", EVIL, method="GET"
            )
        )
        # The dashboard may call the widget routes with its credentials, too.
        response = await preflight(client, START, DASHBOARD, headers="x-api-key, content-type")
        assert response.status_code == 200
        assert_admitted(response, DASHBOARD)
        response = await preflight(client, "/api/billing/usage/", DASHBOARD, method="GET")
        assert response.status_code == 200
        assert_admitted(response, DASHBOARD)
        await app_state(dashboard_app).key_usage.drain()


async def test_the_read_api_admits_no_origin_by_default(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    key, session = await owned_session(factory)
    path = f"/v1/sessions/{session.session_id}/transcript"

    assert_refused(await preflight(client, path, DASHBOARD, method="GET", headers="authorization"))
    # A widget origin is the widget routes' only.
    assert_refused(await preflight(client, path, SHOP, method="GET"))
    read = await client.get(path, headers={"Origin": DASHBOARD, "Authorization": f"Bearer {key}"})
    assert read.status_code == 200
    assert ACAO not in read.headers
    assert "Origin" in read.headers["vary"]


async def test_a_request_without_origin_carries_no_cors_headers(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    key, session = await owned_session(factory)
    for template in READS.values():
        read = await client.get(template.format(session.session_id), headers={"X-API-Key": key})
        assert read.status_code == 200
        assert not [name for name in read.headers if name.startswith("access-control-")]
    # An OPTIONS that is not a preflight is what it was: a method the route does not have.
    response = await client.options(START, headers={"Origin": SHOP})
    assert response.status_code == 405
    unknown = await preflight(client, f"/v1/sessions/{uuid.uuid4()}/nothing-here", SHOP)
    assert ACAO not in unknown.headers


async def test_a_customers_page_starts_a_session_in_a_real_browser(
    page: Page, tmp_path: Path
) -> None:
    """The widget flow as the README shows it: a page of another origin fetches the session
    start in Chromium, which sends the preflight, then the POST, and lets the page read the
    answer only if the service grants it. The "customer's page" is one of the service's own
    pages under another name of the loopback address (http://localhost:<port> is not the
    origin http://127.0.0.1:<port>), as Chromium refuses a public page's requests to loopback.
    """
    url = migrate(f"sqlite+aiosqlite:///{tmp_path / 'widget.db'}")
    start = """async ([url, agent]) => {
        try {
            const response = await fetch(url, {
                method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({agent, origin_url: location.href}),
            });
            return {status: response.status, body: await response.json()};
        } catch (error) {
            return {error: String(error)};
        }
    }"""
    with transcripts_process(
        "serve", env={"TRANSCRIPTS_DATABASE_URL": url}, cwd=tmp_path
    ) as server:
        shop_origin = server.base_url.replace("127.0.0.1", "localhost")
        database = Database(make_settings(url))
        factory = Factory(database, make_settings(url))
        owner = await factory.user()
        open_to_shop = await factory.character(owner, allowed_origins=[shop_origin])
        elsewhere = await factory.character(owner, allowed_origins=["https://elsewhere.example"])
        await database.dispose()

        await page.goto(f"{shop_origin}/healthz")
        started = await page.evaluate(start, [f"{server.base_url}{START}", open_to_shop.slug])
        refused = await page.evaluate(start, [f"{server.base_url}{START}", elsewhere.slug])
    log = "\n".join(server.output)  # the request log is written in batches: read it at the end

    assert started.get("status") == 201, (started, log)
    assert started["body"]["data"]["character_slug"] == open_to_shop.slug
    assert started["body"]["data"]["participant_identity"].startswith("visitor-")
    # The service said 403; the browser, with no grant, gives the page nothing to read.
    assert refused == {"error": "TypeError: Failed to fetch"}
    assert '"method":"OPTIONS"' in log
    assert '"status":403' in log


def test_the_setting_is_a_comma_separated_list_of_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TRANSCRIPTS_CORS_ALLOW_ORIGINS", " https://App.example.com, http://localhost:3000 ,"
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_allow_origins == ("https://app.example.com", "http://localhost:3000")
    # An entry that could never equal a browser's Origin is a mistake to report at start.
    for entry in ("https://app.example.com/", "app.example.com", "*", "https://user@app.example"):
        monkeypatch.setenv("TRANSCRIPTS_CORS_ALLOW_ORIGINS", entry)
        with pytest.raises(ValidationError, match="is not an origin"):
            Settings(_env_file=None)  # type: ignore[call-arg]


def count_origin_reads(app: FastAPI) -> list[str]:
    """The statements that read characters' allowed origins, as the database receives them."""
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "allowed_origins" in statement and "json_" in statement:
            statements.append(statement)

    event.listen(app_state(app).database.engine.sync_engine, "before_cursor_execute", seen)
    return statements


def fresh_origin() -> str:
    """An origin no other test's character allows (the grant covers every character)."""
    return f"https://{uuid.uuid4().hex[:12]}.example"


async def test_a_flood_of_preflights_reads_the_origins_once_per_period(
    database_url: str, factory: Factory
) -> None:
    """Preflights take no credentials: each one must not cost a scan of every character."""
    shop, new_shop, added = fresh_origin(), fresh_origin(), fresh_origin()
    owner = await factory.user()
    character = await factory.character(owner, allowed_origins=[shop])
    headers = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    settings = make_settings(database_url, rate_limit_enabled=False, widget_origins_ttl_seconds=600)
    async for app in running_app(settings):
        reads = count_origin_reads(app)
        async with asgi_client(app) as client:
            concurrent = await asyncio.gather(
                *(preflight(client, START, origin) for origin in [shop, EVIL] * 25)
            )
            one_by_one = [
                await preflight(client, FORMS.format(character.slug), fresh_origin())
                for _ in range(50)
            ]
            assert [response.status_code for response in concurrent] == [200, 400] * 25
            assert {response.status_code for response in one_by_one} == {400}
            assert len(reads) == 1, reads

            # Changed through this process: granted, and withdrawn, on the next preflight.
            assert_refused(await preflight(client, START, new_shop))
            changed = await client.patch(
                f"/api/ai-characters/{character.slug}/",
                json={"allowed_origins": [new_shop]},
                headers=headers,
            )
            assert changed.status_code == 200, changed.text
            assert_admitted(await preflight(client, START, new_shop), new_shop)
            assert_refused(await preflight(client, START, shop))
            created = await client.post(
                "/api/ai-characters/",
                json={"slug": f"c-{uuid.uuid4().hex[:8]}", "name": "C", "allowed_origins": [added]},
                headers=headers,
            )
            assert created.status_code == 201, created.text
            assert_admitted(await preflight(client, START, added), added)
            assert len(reads) == 3, reads  # the first, and one after each change


async def test_a_change_made_elsewhere_is_granted_for_a_period_but_never_the_request(
    database_url: str, factory: Factory
) -> None:
    """Another process's change shows within the period; meanwhile a stale preflight grant
    lets the browser send the request, which the route still refuses."""
    shop = fresh_origin()
    character = await factory.character(await factory.user(), allowed_origins=[shop])
    settings = make_settings(database_url, rate_limit_enabled=False, widget_origins_ttl_seconds=1)
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            assert_admitted(await preflight(client, START, shop), shop)
            await deactivate_character(factory, character.id)  # as another replica would
            stale = await preflight(client, START, shop)
            refused = await client.post(
                START, json={"agent": character.slug}, headers={"Origin": shop}
            )
            await asyncio.sleep(1.1)
            fresh = await preflight(client, START, shop)
    assert_admitted(stale, shop)
    assert refused.status_code == 404
    assert ACAO not in refused.headers
    assert_refused(fresh)


async def test_a_widget_preflight_without_the_database_is_a_503() -> None:
    settings = make_settings(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone")
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            response = await preflight(client, START, SHOP, headers="content-type")
    assert response.status_code == 503
    assert ACAO not in response.headers
    message = "The service is temporarily unavailable; try again shortly."
    assert response.json() == {
        "success": False,
        "message": message,
        "data": None,
        "errors": {"detail": [message]},
    }
