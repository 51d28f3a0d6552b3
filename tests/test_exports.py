"""Transcript exports: each format is read back by an independent reader (webvtt-py, srt,
markdown-it, orjson, a real browser's <track>) and compared with the turns it came from."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import pytest
import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from playwright.async_api import Page, Route

from transcripts.domain import SessionRecord, Turns
from transcripts.exports import (
    EXPORT_FORMATS,
    ExportFormat,
    content_disposition,
    export_filename,
    export_spec,
    iter_cue_times,
    iter_export,
    render_export,
)

Role = Literal["user", "assistant"]
CREATED_AT = datetime(2026, 11, 30, 9, 15, 0, tzinfo=UTC)
WORD_JOINER = "\u2060"


def turn(
    role: Role,
    text: str,
    ts: float,
    duration: float | None = None,
    *,
    interrupted: bool = False,
) -> tuple[Role, str, float, float | None, bool]:
    return role, text, ts, duration, interrupted


def record(
    turns: Sequence[tuple[Role, str, float, float | None, bool]],
    *,
    session_seconds: float | None = None,
    session_id: str = "7a4f2c1e-0b1d-4c55-9a7e-3f0d2b6c8e11",
    character_name: str = "Ava",
) -> SessionRecord:
    columns = Turns.empty()
    for index, (role, text, ts, duration, interrupted) in enumerate(turns):
        columns.turn_index.append(index)
        columns.role.append(role)
        columns.text.append(text)
        columns.ts.append(ts)
        columns.speaking_duration_seconds.append(duration)
        columns.was_interrupted.append(interrupted)
    ended_at = None if session_seconds is None else CREATED_AT + timedelta(seconds=session_seconds)
    return SessionRecord(
        id=1,
        session_id=session_id,
        tenant_slug="acme",
        character_slug="ava",
        character_name=character_name,
        character_public_id="char_ava",
        user_id=None,
        room_name="room-1",
        origin_url=None,
        metadata_json="{}",
        client_label=None,
        transcripts_enabled=True,
        created_at=CREATED_AT,
        updated_at=None,
        ended_at=ended_at,
        finalized_at=None,
        llm_input_tokens=0,
        llm_output_tokens=0,
        llm_model=None,
        llm_provider=None,
        stt_audio_seconds=0.0,
        stt_provider=None,
        tts_characters=0,
        tts_provider=None,
        estimated_cost_micros=0,
        recording_status="none",
        recording_url=None,
        counted_turns=len(columns.turn_index),
        counted_interruptions=0,
        turns=columns,
    )


def shown_lines(text: str) -> list[str]:
    """The documented text rule of the cue formats: WebVTT line breaks, no blank lines."""
    return [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]


def read_vtt(body: bytes) -> list[tuple[str | None, str, int, int]]:
    """(voice, text as shown, start ms, end ms) of each cue, by webvtt-py's strict reader."""
    captions = webvtt.WebVTT.from_string(body.decode(), strict=True).captions
    return [
        (
            caption.voice,
            html.unescape(caption.text),
            caption.start_time.in_milliseconds(),
            caption.end_time.in_milliseconds(),
        )
        for caption in captions
    ]


def read_srt(body: bytes) -> list[tuple[int, str, int, int]]:
    return [
        (
            subtitle.index,
            subtitle.content.replace(WORD_JOINER, ""),
            subtitle.start // timedelta(milliseconds=1),
            subtitle.end // timedelta(milliseconds=1),
        )
        for subtitle in srt.parse(body.decode())
    ]


