"""`transcripts demo`, as a newcomer meets it: a real uvicorn process and its printed curl lines."""

from __future__ import annotations

import io
import json
import re
import subprocess
import wave
from pathlib import Path

import httpx

from tests.servers import TRANSCRIPTS, clean_environment, transcripts_process

SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def paste(curl_line: str) -> tuple[int, str]:
    """Run a printed line the way a person pasting it into bash would, noting the status."""
    result = subprocess.run(
        ["bash", "-c", curl_line + " -o /dev/stderr -w '%{http_code}'"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(result.stdout), result.stderr


def curl_lines(output: list[str]) -> list[str]:
    return [line for line in output if line.startswith("curl ")]


def test_demo_prints_curl_lines_that_answer_200(database_url: str, tmp_path: Path) -> None:
    env = {"TRANSCRIPTS_DATABASE_URL": database_url}
    with transcripts_process("demo", env=env, cwd=tmp_path) as server:
        curls = curl_lines(server.output)
        assert any("X-API-Key: sk_" in line for line in curls)
        assert any("Authorization: Bearer ey" in line for line in curls)
        assert any("/v1/sessions/" in line for line in curls)
        assert any("/api/agents/" in line for line in curls)
        first_key = re.search(r"sk_[0-9a-f]{64}", "\n".join(curls))
        for line in curls:
            status, body = paste(line)
            assert status == 200, (line, body)
        # Beside the curl lines, the page a person can open (tests/test_viewer.py drives it).
        viewer = f"# Transcript viewer: {server.base_url}/ui/ (sign in with the API key above)"
        assert viewer in server.output
        page = httpx.get(f"{server.base_url}/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")

    # A second run reuses the data, issues a new key and retires the old one.
    with transcripts_process("demo", env=env, cwd=tmp_path) as server:
        second = curl_lines(server.output)
        assert SESSION_ID.findall("\n".join(second)) == SESSION_ID.findall("\n".join(curls))
        for line in second:
            assert paste(line)[0] == 200
        assert first_key is not None
        url = second[0].split()[-1].strip("'")
        assert httpx.get(url, headers={"X-API-Key": first_key.group(0)}).status_code == 401


def test_demo_recording_plays(database_url: str, tmp_path: Path) -> None:
    with transcripts_process(
        "demo", env={"TRANSCRIPTS_DATABASE_URL": database_url}, cwd=tmp_path
    ) as server:
        line = next(line for line in curl_lines(server.output) if line.endswith("/recording"))
        status, body = paste(line)
        assert status == 200
        url = json.loads(body)["recordingUrl"]
        assert url.startswith(f"{server.base_url}/recordings/demo-recordings/")
        audio = httpx.get(url)
        assert audio.status_code == 200
        assert audio.headers["content-type"] == "audio/wav"
        assert audio.content[:4] == b"RIFF"
        assert audio.content[8:12] == b"WAVE"
        with wave.open(io.BytesIO(audio.content)) as recording:
            assert recording.getnframes() / recording.getframerate() >= 3  # a few real seconds
        seek = httpx.get(url, headers={"Range": "bytes=44-1043"})  # what <audio> does to seek
        assert (seek.status_code, seek.content) == (206, audio.content[44:1044])


def test_long_demo_transcript(database_url: str, tmp_path: Path) -> None:
    with transcripts_process(
        "demo", env={"TRANSCRIPTS_DATABASE_URL": database_url}, cwd=tmp_path
    ) as server:
        jwt_line = next(
            line for line in curl_lines(server.output) if "Bearer ey" in line and "/api/" in line
        )
        status, body = paste(jwt_line)
        assert status == 200
        assert body.count('"turn_index"') >= 300


def test_demo_on_a_busy_port_says_so_and_touches_nothing(database_url: str, tmp_path: Path) -> None:
    env = {"TRANSCRIPTS_DATABASE_URL": database_url}
    with transcripts_process("demo", env=env, cwd=tmp_path) as server:
        key_line = next(line for line in curl_lines(server.output) if "X-API-Key: sk_" in line)
        port = server.base_url.rsplit(":", 1)[1]
        second = subprocess.run(
            [TRANSCRIPTS, "demo", "--port", port],
            env={**clean_environment(), **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stdout == ""
        assert f"cannot serve on 127.0.0.1:{port}" in second.stderr
        assert "--port" in second.stderr
        # The running demo's key was not revoked by the refused one.
        assert paste(key_line)[0] == 200


def test_demo_prints_the_session_in_progress_and_a_recording_of_the_whole_call(
    database_url: str, tmp_path: Path
) -> None:
    with transcripts_process(
        "demo", env={"TRANSCRIPTS_DATABASE_URL": database_url}, cwd=tmp_path
    ) as server:
        comment = server.output.index(
            "# A session still in progress (no endTime yet; the worker is still appending):"
        )
        status, body = paste(server.output[comment + 1])
        assert status == 200
        assert json.loads(body)["endTime"] is None
        line = next(line for line in curl_lines(server.output) if line.endswith("/recording"))
        audio = httpx.get(json.loads(paste(line)[1])["recordingUrl"])
        with wave.open(io.BytesIO(audio.content)) as recording:
            seconds = recording.getnframes() / recording.getframerate()
        assert seconds >= 184.7, "the recording covers the call its transcript's ts refer to"
