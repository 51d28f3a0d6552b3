"""Recordings: signed on every read, never stored; S3 against real endpoints; the local store."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aioboto3
import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import SEED_USAGE, Factory
from tests.s3_servers import S3Endpoint
from tests.servers import free_port
from transcripts.recordings import LocalRecordingStore
from transcripts.state import app_state

AUDIO = bytes(range(256)) * 64  # 16 KiB standing in for a call recording


async def upload(endpoint: S3Endpoint, bucket: str, key: str, body: bytes) -> None:
    async with aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
    ) as client:
        try:
            await client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        await client.put_object(Bucket=bucket, Key=key, Body=body)


def s3_app(
    database_url: str, endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch, **overrides: object
) -> AsyncIterator[FastAPI]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.secret_key)
    settings = make_settings(
        database_url,
        recordings_backend="s3",
        s3_endpoint_url=endpoint.url,
        s3_region="us-east-1",
        **overrides,
    )
    return running_app(settings)


async def recorded_session(factory: Factory, recording_url: str) -> tuple[str, str]:
    owner = await factory.user()
    session = await factory.session(
        await factory.character(owner), usage=SEED_USAGE, recording_url=recording_url
    )
    _, key = await factory.api_key(owner)
    return str(session.session_id), key


async def both_dialects(
    client: httpx.AsyncClient, session_id: str, key: str
) -> tuple[dict, httpx.Response]:  # type: ignore[type-arg]
    headers = {"X-API-Key": key}
    summary = (
        await client.get(f"/api/agents/agent-session/{session_id}/transcript/", headers=headers)
    ).json()["data"]
    recording = await client.get(f"/v1/sessions/{session_id}/recording", headers=headers)
    return summary, recording


async def test_s3_presigned_urls_serve_the_recording(
    database_url: str,
    factory: Factory,
    moto_s3: S3Endpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await upload(moto_s3, "calls", "2026/05/28/support-bot.mp4", AUDIO)
    session_id, key = await recorded_session(factory, "s3://calls/2026/05/28/support-bot.mp4")
    async for app in s3_app(database_url, moto_s3, monkeypatch):
        async with asgi_client(app) as client:
            summary, recording = await both_dialects(client, session_id, key)

    assert summary["recording_url"] == "s3://calls/2026/05/28/support-bot.mp4"
    assert summary["recording_status"] == "READY"
    presigned = summary["recording_presigned_url"]
    assert presigned.startswith(f"{moto_s3.url}/calls/2026/05/28/support-bot.mp4?")
    assert parse_qs(urlsplit(presigned).query)["X-Amz-Expires"] == ["3600"]
    anam_url = recording.json()["recordingUrl"]
    async with httpx.AsyncClient() as http:
        for url in (presigned, anam_url):
            whole = await http.get(url)
            assert (whole.status_code, whole.content) == (200, AUDIO)
            part = await http.get(url, headers={"Range": "bytes=100-199"})
            assert (part.status_code, part.content) == (206, AUDIO[100:200])


async def test_s3_url_is_refused_after_its_ttl(
    database_url: str,
    factory: Factory,
    s3rver: S3Endpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await upload(s3rver, "expiring", "call.wav", AUDIO)
    session_id, key = await recorded_session(factory, "s3://expiring/call.wav")
    async for app in s3_app(database_url, s3rver, monkeypatch, presign_ttl_seconds=2):
        async with asgi_client(app) as client:
            summary, _ = await both_dialects(client, session_id, key)
    url = summary["recording_presigned_url"]
    async with httpx.AsyncClient() as http:
        fresh = await http.get(url)
        assert (fresh.status_code, fresh.content) == (200, AUDIO)
        await asyncio.sleep(3.5)
        expired = await http.get(url)
    assert expired.status_code == 403
    assert b"expired" in expired.content


async def test_unreachable_s3_never_touches_the_read(
    database_url: str, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing is local: an endpoint that would hang every connection is never contacted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    endpoint = S3Endpoint(f"http://127.0.0.1:{listener.getsockname()[1]}", "AKIAEXAMPLE", "secret")
    session_id, key = await recorded_session(factory, "s3://calls/a.mp4")
    try:
        async for app in s3_app(database_url, endpoint, monkeypatch):
            async with asgi_client(app) as client:
                started = time.monotonic()
                for _ in range(5):
                    summary, recording = await both_dialects(client, session_id, key)
                elapsed = time.monotonic() - started
        assert summary["recording_presigned_url"].startswith(endpoint.url)
        assert recording.status_code == 200
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
        assert elapsed < 5  # ten reads, far from any network timeout
    finally:
        listener.close()


async def test_no_credentials_reads_200_with_a_null_url(
    database_url: str,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    session_id, key = await recorded_session(factory, "s3://calls/a.mp4")
    settings = make_settings(database_url, recordings_backend="s3", s3_region="us-east-1")
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            summary, recording = await both_dialects(client, session_id, key)
    assert summary["recording_url"] == "s3://calls/a.mp4"
    assert (summary["recording_presigned_url"], summary["recording_presigned_url_expires_at"]) == (
        None,
        None,
    )
    assert recording.status_code == 404
    assert "could not sign recording URL: NoCredentialsError" in caplog.text


async def test_malformed_recording_uri_reads_200_with_a_null_url(
    client: httpx.AsyncClient, factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    session_id, key = await recorded_session(factory, "https://example.com/not-s3.mp4")
    summary, _ = await both_dialects(client, session_id, key)
    assert summary["recording_presigned_url"] is None
    assert "not an s3://bucket/key URI" in caplog.text


@pytest.fixture
def local_store_settings(database_url: str, tmp_path: Path) -> dict[str, object]:
    return {
        "recordings_backend": "local",
        "recordings_dir": str(tmp_path / "recordings"),
        "recordings_signing_key": "k" * 40,
    }


async def test_local_links_serve_with_range_and_refuse_tampering(
    database_url: str, factory: Factory, local_store_settings: dict[str, object], tmp_path: Path
) -> None:
    target = tmp_path / "recordings" / "demo" / "calls" / "one.wav"
    target.parent.mkdir(parents=True)
    target.write_bytes(AUDIO)
    session_id, key = await recorded_session(factory, "s3://demo/calls/one.wav")
    async for app in running_app(make_settings(database_url, **local_store_settings)):
        async with asgi_client(app) as client:
            summary, recording = await both_dialects(client, session_id, key)
            url = summary["recording_presigned_url"]
            assert url.startswith("http://testserver/recordings/demo/calls/one.wav?expires=")
            assert recording.json()["recordingUrl"].split("?")[0] == url.split("?")[0]

            whole = await client.get(url)
            assert (whole.status_code, whole.content) == (200, AUDIO)
            assert whole.headers["content-type"] == "audio/wav"
            assert whole.headers["accept-ranges"] == "bytes"
            part = await client.get(url, headers={"Range": "bytes=1000-1999"})
            assert (part.status_code, part.content) == (206, AUDIO[1000:2000])
            assert part.headers["content-range"] == f"bytes 1000-1999/{len(AUDIO)}"

            query = parse_qs(urlsplit(url).query)
            expires, signature = int(query["expires"][0]), query["signature"][0]
            store: LocalRecordingStore = app_state(app).recordings
            past = int(time.time()) - 1
            refused = {
                "tampered signature": f"/recordings/demo/calls/one.wav?expires={expires}&signature={'0' * 64}",
                "other file": f"/recordings/demo/calls/two.wav?expires={expires}&signature={signature}",
                "extended expiry": f"/recordings/demo/calls/one.wav?expires={expires + 10}&signature={signature}",
                "expired": f"/recordings/demo/calls/one.wav?expires={past}&signature={store._signature('GET', 'demo', 'calls/one.wav', past)}",
                "traversal": f"/recordings/demo/..%2F..%2Fsecret?expires={expires}&signature={signature}",
            }
            for name, path in refused.items():
                response = await client.get(path)
                assert response.status_code == 403, name
                assert response.json()["message"] == "The link is invalid or has expired.", name

            # A link to read is not a link to write: the file stays as it was.
            overwrite = await client.put(url, content=b"not the recording")
            assert overwrite.status_code == 403
            assert overwrite.json()["message"] == "The link is invalid or has expired."
    assert target.read_bytes() == AUDIO


async def test_head_on_a_local_link_answers_the_headers_without_the_body(
    database_url: str, factory: Factory, local_store_settings: dict[str, object], tmp_path: Path
) -> None:
    target = tmp_path / "recordings" / "demo" / "calls" / "head.mp3"
    target.parent.mkdir(parents=True)
    target.write_bytes(AUDIO)
    session_id, key = await recorded_session(factory, "s3://demo/calls/head.mp3")
    async for app in running_app(make_settings(database_url, **local_store_settings)):
        async with asgi_client(app) as client:
            summary, _ = await both_dialects(client, session_id, key)
            url = summary["recording_presigned_url"]
            head = await client.head(url)
            get = await client.get(url)
            part = await client.head(url, headers={"Range": "bytes=0-99"})
            tampered = await client.head(url[:-64] + "0" * 64)  # the signature comes last
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(AUDIO))
    assert head.headers["content-type"] == "audio/mpeg"
    assert head.headers["accept-ranges"] == "bytes"
    assert {name: value for name, value in head.headers.items() if name != "content-length"} == {
        name: value for name, value in get.headers.items() if name != "content-length"
    }
    assert get.content == AUDIO
    assert (part.status_code, part.content, part.headers["content-length"]) == (206, b"", "100")
    assert tampered.status_code == 403


async def test_a_signature_with_non_ascii_characters_is_a_bad_signature(
    database_url: str, factory: Factory, local_store_settings: dict[str, object], tmp_path: Path
) -> None:
    # hmac.compare_digest refuses a str with non-ASCII characters (TypeError): that was a 500.
    target = tmp_path / "recordings" / "demo" / "calls" / "accent.wav"
    target.parent.mkdir(parents=True)
    target.write_bytes(AUDIO)
    session_id, key = await recorded_session(factory, "s3://demo/calls/accent.wav")
    async for app in running_app(make_settings(database_url, **local_store_settings)):
        async with asgi_client(app) as client:
            summary, _ = await both_dialects(client, session_id, key)
            url = summary["recording_presigned_url"]
            answers = {
                (method, name): await client.request(method, url[:-64] + forged)
                for method in ("GET", "HEAD", "PUT")
                for name, forged in {
                    "e acute": "%C3%A9" + "0" * 63,
                    "all non-ASCII": "%E2%82%AC" * 64,
                    "y diaeresis": "%C3%BF",
                }.items()
            }
    for (method, name), response in answers.items():
        assert response.status_code == 403, (method, name)
        if method != "HEAD":
            assert response.json()["message"] == "The link is invalid or has expired.", name
    assert target.read_bytes() == AUDIO


def test_local_store_never_leaves_its_directory(tmp_path: Path) -> None:
    store = LocalRecordingStore(
        tmp_path, b"k" * 32, 60, public_url="http://127.0.0.1:8000", max_upload_bytes=1024
    )
    assert store.path_for("demo", "../../etc/passwd") is None
    assert store.path_for("..", "x") is None
    assert (
        store.path_for("demo", "calls/one.wav") == tmp_path.resolve() / "demo" / "calls" / "one.wav"
    )


async def test_local_store_without_a_key_reads_null(
    database_url: str, factory: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session_id, key = await recorded_session(factory, "s3://demo/x.wav")
    settings = make_settings(
        database_url, recordings_dir=str(tmp_path), recordings_signing_key=None
    )
    caplog.set_level(logging.WARNING)
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            summary, recording = await both_dialects(client, session_id, key)
    assert summary["recording_presigned_url"] is None
    assert recording.status_code == 404
    assert "RECORDINGS_SIGNING_KEY is not set" in caplog.text


async def test_links_are_never_stored(
    database_url: str, factory: Factory, local_store_settings: dict[str, object]
) -> None:
    session_id, key = await recorded_session(factory, "s3://demo/a.wav")
    async for app in running_app(make_settings(database_url, **local_store_settings)):
        async with asgi_client(app) as client:
            first, _ = await both_dialects(client, session_id, key)
            await asyncio.sleep(1.1)
            second, _ = await both_dialects(client, session_id, key)
    assert first["recording_presigned_url"] != second["recording_presigned_url"]
    assert (
        first["recording_presigned_url_expires_at"] < second["recording_presigned_url_expires_at"]
    )


async def _finalize(
    client: httpx.AsyncClient, headers: dict[str, str], session_id: str, url: str
) -> dict:  # type: ignore[type-arg]
    response = await client.post(
        f"/api/agents/agent-session/{session_id}/finalize/",
        json={"recording_url": url},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def _started(client: httpx.AsyncClient, factory: Factory) -> tuple[dict[str, str], str, str]:
    """A session started over HTTP by the owner of a new tenant: headers, id, tenant slug."""
    owner = await factory.user()
    character = await factory.character(owner)
    headers = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    started = await client.post(
        "/api/agents/agent-session/", json={"agent": character.slug}, headers=headers
    )
    return headers, started.json()["data"]["session_id"], await factory.tenant_slug(owner)


async def test_s3_status_is_settled_at_registration_and_can_move_on(
    database_url: str, factory: Factory, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for app in s3_app(
        database_url, moto_s3, monkeypatch, recordings_prefix="s3://calls/{tenant}/"
    ):
        async with asgi_client(app) as client:
            headers, session_id, tenant = await _started(client, factory)
            url = f"s3://calls/{tenant}/late/{session_id}.mp4"
            # Registered before the upload has landed: pending, and no link (it would get
            # S3's 404) in either dialect.
            pending = await _finalize(client, headers, session_id, url)
            assert pending["recording_status"] == "PENDING"
            assert pending["recording_presigned_url"] is None
            assert pending["recording_presigned_url_expires_at"] is None
            anam = await client.get(f"/v1/sessions/{session_id}/recording", headers=headers)
            assert (anam.status_code, anam.json()["message"]) == (404, "Recording not found")

            await upload(moto_s3, "calls", f"{tenant}/late/{session_id}.mp4", AUDIO)
            ready = await _finalize(client, headers, session_id, url)
            assert ready["recording_status"] == "READY"
            assert ready["finalized_at"] == pending["finalized_at"]  # usage was not re-recorded
            async with httpx.AsyncClient() as http:
                assert (await http.get(ready["recording_presigned_url"])).content == AUDIO

            # Not an s3:// URI: refused outright now (it used to be stored as FAILED).
            other_headers, other_session, _ = await _started(client, factory)
            refused = await client.post(
                f"/api/agents/agent-session/{other_session}/finalize/",
                json={"recording_url": "https://cdn.example.com/x.mp4"},
                headers=other_headers,
            )
            assert refused.status_code == 400
            assert list(refused.json()["errors"]) == ["recording_url"]


async def test_unreachable_s3_at_registration_leaves_it_pending(
    database_url: str, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = S3Endpoint(f"http://127.0.0.1:{free_port()}", "AKIAEXAMPLE", "secret")
    async for app in s3_app(
        database_url, closed, monkeypatch, recordings_prefix="s3://calls/{tenant}/"
    ):
        async with asgi_client(app) as client:
            headers, session_id, tenant = await _started(client, factory)
            started = time.monotonic()
            data = await _finalize(client, headers, session_id, f"s3://calls/{tenant}/a.mp4")
            assert data["recording_status"] == "PENDING"
            assert time.monotonic() - started < 15  # bounded by the client's timeouts


async def test_local_status_follows_the_file(
    database_url: str, factory: Factory, local_store_settings: dict[str, object], tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, recordings_prefix="s3://local-calls/{tenant}/", **local_store_settings
    )
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            headers, session_id, tenant = await _started(client, factory)
            url = f"s3://local-calls/{tenant}/{session_id}.wav"
            pending = await _finalize(client, headers, session_id, url)
            assert (pending["recording_status"], pending["recording_presigned_url"]) == (
                "PENDING",
                None,
            )
            history = await client.get("/api/billing/usage/?page_size=1", headers=headers)
            assert history.json()["data"]["sessions"][0]["recording_presigned_url"] is None
            anam = await client.get(f"/v1/sessions/{session_id}/recording", headers=headers)
            assert anam.status_code == 404

            target = tmp_path / "recordings" / "local-calls" / tenant / f"{session_id}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(AUDIO)
            ready = await _finalize(client, headers, session_id, url)
            assert ready["recording_status"] == "READY"
            assert (await client.get(ready["recording_presigned_url"])).content == AUDIO
            history = await client.get("/api/billing/usage/?page_size=1", headers=headers)
            assert history.json()["data"]["sessions"][0]["recording_presigned_url"].startswith(
                "http://testserver/recordings/"
            )