def read_markdown(body: bytes) -> tuple[list[str], list[str]]:
    """The header's list items and each paragraph's text, as a CommonMark reader sees them.

    Fails on any inline markup other than the line breaks and the bold prefix the exporter
    writes itself: text that became a link, code, emphasis or HTML was not escaped."""
    tokens = MarkdownIt("commonmark").parse(body.decode())
    assert [token.type for token in tokens[:3]] == ["heading_open", "inline", "heading_close"]
    header: list[str] = []
    paragraphs: list[str] = []
    in_list = False
    for token in tokens[3:]:
        assert token.type in {
            "bullet_list_open",
            "bullet_list_close",
            "list_item_open",
            "list_item_close",
            "paragraph_open",
            "paragraph_close",
            "inline",
        }, token
        if token.type in {"bullet_list_open", "bullet_list_close"}:
            in_list = token.type == "bullet_list_open"
        if token.type != "inline":
            continue
        parts = []
        for child in token.children or []:
            assert child.type in {
                "text",
                "softbreak",
                "hardbreak",
                "strong_open",
                "strong_close",
            }, child
            if child.type == "text":
                parts.append(child.content)
            elif child.type in {"softbreak", "hardbreak"}:
                parts.append("\n")
            else:
                parts.append("**")
        (header if in_list else paragraphs).append("".join(parts))
    return header, paragraphs


CONVERSATION = record(
    [
        turn("assistant", "Hello, I'm Ava. How can I help?", 0.4, 2.35),
        turn("user", "Where is my order?", 3.1),
        turn("assistant", "Let me look.\nIt left the warehouse today.", 5.0, 3.2, interrupted=True),
        turn("user", "Thanks!", 7.25),
    ],
    session_seconds=12.0,
)
# Cue times by the rule: duration; next turn's ts; duration; the session's end.
CONVERSATION_TIMES = [(400, 2750), (3100, 5000), (5000, 8200), (7250, 12000)]


def test_each_format_has_its_media_type_and_extension() -> None:
    assert {name: (spec.media_type, spec.extension) for name, spec in EXPORT_FORMATS.items()} == {
        "vtt": ("text/vtt; charset=utf-8", "vtt"),
        "srt": ("application/x-subrip", "srt"),
        "txt": ("text/plain; charset=utf-8", "txt"),
        "md": ("text/markdown; charset=utf-8", "md"),
        "jsonl": ("application/x-ndjson", "jsonl"),
    }
    assert export_spec("srt").media_type == "application/x-subrip"
    with pytest.raises(ValueError, match="unknown transcript export format"):
        export_spec("docx")


def test_filenames_are_safe_to_quote() -> None:
    assert export_filename("7a4f2c1e-0b1d", "vtt") == "transcript-7a4f2c1e-0b1d.vtt"
    assert export_filename('../a b";\r\nx', "md") == "transcript-a_b_x.md"
    assert export_filename("///", "txt") == "transcript-session.txt"
    assert content_disposition("s-1", "jsonl") == 'attachment; filename="transcript-s-1.jsonl"'
    assert (
        content_disposition("s-1", "srt", attachment=False)
        == 'inline; filename="transcript-s-1.srt"'
    )


def test_vtt_cues_carry_the_voice_text_and_times_of_each_turn() -> None:
    body = render_export(CONVERSATION, "vtt")
    assert body.startswith(b"WEBVTT\n\n")
    assert read_vtt(body) == [
        ("Assistant", "Hello, I'm Ava. How can I help?", 400, 2750),
        ("User", "Where is my order?", 3100, 5000),
        ("Assistant", "Let me look.\nIt left the warehouse today.", 5000, 8200),
        ("User", "Thanks!", 7250, 12000),
    ]
    assert "<v Assistant>Let me look.\nIt left the warehouse today.\n" in body.decode()


def test_srt_subtitles_are_numbered_labelled_and_timed() -> None:
    assert read_srt(render_export(CONVERSATION, "srt")) == [
        (1, "Assistant: Hello, I'm Ava. How can I help?", 400, 2750),
        (2, "User: Where is my order?", 3100, 5000),
        (3, "Assistant: Let me look.\nIt left the warehouse today.", 5000, 8200),
        (4, "User: Thanks!", 7250, 12000),
    ]


