"""Registering a recording (DESIGN.md, "Recordings"): a caller may name only an object that
belongs to its session, under its tenant's prefix or the key the service handed out for an
upload; anything else is a 400, refused before the store is asked anything. Then the upload
itself, end to end, against real S3 servers and the local store; and local links built from
PUBLIC_URL, never from the request's Host header.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory, unique
from tests.s3_servers import S3Endpoint
from tests.servers import free_port
from tests.test_recordings import AUDIO, recorded_session, upload
from tests.write_path import FINALIZE, RECORDING_UPLOAD, SEED_USAGE_BODY, failure, parse
from transcripts.recordings import LocalRecordingStore
from transcripts.settings import Settings
from transcripts.state import app_state

PREFIX = "s3://recordings/{tenant}/"
UPLOADED_KEY = re.compile(
    r"s3://recordings/uploads/(?P<tenant>[^/]+)/(?P<session>[^/]+)/[0-9a-f]{32}\.(?P<ext>\w+)"
)


@dataclass
class Store:
    """One recording store under test, as the service sees it and as a worker reaches it."""

    kind: str  # "moto", "s3rver" or "local"
    overrides: dict[str, Any]
    endpoint: S3Endpoint | None
    directory: Path

    async def place(self, bucket: str, key: str, body: bytes) -> None:
        """An object put there by someone else than the service (as if uploaded directly)."""
        if self.endpoint is not None:
            await upload(self.endpoint, bucket, key, body)
        else:
            target = self.directory / bucket / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)

    async def make_bucket(self, bucket: str) -> None:
        if self.endpoint is not None:
            await upload(self.endpoint, bucket, ".keep", b"")

    def links(self, client: httpx.AsyncClient) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        """What follows a link: the network for S3, the app itself for the local store."""
        return httpx.AsyncClient() if self.endpoint is not None else nullcontext(client)

    def link_base(self) -> str:
        """Where the links to ``s3://bucket/key`` start: ``<base>/bucket/key``."""
        return self.endpoint.url if self.endpoint is not None else "http://testserver/recordings"


def _store(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Store:
    if kind == "local":
        return _store_local(tmp_path)
    directory = tmp_path / "recordings"
    endpoint: S3Endpoint = request.getfixturevalue(f"{kind}_s3" if kind == "moto" else kind)
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.secret_key)
    overrides: dict[str, Any] = {
        "recordings_backend": "s3",
        "s3_endpoint_url": endpoint.url,
        "s3_region": "us-east-1",
    }
    return Store(kind, overrides, endpoint, directory)


