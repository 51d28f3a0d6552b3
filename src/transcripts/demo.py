"""Demo data for the embedded default: a tenant, its owner, a character and a few sessions.

Seeded through the same service functions the write API uses, and idempotent: a second run
reuses what the first one stored and only issues fresh credentials.
"""

from __future__ import annotations

import io
import math
import random
import sys
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.domain import CharacterRecord, NewTurn, UserRecord
from transcripts.pricing import PriceTable, Usage
from transcripts.recordings import LocalRecordingStore
from transcripts.services import accounts, sessions

__all__ = ["DemoData", "seed_demo"]

DEMO_EMAIL = "owner@acme.example"
DEMO_KEY_NAME = "demo"

SEED_EXAMPLE_TURNS = [
    ("assistant", "Hi! How can I help you today?"),
    ("user", "I want to book a demo."),
    ("assistant", "Great! Which day works best for you this week?"),
    ("user", "Thursday afternoon, if possible."),
    ("assistant", "Thursday at 2 PM or 4 PM are open. Which do you prefer?"),
    ("user", "Four would be perfect."),
    ("assistant", "Done. Can I get the email address the invite should go to?"),
    ("user", "It's dana at northwind dot com."),
    ("assistant", "Thanks, Dana. How many people from your team will join?"),
    ("user", "Probably three of us, me plus two engineers."),
    ("assistant", "Noted. Is there anything specific you would like us to cover?"),
    ("user", "Mostly the voice widget and how transcripts get exported."),
    ("assistant", "Perfect, I've added that to the agenda. You'll get the invite shortly."),
    ("user", "Great, thanks for the help!"),
]

_ASSISTANT_LINES = [
    "Sure, let me pull that up for you. One moment while I check your account details.",
    "Our Pro plan includes unlimited characters, call recordings and a full transcript export.",
    "That's a good question. The widget can be embedded on any page with a single script tag.",
    "I can walk you through that step by step. First, open the dashboard and choose Characters.",
    "Transcripts are available right after the call ends, and recordings follow a minute later.",
    "Of course. Would you like me to send a summary of this conversation to your email?",
    "Billing is monthly, based on the minutes your characters spend talking with visitors.",
    "I understand the frustration. Let me see what happened with that session yesterday.",
]
_USER_LINES = [
    "How long do you keep the recordings, and can we download them ourselves?",
    "We have about two thousand visitors a day; will the widget keep up with that?",
    "Can the assistant hand the call over to a human when it gets stuck?",
    "I tried the embed code on our staging site but nothing showed up on the page.",
    "What languages does the speech recognition support right now?",
    "Is there an API to fetch transcripts so we can index them in our own search?",
    "Okay, that makes sense. And what happens if a caller hangs up halfway through?",
    "Could you repeat the part about pricing? I got distracted for a second.",
]


DEMO_BUCKET = "demo-recordings"


# The example call's length, as the seed's example reports it.
EXAMPLE_CALL_SECONDS = 184.7
RECORDING_RATE = 8_000


def example_turns() -> list[NewTurn]:
    """The seed's example conversation, a turn every 12.8 s, each spoken at 15 characters/s."""
    return [
        NewTurn(
            turn_index=index,
            role="assistant" if role == "assistant" else "user",
            text=text,
            ts=round(0.42 + index * 12.8, 2),
            speaking_duration_seconds=round(len(text) / 15, 2),
            was_interrupted=index in (4, 8),
        )
        for index, (role, text) in enumerate(SEED_EXAMPLE_TURNS)
    ]


def synthesized_call(
    turns: Sequence[NewTurn], seconds: float = EXAMPLE_CALL_SECONDS, rate: int = RECORDING_RATE
) -> bytes:
    """A WAV of the whole call made here, so the demo's recording plays in a browser without
    downloading anything: silence, and a "voice" while each turn is spoken (a lower, wavering
    tone for the assistant, a higher one for the caller), so a transcript synced to it can be
    heard to be in step."""
    samples = array("h", bytes(2 * int(seconds * rate)))
    for turn in turns:
        start = int(turn.ts * rate)
        length = int((turn.speaking_duration_seconds or 1.0) * rate)
        base = 196.0 if turn.role == "assistant" else 294.0
        for n in range(min(length, len(samples) - start)):
            t = n / rate
            # Syllables: an envelope that rises and falls four times a second.
            envelope = 0.35 * abs(math.sin(math.pi * 4 * t))
            pitch = base + 20 * math.sin(2 * math.pi * 2.5 * t)
            samples[start + n] = int(32767 * envelope * math.sin(2 * math.pi * pitch * t))
    if sys.byteorder == "big":
        samples.byteswap()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def ensure_recording(recordings_dir: Path, session_id: object) -> None:
    recording = recordings_dir / DEMO_BUCKET / f"{session_id}.wav"
    if not recording.is_file():
        recording.parent.mkdir(parents=True, exist_ok=True)
        recording.write_bytes(synthesized_call(example_turns()))