def test_txt_uses_the_labels_of_transcript_text() -> None:
    assert render_export(CONVERSATION, "txt").decode() == (
        "Assistant: Hello, I'm Ava. How can I help?\n"
        "User: Where is my order?\n"
        "Assistant: Let me look.\n"
        "  It left the warehouse today.\n"
        "User: Thanks!\n"
    )


def test_markdown_has_a_header_and_a_timestamped_paragraph_per_turn() -> None:
    body = render_export(CONVERSATION, "md")
    assert body.decode().startswith(
        "# Transcript: Ava\n\n"
        "- Session: 7a4f2c1e-0b1d-4c55-9a7e-3f0d2b6c8e11\n"
        "- Started: 2026-11-30 09:15:00 UTC\n"
        "- Duration: 00:12\n\n"
        "**[00:00] Assistant:** Hello, I'm Ava. How can I help?\n\n"
    )
    header, paragraphs = read_markdown(body)
    assert header == [
        "Session: 7a4f2c1e-0b1d-4c55-9a7e-3f0d2b6c8e11",
        "Started: 2026-11-30 09:15:00 UTC",
        "Duration: 00:12",
    ]
    assert paragraphs == [
        "**[00:00] Assistant:** Hello, I'm Ava. How can I help?",
        "**[00:03] User:** Where is my order?",
        "**[00:05] Assistant (interrupted):** Let me look.\nIt left the warehouse today.",
        "**[00:07] User:** Thanks!",
    ]


def test_markdown_of_a_session_in_progress_and_past_an_hour() -> None:
    long = record([turn("user", "Still there?", 3725.9)], character_name="Dr. *Who* <script>")
    text = render_export(long, "md").decode()
    assert "- Duration: in progress\n" in text
    assert "**[1:02:05] User:** Still there?" in text
    tokens = MarkdownIt("commonmark").parse(text)
    assert tokens[1].content == r"Transcript: Dr. \*Who\* \<script\>"
    assert [child.type for child in tokens[1].children or []] == ["text"]
    assert tokens[1].children[0].content == "Transcript: Dr. *Who* <script>"  # type: ignore[index]


def test_jsonl_has_one_object_per_turn_with_the_item_fields() -> None:
    lines = render_export(CONVERSATION, "jsonl").splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {
            "role": "assistant",
            "text": "Hello, I'm Ava. How can I help?",
            "turn_index": 0,
            "ts": 0.4,
            "speaking_duration_seconds": 2.35,
            "was_interrupted": False,
        },
        {
            "role": "user",
            "text": "Where is my order?",
            "turn_index": 1,
            "ts": 3.1,
            "speaking_duration_seconds": None,
            "was_interrupted": False,
        },
        {
            "role": "assistant",
            "text": "Let me look.\nIt left the warehouse today.",
            "turn_index": 2,
            "ts": 5.0,
            "speaking_duration_seconds": 3.2,
            "was_interrupted": True,
        },
        {
            "role": "user",
            "text": "Thanks!",
            "turn_index": 3,
            "ts": 7.25,
            "speaking_duration_seconds": None,
            "was_interrupted": False,
        },
    ]


NASTY = [
    "a --> b",
    "00:00:01.000 --> 00:00:02.000",
    "<b>bold</b> & <i>x</i> &amp; &lt; <v Narrator>",
    "first\n\nsecond\n \t \nthird",
    "windows\r\nline\rbreaks",
    "NOTE this is not a comment",
    "cue:\n1\n00:00:03,000 --> 00:00:04,000\nfake cue",
    "at\n42\n12:30:45 is the time",
    "# not a heading\n- not a list\n1. not ordered\n> not a quote\n===\n```\n    code?",
    "**not bold** _not em_ `not code` [not](a link) <http://x.y> ![img](i.png) \\",
    "Grüße, ça va? 你好 🙂 مرحبا e\u0301 \u00a0nbsp",
    "",
]