@pytest.fixture(params=["moto", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return _store(request, request.param, tmp_path)


@pytest.fixture(params=["moto", "s3rver", "local"])
def upload_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """s3rver as well: a second S3 implementation, which refuses an expired link."""
    return _store(request, request.param, tmp_path)


@dataclass
class Observed:
    """What the running service asked its store: ``check`` calls, and (S3) the HTTP requests
    its client sent."""

    checked: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)


def observe(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Observed:
    observed = Observed()
    recordings = app_state(app).recordings
    check = recordings.check

    async def spy(recording_url: str) -> Any:
        observed.checked.append(recording_url)
        return await check(recording_url)

    monkeypatch.setattr(recordings, "check", spy)
    client = getattr(recordings, "_client", None)
    if client is not None:

        def sent(request: Any, **_: Any) -> None:
            observed.sent.append(request.method)

        client.meta.events.register("before-send.s3", sent)
    return observed


async def app_with(database_url: str, store: Store, **overrides: Any) -> AsyncIterator[FastAPI]:
    async for app in running_app(make_settings(database_url, **store.overrides, **overrides)):
        yield app


async def started(
    client: httpx.AsyncClient, factory: Factory, tenant: str | None = None
) -> tuple[dict[str, str], str, str]:
    """A session started over HTTP by a new owner (of ``tenant``, or of a new tenant)."""
    owner = await factory.user(tenant=tenant)
    character = await factory.character(owner)
    headers = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    response = await client.post(
        "/api/agents/agent-session/", json={"agent": character.slug}, headers=headers
    )
    assert response.status_code == 201, response.text
    return headers, response.json()["data"]["session_id"], await factory.tenant_slug(owner)


async def finalize(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, recording_url: str
) -> httpx.Response:
    body = {**SEED_USAGE_BODY, "recording_url": recording_url}
    return await client.post(FINALIZE.format(session_id), json=body, headers=headers)


async def hand_out(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(RECORDING_UPLOAD.format(session_id), json=body, headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def stored(client: httpx.AsyncClient, headers: dict[str, str], session_id: str) -> Any:
    response = await client.get(
        f"/api/agents/agent-session/{session_id}/transcript/", headers=headers
    )
    data = response.json()["data"]
    return data["finalized_at"], data["recording_status"], data["recording_url"]


def refusal(tenant: str | None) -> dict[str, Any]:
    allowed = "the key handed out for this session by POST …/{session_id}/recording/upload/"
    if tenant is not None:
        allowed = f"an s3:// URI under s3://recordings/{tenant}/, or {allowed}"
    return failure("Invalid recording_url.", {"recording_url": [f"Must be {allowed}."]})


async def test_only_the_tenants_own_keys_are_registered_and_others_are_never_checked(
    database_url: str, factory: Factory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = unique("acme")
    async for app in app_with(database_url, store, recordings_prefix=PREFIX):
        observed = observe(app, monkeypatch)
        async with asgi_client(app) as client:
            headers, session_id, _ = await started(client, factory, tenant)
            other_headers, other_session, other = await started(client, factory)
            # Objects that exist: a check would tell the caller so (READY), and a link would
            # serve them.
            await store.place("recordings", f"{other}/x.mp4", AUDIO)
            await store.place("other-recordings", f"{tenant}/x.mp4", AUDIO)
            await store.place("recordings", f"{tenant}-evil/x.mp4", AUDIO)
            others_upload = (await hand_out(client, other_headers, other_session))["recording_url"]
            await store.place("recordings", others_upload.removeprefix("s3://recordings/"), AUDIO)
            observed.checked.clear()
            observed.sent.clear()

            foreign = {
                "another tenant's key": f"s3://recordings/{other}/x.mp4",
                "out of the prefix with ..": f"s3://recordings/{tenant}/../{other}/x.mp4",
                "a . segment": f"s3://recordings/{tenant}/./x.mp4",
                "an empty segment": f"s3://recordings/{tenant}//x.mp4",
                "an empty first segment": f"s3://recordings//{other}/x.mp4",
                "a backslash": f"s3://recordings/{tenant}/..\\{other}\\x.mp4",
                "another bucket": f"s3://other-recordings/{tenant}/x.mp4",
                "a lookalike tenant": f"s3://recordings/{tenant}-evil/x.mp4",
                "a lookalike with no separator": f"s3://recordings/{tenant}evil/x.mp4",
                "the prefix alone": f"s3://recordings/{tenant}/",
                "a query": f"s3://recordings/{tenant}/x.mp4?versionId=1",
                "a fragment": f"s3://recordings/{tenant}/x.mp4#t=1",
                "user info": f"s3://{tenant}@recordings/{other}/x.mp4",
                "a port": f"s3://recordings:443/{tenant}/x.mp4",
                "leading space": f" s3://recordings/{tenant}/x.mp4",
                "a tab": f"s3://recordings/{tenant}/x\t.mp4",
                "scheme in capitals": f"S3://recordings/{tenant}/x.mp4",
                "not s3": f"https://recordings.s3.amazonaws.com/{other}/x.mp4",
                "empty": "",
                "another session's handed-out key": others_upload,
            }
            for name, url in foreign.items():
                response = await finalize(client, headers, session_id, url)
                assert response.status_code == 400, name
                assert response.json() == refusal(tenant), name
                assert await stored(client, headers, session_id) == (None, "NONE", None), name
            assert observed.checked == []
            assert observed.sent == []

            own = f"s3://recordings/{tenant}/calls/x.mp4"
            await store.place("recordings", f"{tenant}/calls/x.mp4", AUDIO)
            observed.sent.clear()
            registered = await finalize(client, headers, session_id, own)
            assert registered.status_code == 200, registered.text
            assert registered.json()["data"]["recording_status"] == "READY"
            finalized_at, status, url = await stored(client, headers, session_id)
            assert (status, url) == ("READY", own)
            assert finalized_at is not None
            # The control: the spy and the request count do see a check.
            assert observed.checked == [own]
            if store.endpoint is not None:
                assert observed.sent == ["HEAD"]


async def test_the_upload_area_is_reserved_even_for_a_tenant_named_uploads(
    database_url: str, factory: Factory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default upload bucket, tenant ``uploads``'s prefix covers every handed-out
    key: the upload area is accepted only as the key handed out for the session itself."""
    async for app in app_with(database_url, store, recordings_prefix=PREFIX):
        observed = observe(app, monkeypatch)
        async with asgi_client(app) as client:
            headers, session_id, tenant = await started(client, factory, "uploads")
            victim_headers, victim_session, _ = await started(client, factory)
            stolen = (await hand_out(client, victim_headers, victim_session))["recording_url"]
            for url in (stolen, f"s3://recordings/uploads/{tenant}/x.mp4"):
                response = await finalize(client, headers, session_id, url)
                assert response.status_code == 400, url
                assert response.json() == refusal(tenant)
            assert observed.checked == []
            # The owner of the key registers it (pending: nothing was uploaded yet).
            mine = await finalize(client, victim_headers, victim_session, stolen)
            assert mine.json()["data"]["recording_status"] == "PENDING"
            assert observed.checked == [stolen]


async def test_without_a_prefix_only_handed_out_keys_are_registered(
    database_url: str, factory: Factory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for app in app_with(database_url, store):
        observed = observe(app, monkeypatch)
        async with asgi_client(app) as client:
            headers, session_id, tenant = await started(client, factory)
            refused = await finalize(client, headers, session_id, f"s3://recordings/{tenant}/x.wav")
            assert refused.status_code == 400
            assert refused.json() == refusal(None)
            assert await stored(client, headers, session_id) == (None, "NONE", None)
            assert observed.checked == []


async def test_a_handed_out_key_is_uploaded_registered_and_played(
    database_url: str, factory: Factory, upload_store: Store
) -> None:
    store = upload_store
    await store.make_bucket("recordings")
    async for app in app_with(database_url, store):
        async with asgi_client(app) as client, store.links(client) as links:
            headers, session_id, tenant = await started(client, factory)
            before = datetime.now(UTC)
            handed_out = await hand_out(client, headers, session_id, format="wav")
            recording_url = handed_out["recording_url"]
            match = UPLOADED_KEY.fullmatch(recording_url)
            assert match is not None, recording_url
            assert match.groupdict() == {"tenant": tenant, "session": session_id, "ext": "wav"}
            assert (handed_out["method"], handed_out["headers"]) == (
                "PUT",
                {"Content-Type": "audio/wav"},
            )
            expires_in = parse(handed_out["expires_at"]) - before
            assert timedelta(minutes=59) < expires_in <= timedelta(minutes=61)
            location = recording_url.removeprefix("s3://")
            assert handed_out["upload_url"].startswith(f"{store.link_base()}/{location}?")

            # Asked again (a retried request): the same key, with a fresh link.
            again = await hand_out(client, headers, session_id, format="wav")
            assert again["recording_url"] == recording_url

            # Registered before the bytes land: pending, and no link in either dialect.
            pending = await finalize(client, headers, session_id, recording_url)
            assert pending.status_code == 200, pending.text
            assert pending.json()["data"]["recording_status"] == "PENDING"
            assert pending.json()["data"]["recording_presigned_url"] is None
            anam = await client.get(f"/v1/sessions/{session_id}/recording", headers=headers)
            assert (anam.status_code, anam.json()["message"]) == (404, "Recording not found")

            put = await links.put(
                handed_out["upload_url"], content=AUDIO, headers=handed_out["headers"]
            )
            assert put.status_code == 200, put.text

            ready = await finalize(client, headers, session_id, recording_url)
            data = ready.json()["data"]
            assert (data["recording_status"], data["recording_url"]) == ("READY", recording_url)
            assert data["finalized_at"] == pending.json()["data"]["finalized_at"]
            played = await links.get(data["recording_presigned_url"])
            assert (played.status_code, played.content) == (200, AUDIO)
            assert played.headers["content-type"] == "audio/wav"
            anam = await client.get(f"/v1/sessions/{session_id}/recording", headers=headers)
            assert (await links.get(anam.json()["recordingUrl"])).content == AUDIO

            # Settled: no more upload links for this session.
            late = await client.post(RECORDING_UPLOAD.format(session_id), headers=headers)
            assert late.status_code == 409
            assert late.json() == failure(
                "The session's recording is already registered and ready."
            )


async def test_an_upload_link_cannot_replace_a_recording_registered_ready(
    database_url: str, factory: Factory, tmp_path: Path
) -> None:
    """The link handed out stays valid for an hour; once its session has registered the
    recording READY, the local store refuses it (409) and the recording stays as it was."""
    store = _store_local(tmp_path)
    async for app in app_with(database_url, store):
        async with asgi_client(app) as client:
            headers, session_id, _ = await started(client, factory)
            handed_out = await hand_out(client, headers, session_id, format="wav")
            url, recording_url = handed_out["upload_url"], handed_out["recording_url"]
            first = await client.put(url, content=AUDIO, headers=handed_out["headers"])
            # Before registration, a second upload may still replace the first.
            second = await client.put(url, content=AUDIO[::-1], headers=handed_out["headers"])
            assert (first.status_code, second.status_code) == (200, 200)
            ready = await finalize(client, headers, session_id, recording_url)
            assert ready.json()["data"]["recording_status"] == "READY", ready.text

            declared = await client.put(url, content=b"x" * 10, headers=handed_out["headers"])

            async def chunks() -> AsyncIterator[bytes]:
                yield b"y" * 10

            streamed = await client.put(url, content=chunks(), headers=handed_out["headers"])
            played = await client.get(ready.json()["data"]["recording_presigned_url"])
    for refused in (declared, streamed):
        assert refused.status_code == 409
        assert refused.json() == failure("The session's recording is already registered and ready.")
    assert (played.status_code, played.content) == (200, AUDIO[::-1])
    bucket, _, key = recording_url.removeprefix("s3://").partition("/")
    assert list((store.directory / bucket / key).parent.iterdir()) == [
        store.directory / bucket / key
    ]


def _store_local(tmp_path: Path) -> Store:
    directory = tmp_path / "recordings"
    overrides = {"recordings_backend": "local", "recordings_dir": str(directory)}
    return Store("local", overrides, None, directory)


async def test_s3_upload_links_sign_the_content_type(
    database_url: str, factory: Factory, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The headers handed out are the signed ones: S3 refuses the upload without them, and
    serves the recording with that content type. (Neither moto nor s3rver checks a presigned
    signature, so this reads what was signed.)"""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    overrides: dict[str, Any] = {
        "recordings_backend": "s3",
        "s3_endpoint_url": moto_s3.url,
        "s3_region": "us-east-1",
    }
    async for app in running_app(make_settings(database_url, **overrides, presign_ttl_seconds=600)):
        async with asgi_client(app) as client:
            headers, session_id, _ = await started(client, factory)
            handed_out = await hand_out(client, headers, session_id, format="webm")
    assert handed_out["headers"] == {"Content-Type": "audio/webm"}
    query = parse_qs(urlsplit(handed_out["upload_url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-SignedHeaders"] == ["content-type;host"]
    assert query["X-Amz-Expires"] == ["600"]
    location = handed_out["recording_url"].removeprefix("s3://")
    assert handed_out["upload_url"].startswith(f"{moto_s3.url}/{location}?")


async def test_local_upload_links_write_only_what_they_were_signed_for(
    database_url: str, factory: Factory, tmp_path: Path
) -> None:
    directory = tmp_path / "recordings"
    settings = make_settings(
        database_url, recordings_dir=str(directory), recordings_max_upload_bytes=1000
    )
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            headers, session_id, _ = await started(client, factory)
            handed_out = await hand_out(client, headers, session_id, format="mp3")
            url, key = handed_out["upload_url"], handed_out["recording_url"]
            bucket, _, name = key.removeprefix("s3://").partition("/")
            target = directory / bucket / name
            store: LocalRecordingStore = app_state(app).recordings  # type: ignore[assignment]
            past = int(time.time()) - 1
            expired = (
                f"/recordings/{bucket}/{name}?expires={past}"
                f"&signature={store._signature('PUT', bucket, name, past)}"
            )
            attempts = {
                "read with the upload link": ("GET", url),
                "an expired upload link": ("PUT", expired),
                "another key": ("PUT", url.replace(".mp3?", ".wav?")),
            }
            for attempt, (method, link) in attempts.items():
                response = await client.request(method, link, content=b"x")
                assert response.status_code == 403, attempt
                assert response.json()["message"] == "The link is invalid or has expired."

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(11):
                    yield bytes(100)

            declared = await client.put(url, content=bytes(1001))
            streamed = await client.put(url, content=chunks())  # no Content-Length
            for too_large in (declared, streamed):
                assert too_large.status_code == 413
                assert too_large.json()["message"] == "A recording may not exceed 1000 bytes."
            assert not target.parent.exists() or list(target.parent.iterdir()) == []

            fits = await client.put(url, content=AUDIO[:1000], headers=handed_out["headers"])
            assert fits.status_code == 200
            assert target.read_bytes() == AUDIO[:1000]
            assert list(target.parent.iterdir()) == [target]  # no partial file left behind


async def test_local_links_are_built_from_public_url_never_from_host(
    database_url: str, factory: Factory, tmp_path: Path
) -> None:
    directory = tmp_path / "recordings"
    (directory / "demo").mkdir(parents=True)
    (directory / "demo" / "host.wav").write_bytes(AUDIO)
    session_id, key = await recorded_session(factory, "s3://demo/host.wav")
    public = "https://recordings.example.com"
    settings = make_settings(database_url, recordings_dir=str(directory), public_url=public)
    evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-API-Key": key}
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            owner_headers, in_progress, _ = await started(client, factory)
            answers = {
                "transcript (hot path)": await client.get(
                    f"/api/agents/agent-session/{session_id}/transcript/", headers=evil
                ),
                "transcript (FastAPI)": await client.get(
                    f"/api/agents/agent-session/{session_id}/transcript/?x=1", headers=evil
                ),
                "billing": await client.get(f"/api/billing/sessions/{session_id}/", headers=evil),
                "history": await client.get("/api/billing/usage/", headers=evil),
                "anam recording": await client.get(
                    f"/v1/sessions/{session_id}/recording", headers=evil
                ),
                "finalize": await client.post(FINALIZE.format(session_id), headers=evil),
                "upload": await client.post(
                    RECORDING_UPLOAD.format(in_progress),
                    headers={**owner_headers, "Host": "evil.example"},
                ),
            }
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
        assert "evil.example" not in response.text, name
        links = re.findall(r"https?://[^/\"]+/recordings/", response.text)
        assert links, name
        assert set(links) == {f"{public}/recordings/"}, name


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("s3://recordings/{tenant}", "must end with /"),
        ("s3://recordings/", "must contain {tenant} once"),
        ("s3://recordings/{tenant}/{tenant}/", "must contain {tenant} once"),
        ("s3://recordings/t-{tenant}/", "must have {tenant} as a whole path segment"),
        ("https://recordings/{tenant}/", "is not an s3:// URI"),
        ("s3://Recordings/{tenant}/", "is not an s3://bucket/key prefix"),
        ("s3://recordings/../{tenant}/", "is not an s3://bucket/key prefix"),
        ("s3://recordings{tenant}", "has no / after the bucket"),
    ],
)
def test_a_bad_prefix_template_refuses_to_start(template: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        Settings(_env_file=None, recordings_prefix=template)  # type: ignore[call-arg]


def test_prefix_templates_that_are_accepted() -> None:
    for template in (PREFIX, "s3://calls/tenants/{tenant}/audio/", "s3://{tenant}-recordings/"):
        settings = Settings(_env_file=None, recordings_prefix=template)  # type: ignore[call-arg]
        assert settings.recordings_prefix == template


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRANSCRIPTS_RECORDINGS_PREFIX", "s3://recordings/{tenant}"),
        ("TRANSCRIPTS_RECORDINGS_UPLOAD_BUCKET", "Not_A_Bucket"),
        ("TRANSCRIPTS_PUBLIC_URL", "transcripts.example.com"),
    ],
)
def test_the_server_refuses_to_start_with_a_bad_recordings_setting(
    name: str, value: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "TRANSCRIPTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        name: value,
    }
    result = subprocess.run(
        [str(Path(sys.executable).with_name("transcripts")), "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("transcripts: configuration error:")
    assert name in result.stderr