@dataclass(frozen=True)
class DemoData:
    user_id: int
    character_slug: str
    api_key: str
    session_ids: list[str]


def long_transcript(turn_count: int, seed: int = 7) -> list[NewTurn]:
    rng = random.Random(seed)
    turns: list[NewTurn] = []
    ts = 0.4
    for index in range(turn_count):
        role: Literal["user", "assistant"] = "assistant" if index % 2 == 0 else "user"
        lines = _ASSISTANT_LINES if role == "assistant" else _USER_LINES
        text = rng.choice(lines)
        speaking = round(len(text) / 15, 2)
        turns.append(
            NewTurn(
                turn_index=index,
                role=role,
                text=text,
                ts=round(ts, 2),
                speaking_duration_seconds=speaking,
                was_interrupted=role == "assistant" and rng.random() < 0.08,
            )
        )
        ts += speaking + rng.uniform(0.3, 1.5)
    return turns


async def seed_demo(
    db: AsyncSession, prices: PriceTable, recordings: LocalRecordingStore
) -> DemoData:
    recordings_dir = recordings.directory
    user = await accounts.user_by_email(db, DEMO_EMAIL)
    if user is None:
        user = await accounts.create_user(db, DEMO_EMAIL, tenant_slug="acme")
        character = await accounts.create_character(
            db,
            user.id,
            slug="support-bot",
            name="Support Bot",
            allowed_origins=["http://127.0.0.1:8000", "http://localhost:8000"],
        )
        await _seed_sessions(db, character, user, prices, recordings)
    # Keys are shown once, so each run issues a new one and retires the last run's.
    await accounts.revoke_api_keys_named(db, user.id, DEMO_KEY_NAME)
    _, generated = await accounts.create_api_key(db, user.id, DEMO_KEY_NAME)
    session_ids = [
        str(session_id) for session_id in await sessions.session_ids_created_by(db, user.id)
    ]
    # Recordings live beside the database, not in it: put the example's back if it went away.
    ensure_recording(recordings_dir, session_ids[0])
    return DemoData(
        user_id=user.id,
        character_slug="support-bot",
        api_key=generated.key,
        session_ids=session_ids,
    )


async def _seed_sessions(
    db: AsyncSession,
    character: CharacterRecord,
    user: UserRecord,
    prices: PriceTable,
    recordings: LocalRecordingStore,
) -> None:
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    example = await sessions.start_session(
        db,
        character,
        user_id=user.id,
        origin_url="https://yoursite.com/contact",
        metadata={"user_id": "u_42", "plan": "pro"},
        room_name="oshara-voice-support-bot-user123-abc12",
        started_at=started,
    )
    await sessions.append_turns(db, example, example_turns())
    # The worker uploads the call recording, then registers it at finalize.
    ensure_recording(recordings.directory, example.session_id)
    recording_url = f"s3://{DEMO_BUCKET}/{example.session_id}.wav"
    await sessions.finalize_session(
        db,
        example,
        Usage(
            llm_input_tokens=1840,
            llm_output_tokens=612,
            llm_model="gpt-4o-mini",
            llm_provider="openai",
            stt_audio_seconds=92.3,
            stt_provider="openai",
            tts_characters=1284,
            tts_provider="chatterbox",
        ),
        prices,
        ended_at=started + timedelta(seconds=EXAMPLE_CALL_SECONDS),
        recording=sessions.RegisteredRecording(
            recording_url, await recordings.check(recording_url)
        ),
    )

    long_started = started + timedelta(minutes=30)
    turns = long_transcript(320)
    long_session = await sessions.start_session(
        db,
        character,
        user_id=user.id,
        origin_url="https://yoursite.com/pricing",
        metadata={"user_id": "u_77", "plan": "enterprise"},
        started_at=long_started,
    )
    await sessions.append_turns(db, long_session, turns)
    await sessions.finalize_session(
        db,
        long_session,
        Usage(
            llm_input_tokens=48_210,
            llm_output_tokens=15_902,
            llm_model="gpt-4o-mini",
            llm_provider="openai",
            stt_audio_seconds=round(turns[-1].ts / 2, 1),
            stt_provider="openai",
            tts_characters=sum(len(t.text) for t in turns if t.role == "assistant"),
            tts_provider="openai",
        ),
        prices,
        ended_at=long_started + timedelta(seconds=turns[-1].ts + 5),
    )

    in_progress = await sessions.start_session(
        db,
        character,
        user_id=user.id,
        origin_url="https://yoursite.com/",
        metadata={"plan": "free"},
        started_at=datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1),
    )
    await sessions.append_turns(db, in_progress, long_transcript(4, seed=3))