@pytest.mark.parametrize("text", NASTY)
def test_text_survives_every_format(text: str) -> None:
    source = record([turn("assistant", text, 1.0, 1.5), turn("user", "ok", 3.0)])
    lines = shown_lines(text)

    [cue, _] = read_vtt(render_export(source, "vtt"))
    assert cue == ("Assistant", "\n".join(lines), 1000, 2500)

    [subtitle, _] = read_srt(render_export(source, "srt"))
    assert subtitle == (1, "Assistant: " + "\n".join(lines), 1000, 2500)

    _, [paragraph, _] = read_markdown(render_export(source, "md"))
    assert (
        paragraph
        == ("**[00:01] Assistant:** " + "\n".join(line.strip() for line in lines)).rstrip()
    )

    assert render_export(source, "txt").decode().split("\n") == [
        f"Assistant: {lines[0] if lines else ''}",
        *[f"  {line}" for line in lines[1:]],
        "User: ok",
        "",
    ]

    [item, _] = render_export(source, "jsonl").splitlines()
    assert orjson.loads(item)["text"] == text


def test_vtt_escapes_markup_and_the_timing_arrow() -> None:
    source = record([turn("user", "<b>x</b> & y --> z", 0.0, 1.0)])
    assert render_export(source, "vtt").decode() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v User>&lt;b&gt;x&lt;/b&gt; &amp; y --&gt; z\n"
    )


def test_srt_breaks_what_a_reader_would_take_for_a_new_cue() -> None:
    source = record([turn("user", "see:\n1\n00:00:03,000 --> 00:00:04,000\nfake", 0.0, 1.0)])
    body = render_export(source, "srt").decode()
    assert (
        f"\nUser: see:\n1{WORD_JOINER}\n00:00:03,000 --{WORD_JOINER}> 00:00:04,000\nfake\n" in body
    )
    assert len(list(srt.parse(body))) == 1


# Any character, and more often the pieces that mean something to one of the formats.
cue_text = st.lists(
    st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00\u2060"),
        st.sampled_from(
            [
                "\n",
                "\r\n",
                "\r",
                "-->",
                "<",
                ">",
                "&",
                "*",
                "#",
                "- ",
                "\\",
                " ",
                "1",
                "00:00:01,000",
            ]
        ),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(cue_text, min_size=1, max_size=4))
def test_any_text_reads_back(texts: list[str]) -> None:
    source = record([turn("user", text, float(index)) for index, text in enumerate(texts)])
    expected = ["\n".join(shown_lines(text)) for text in texts]
    assert [(voice, text) for voice, text, _, _ in read_vtt(render_export(source, "vtt"))] == [
        ("User", text) for text in expected
    ]
    assert [text for _, text, _, _ in read_srt(render_export(source, "srt"))] == [
        f"User: {text}" for text in expected
    ]
    _, paragraphs = read_markdown(render_export(source, "md"))
    assert paragraphs == [
        f"**[00:0{index}] User:** {body}".rstrip()
        for index, body in enumerate(
            "\n".join(line.strip() for line in lines) for lines in map(shown_lines, texts)
        )
    ]


