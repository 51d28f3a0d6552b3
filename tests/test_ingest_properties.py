"""Property: however a transcript's turns arrive (split into any batches, retried, reordered,
repeated within a batch), it reads back as exactly that transcript, in both dialects.

Each example starts a fresh session over HTTP and posts its batches one by one; every
answer must count exactly the turns that were new. Derandomized and bounded, so the suite
sees the same examples every run.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import Factory
from tests.write_path import TURNS, Worker, ok, owner_worker

MAX_EXAMPLES = int(os.environ.get("TRANSCRIPTS_TEST_PROPERTY_EXAMPLES", "25"))

# Any text the service promises to keep: every code point but U+0000 and lone surrogates.
texts = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    min_size=1,
    max_size=80,
)
seconds = st.floats(min_value=0, max_value=86_400, allow_nan=False, allow_infinity=False)


@st.composite
def transcripts(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=0, max_value=40))
    return [
        {
            "turn_index": index,
            "role": draw(st.sampled_from(["user", "assistant"])),
            "text": draw(texts),
            "ts": draw(seconds),
            "speaking_duration_seconds": draw(st.none() | seconds),
            "was_interrupted": draw(st.booleans()),
        }
        for index in range(count)
    ]


@st.composite
def deliveries(draw: st.DrawFn, count: int) -> list[list[int]]:
    """Batches of turn indexes: random subsets with repeats and retries, in any order, then
    whatever was never sent, so that every turn arrives at least once."""
    indexes = st.integers(min_value=0, max_value=count - 1) if count else st.nothing()
    batches = draw(st.lists(st.lists(indexes, max_size=12), max_size=8)) if count else []
    if batches and draw(st.booleans()):
        batches.append(list(draw(st.sampled_from(batches))))  # a retry of an earlier batch
    missing = sorted(set(range(count)) - {index for batch in batches for index in batch})
    if missing:
        batches.insert(draw(st.integers(0, len(batches))), draw(st.permutations(missing)))
    return batches


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # The client and factory serve every example; each example makes its own session.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(transcript=transcripts(), data=st.data())
async def test_any_delivery_reads_back_as_the_transcript(
    client: httpx.AsyncClient, factory: Factory, transcript: list[dict[str, Any]], data: Any
) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    stored: set[int] = set()

    for batch in data.draw(deliveries(len(transcript)), label="batches"):
        response = await client.post(
            TURNS.format(session_id), json=[transcript[i] for i in batch], headers=worker.headers
        )
        new = set(batch) - stored
        stored |= new
        assert response.json() == ok(
            {
                "session_id": session_id,
                "received": len(batch),
                "inserted": len(new),
                "turn_count": len(stored),
            }
        )

    await assert_reads_back(worker, session_id, transcript)


async def assert_reads_back(
    worker: Worker, session_id: str, transcript: list[dict[str, Any]]
) -> None:
    agents = await worker.read(session_id)
    assert agents["transcript"] == [
        {key: turn[key] for key in ("role", "text", "turn_index", "ts")} for turn in transcript
    ]
    assert agents["turn_count"] == len(transcript)
    # Only an assistant turn can be interrupted (README, "interruption_count").
    assert agents["interruption_count"] == sum(
        turn["was_interrupted"] for turn in transcript if turn["role"] == "assistant"
    )
    assert agents["transcript_text"] == "\n".join(
        f"{turn['role'].capitalize()}: {turn['text']}" for turn in transcript
    )

    anam = (
        await worker.client.get(f"/v1/sessions/{session_id}/transcript", headers=worker.headers)
    ).json()
    assert anam["totalMessages"] == len(transcript)
    started = parse(agents["created_at"])  # Anam's startTime is cut to milliseconds
    for message, turn in zip(anam["messages"], transcript, strict=True):
        expected = {
            "role": "persona" if turn["role"] == "assistant" else "user",
            "message": turn["text"],
            "timestamp": message["timestamp"],
            "speakingDurationSeconds": turn["speaking_duration_seconds"],
        }
        if turn["role"] == "assistant":
            expected["wasInterrupted"] = turn["was_interrupted"]
        assert message == expected
        # Milliseconds, truncated: the stamp is the start plus ts, to within one.
        offset = parse(message["timestamp"]) - (started + timedelta(seconds=turn["ts"]))
        assert timedelta(milliseconds=-1) < offset <= timedelta(0)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