@pytest.mark.parametrize(
    ("turns", "session_seconds", "expected"),
    [
        # The speaking duration wins over the next turn's start.
        ([("assistant", 1.0, 4.0), ("user", 2.0, None)], None, [(1000, 5000), (2000, 4000)]),
        # No duration: until the next turn; the last one until the session's end.
        ([("user", 0.0, None), ("assistant", 2.5, None)], 10.0, [(0, 2500), (2500, 10000)]),
        # The last turn of a session still in progress: the default two seconds.
        ([("user", 0.0, None), ("assistant", 2.5, None)], None, [(0, 2500), (2500, 4500)]),
        # A session that ended before the last turn's start: the default.
        ([("user", 8.0, None)], 5.0, [(8000, 10000)]),
        # Zero, negative and NaN durations count as missing.
        (
            [
                ("user", 0.0, 0.0),
                ("user", 1.0, -3.0),
                ("user", 2.0, float("nan")),
                ("user", 3.0, None),
            ],
            9.0,
            [(0, 1000), (1000, 2000), (2000, 3000), (3000, 9000)],
        ),
        # The next turn starts at the same time or earlier: the default, not an empty cue.
        (
            [("user", 5.0, None), ("assistant", 5.0, None), ("user", 4.0, None)],
            6.0,
            [(5000, 7000), (5000, 7000), (4000, 6000)],
        ),
        # A cue lasts at least 100 ms, even when the duration rounds to nothing.
        (
            [("user", 1.0, 0.03), ("user", 2.0, 0.0004), ("user", 2.0004, None)],
            None,
            [(1000, 1100), (2000, 4000), (2000, 4000)],
        ),
        # A negative ts starts at zero; times round to the millisecond.
        ([("user", -1.0, 0.5), ("user", 1.23456, 0.0015)], None, [(0, 500), (1235, 1335)]),
    ],
)
def test_cue_timing_rule(
    turns: list[tuple[Role, float, float | None]],
    session_seconds: float | None,
    expected: list[tuple[int, int]],
) -> None:
    source = record(
        [
            turn(role, f"turn {index}", ts, duration)
            for index, (role, ts, duration) in enumerate(turns)
        ],
        session_seconds=session_seconds,
    )
    assert list(iter_cue_times(source.transcript, source.duration_seconds)) == expected
    assert [(start, end) for _, _, start, end in read_vtt(render_export(source, "vtt"))] == expected
    assert [(start, end) for _, _, start, end in read_srt(render_export(source, "srt"))] == expected
    assert all(end > start for start, end in expected)


def test_a_transform_reaches_every_format() -> None:
    source = record([turn("user", "call me at 555-0100", 0.0, 1.0)])

    def redact(text: str) -> str:
        return re.sub(r"\d", "#", text)

    for fmt in EXPORT_FORMATS:
        body = render_export(source, fmt, transform=redact).decode()
        assert "###-####" in body, fmt
        assert "555" not in body, fmt


def test_empty_transcripts() -> None:
    empty = record([], session_seconds=3.0)
    assert render_export(empty, "vtt") == b"WEBVTT\n"
    assert webvtt.WebVTT.from_string("WEBVTT\n").captions == []
    assert render_export(empty, "srt") == b""
    assert render_export(empty, "txt") == b""
    assert render_export(empty, "jsonl") == b""
    assert render_export(empty, "md").decode().endswith("- Duration: 00:03\n")


def test_mistakes_fail_before_the_first_chunk() -> None:
    unloaded = record([])
    object.__setattr__(unloaded, "turns", None)
    with pytest.raises(ValueError, match="not loaded"):
        iter_export(unloaded, "vtt")
    with pytest.raises(ValueError, match="chunk_turns"):
        iter_export(CONVERSATION, "vtt", chunk_turns=0)
    with pytest.raises(ValueError, match="unknown"):
        iter_export(CONVERSATION, "pdf")  # type: ignore[arg-type]


TEN_THOUSAND = record(
    [
        turn(
            "assistant" if index % 2 else "user",
            f"turn {index} & <more>" + ("\n\nsecond line" if index % 7 == 0 else ""),
            index * 1.5,
            1.2 if index % 2 else None,
            interrupted=index % 5 == 0,
        )
        for index in range(10_000)
    ],
    session_seconds=15_001.0,
)


@pytest.mark.parametrize("fmt", list(EXPORT_FORMATS))
def test_ten_thousand_turns_stream_in_bounded_chunks(fmt: ExportFormat) -> None:
    calls = 0

    def counting(text: str) -> str:
        nonlocal calls
        calls += 1
        return text

    chunks: Iterator[bytes] = iter_export(TEN_THOUSAND, fmt, transform=counting, chunk_turns=500)
    first = next(chunks)
    # Lazy: the first chunk has rendered at most one batch of turns.
    assert calls <= 500
    rest = list(chunks)
    assert calls == 10_000
    assert len(rest) >= 19
    assert all(isinstance(chunk, bytes) and 0 < len(chunk) < 100_000 for chunk in [first, *rest])
    body = b"".join([first, *rest])
    if fmt == "vtt":
        cues = read_vtt(body)
        assert len(cues) == 10_000
        assert cues[7] == ("Assistant", "turn 7 & <more>\nsecond line", 10_500, 11_700)
        assert cues[-1] == ("Assistant", "turn 9999 & <more>", 14_998_500, 14_999_700)
    elif fmt == "srt":
        subtitles = read_srt(body)
        assert [index for index, _, _, _ in subtitles] == list(range(1, 10_001))
        assert subtitles[9998] == (9999, "User: turn 9998 & <more>", 14_997_000, 14_998_500)
    elif fmt == "md":
        _, paragraphs = read_markdown(body)
        assert len(paragraphs) == 10_000
        assert paragraphs[9995] == "**[4:09:52] Assistant (interrupted):** turn 9995 & <more>"
    elif fmt == "txt":
        assert body.decode().count("\n") == 10_000 + 10_000 // 7 + 1
    else:
        items = [orjson.loads(line) for line in body.splitlines()]
        assert [item["turn_index"] for item in items] == list(range(10_000))
        assert items[14]["text"] == "turn 14 & <more>\n\nsecond line"


# --- In a real browser ------------------------------------------------------------------------

ORIGIN = "http://exports.test"
PLAYER = f"""<!doctype html>
<video id="player" muted preload="none">
  <track id="transcript" kind="subtitles" srclang="en" label="Transcript" default
         src="{ORIGIN}/transcript.vtt">
</video>"""


def serve(body: bytes) -> Callable[[Route], Any]:
    async def handle(route: Route) -> None:
        if route.request.url.endswith("/transcript.vtt"):
            await route.fulfill(body=body, content_type=EXPORT_FORMATS["vtt"].media_type)
        else:
            await route.fulfill(body=PLAYER, content_type="text/html; charset=utf-8")

    return handle


async def test_a_browser_track_reads_the_vtt_export(page: Page) -> None:
    source = record(
        [
            turn("assistant", "Hello & <welcome> --> here", 0.25, 2.0),
            turn("user", "Two\n\nparagraphs, ünïcödé 🙂", 2.5),
            turn("assistant", "a < b > c", 4.75, interrupted=True),
        ],
        session_seconds=7.5,
    )
    await page.route(f"{ORIGIN}/**", serve(render_export(source, "vtt")))
    await page.goto(f"{ORIGIN}/")
    # 2 is LOADED; 3 (ERROR) ends the wait too, and fails the comparison below.
    await page.wait_for_function("document.getElementById('transcript').readyState >= 2")
    state, cues = await page.evaluate(
        """() => {
            const element = document.getElementById('transcript');
            return [element.readyState, Array.from(element.track.cues, (cue) => {
                const shown = cue.getCueAsHTML();
                const voice = shown.querySelector('span[title]');
                return [cue.startTime, cue.endTime, cue.text,
                        voice && voice.title, shown.textContent];
            })];
        }"""
    )
    assert state == 2
    assert cues == [
        [
            0.25,
            2.25,
            "<v Assistant>Hello &amp; &lt;welcome&gt; --&gt; here",
            "Assistant",
            "Hello & <welcome> --> here",
        ],
        [2.5, 4.75, "<v User>Two\nparagraphs, ünïcödé 🙂", "User", "Two\nparagraphs, ünïcödé 🙂"],
        [4.75, 7.5, "<v Assistant>a &lt; b &gt; c", "Assistant", "a < b > c"],
    ]
