"""Transcript exports: WebVTT, SubRip, plain text, Markdown and JSON Lines, synced to the recording.

Pure functions over a loaded ``SessionRecord``; the routes pick the format, pass an optional
text transform (redaction) and stream what ``iter_export`` yields.

Streaming
    ``iter_export`` yields UTF-8 ``bytes``, one chunk per ``chunk_turns`` turns (plus the
    header, in the first chunk), so the output of a 10,000-turn transcript is never held in
    memory at once. Everything that can fail on the record itself (a transcript that was not
    loaded, an unknown format) fails when ``iter_export`` is called, before a response starts.
    ``aiter_export`` is the same writers over turns that arrive in slices (the routes read a
    transcript from the database a batch at a time): one chunk per slice, and only the last
    turn of a slice waits for the next one, whose start may end its cue.

Cue timing (``iter_cue_times``, shared by WebVTT, SubRip and Markdown)
    A cue starts at the turn's ``ts`` (clamped at zero) and ends, in this order of preference:

    1. ``ts + speaking_duration_seconds`` when the duration is a positive number;
    2. the start of the next turn (in turn order) when it is later than this start;
    3. for the last turn, the end of the session when it is known and later than this start;
    4. otherwise ``DEFAULT_CUE_SECONDS`` after the start.

    A cue lasts at least ``MIN_CUE_SECONDS``, so ``end > start`` always holds, even after
    rounding: times are computed in whole milliseconds, the precision of both formats. Cues may
    overlap (people talk over each other); both formats allow it.

Text
    Cue formats cannot carry an empty line inside a cue (it ends the cue), so every format but
    JSON Lines splits the text on CR, LF and CRLF (the WebVTT line terminators) and drops the
    lines that are empty or only whitespace; the remaining line breaks are kept. Then, per
    format:

    - WebVTT: each cue is ``<v Assistant>`` or ``<v User>`` followed by the text with ``&``,
      ``<`` and ``>`` written as character references, so neither markup nor ``-->`` can
      appear in a cue. Written by webvtt-py's own writer, which also refuses any cue text that
      would not read back.
    - SubRip has no escape syntax: the text is written as it is after a speaker label
      (``Assistant: ...``); players read ``<b>``-like tags in it as styling. Two shapes that
      a reader would take for the start of the next cue get an invisible U+2060 WORD JOINER:
      ``-->`` (written ``--<U+2060>>``) and a line that is only a number when the next line
      starts with a timestamp (the number gets the joiner). Written by ``srt.compose``.
    - Plain text: ``Assistant: ...`` / ``User: ...``, the labels of ``transcript_text``; the
      further lines of a turn are indented by two spaces so no line can pass for a new turn.
    - Markdown: a header (character, session, start, duration), then one paragraph per turn,
      ``**[mm:ss] Assistant:** text``; CommonMark syntax characters in the text are
      backslash-escaped and the lines of a turn are joined by hard line breaks.
    - JSON Lines: one object per turn with the text exactly as given (after the transform).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
import srt  # type: ignore[import-untyped]
from webvtt import Caption
from webvtt.vtt import to_str as vtt_to_str

from transcripts.domain import SessionRecord, Turns

__all__ = [
    "CHUNK_TURNS",
    "DEFAULT_CUE_SECONDS",
    "EXPORT_FORMATS",
    "MIN_CUE_SECONDS",
    "ROLE_LABELS",
    "ExportFormat",
    "ExportSpec",
    "TextTransform",
    "aiter_export",
    "content_disposition",
    "export_filename",
    "export_spec",
    "iter_cue_times",
    "iter_export",
    "render_export",
]

ExportFormat = Literal["vtt", "srt", "txt", "md", "jsonl"]
TextTransform = Callable[[str], str]

# The labels of the enveloped dialect's transcript_text.
ROLE_LABELS = {"assistant": "Assistant", "user": "User"}

CHUNK_TURNS = 256
DEFAULT_CUE_SECONDS = 2.0
MIN_CUE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class ExportSpec:
    format: ExportFormat
    media_type: str
    extension: str


EXPORT_FORMATS: dict[ExportFormat, ExportSpec] = {
    spec.format: spec
    for spec in (
        ExportSpec("vtt", "text/vtt; charset=utf-8", "vtt"),
        ExportSpec("srt", "application/x-subrip", "srt"),
        ExportSpec("txt", "text/plain; charset=utf-8", "txt"),
        ExportSpec("md", "text/markdown; charset=utf-8", "md"),
        ExportSpec("jsonl", "application/x-ndjson", "jsonl"),
    )
}


def export_spec(fmt: str) -> ExportSpec:
    """The media type and extension of a format; ``ValueError`` for an unknown one."""
    try:
        return EXPORT_FORMATS[fmt]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown transcript export format {fmt!r}") from None


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def export_filename(session_id: str, fmt: ExportFormat) -> str:
    """``transcript-<session_id>.<ext>``; anything but ``[A-Za-z0-9._-]`` becomes ``_``, so the
    name needs no quoting rules beyond plain double quotes."""
    safe = _UNSAFE_FILENAME.sub("_", session_id).strip("._") or "session"
    return f"transcript-{safe}.{EXPORT_FORMATS[fmt].extension}"


def content_disposition(session_id: str, fmt: ExportFormat, *, attachment: bool = True) -> str:
    """The ``Content-Disposition`` value of an export (``?download=1``: attachment)."""
    kind = "attachment" if attachment else "inline"
    return f'{kind}; filename="{export_filename(session_id, fmt)}"'


def _milliseconds(seconds: float | None) -> int | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds * 1000)


def iter_cue_times(
    turns: Turns, session_duration_seconds: float | None = None
) -> Iterator[tuple[int, int]]:
    """``(start_ms, end_ms)`` of each turn, in turn order, by the rule in the module docstring."""
    session_end_ms = _milliseconds(session_duration_seconds)
    starts = [_start_ms(ts) for ts in turns.ts]
    count = len(starts)
    for index, (start, duration) in enumerate(
        zip(starts, turns.speaking_duration_seconds, strict=True)
    ):
        following = starts[index + 1] if index + 1 < count else None
        yield start, _end_ms(start, duration, following, session_end_ms)


def _start_ms(ts: float) -> int:
    return max(_milliseconds(ts) or 0, 0)


def _end_ms(
    start: int, duration: float | None, following: int | None, session_end_ms: int | None
) -> int:
    """A cue's end: ``following`` is the next turn's start, None for the last turn."""
    duration_ms = _milliseconds(duration)
    if duration_ms is not None and duration_ms > 0:
        end = start + duration_ms
    elif following is not None and following > start:
        end = following
    elif following is None and session_end_ms is not None and session_end_ms > start:
        end = session_end_ms
    else:
        end = start + round(DEFAULT_CUE_SECONDS * 1000)
    return max(end, start + round(MIN_CUE_SECONDS * 1000))


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _lines(text: str) -> list[str]:
    """The lines a cue can hold: no empty or whitespace-only line (it would end the cue)."""
    return [line for line in _LINE_BREAK.split(text) if line.strip()]


class _Turn:
    """One turn as the writers see it: its cue times and its (transformed) text."""

    __slots__ = (
        "duration",
        "end_ms",
        "index",
        "interrupted",
        "label",
        "role",
        "start_ms",
        "text",
        "ts",
        "turn_index",
    )

    def __init__(
        self,
        index: int,
        turns: Turns,
        at: int,
        times: tuple[int, int],
        transform: TextTransform | None,
    ) -> None:
        text = turns.text[at]
        # The turn's position in the whole transcript (SubRip numbers its cues by it).
        self.index = index
        self.turn_index = turns.turn_index[at]
        self.role = turns.role[at]
        self.label = ROLE_LABELS[self.role]
        self.text = transform(text) if transform is not None else text
        self.ts = turns.ts[at]
        self.duration = turns.speaking_duration_seconds[at]
        self.interrupted = turns.was_interrupted[at]
        self.start_ms, self.end_ms = times


class _Timer:
    """Turns arriving in slices (from memory, or read from the database a batch at a time)
    become writer batches with their cue times. A cue may end at the next turn's start, so
    the last turn of each slice waits for the next slice, or for ``finish``."""

    def __init__(
        self, session_duration_seconds: float | None, transform: TextTransform | None
    ) -> None:
        self._session_end_ms = _milliseconds(session_duration_seconds)
        self._transform = transform
        self._pending: tuple[Turns, int] | None = None
        self._position = 0

    def _turn(self, turns: Turns, at: int, following: int | None) -> _Turn:
        start = _start_ms(turns.ts[at])
        end = _end_ms(start, turns.speaking_duration_seconds[at], following, self._session_end_ms)
        made = _Turn(self._position, turns, at, (start, end), self._transform)
        self._position += 1
        return made

    def feed(self, turns: Turns) -> list[_Turn]:
        count = len(turns.turn_index)
        if count == 0:
            return []
        batch = []
        if self._pending is not None:
            held, at = self._pending
            batch.append(self._turn(held, at, _start_ms(turns.ts[0])))
        batch.extend(self._turn(turns, at, _start_ms(turns.ts[at + 1])) for at in range(count - 1))
        self._pending = (turns, count - 1)
        return batch

    def finish(self) -> list[_Turn]:
        if self._pending is None:
            return []
        held, at = self._pending
        self._pending = None
        return [self._turn(held, at, None)]


def _slice(turns: Turns, low: int, high: int) -> Turns:
    return Turns._make(column[low:high] for column in turns)


def _batches(
    turns: Turns,
    session_duration_seconds: float | None,
    transform: TextTransform | None,
    chunk_turns: int,
) -> Iterator[list[_Turn]]:
    timer = _Timer(session_duration_seconds, transform)
    count = len(turns.turn_index)
    for low in range(0, count, chunk_turns):
        batch = timer.feed(_slice(turns, low, min(low + chunk_turns, count)))
        if batch:
            yield batch
    last = timer.finish()
    if last:
        yield last


async def _abatches(
    slices: AsyncIterable[Turns],
    session_duration_seconds: float | None,
    transform: TextTransform | None,
) -> AsyncIterator[list[_Turn]]:
    timer = _Timer(session_duration_seconds, transform)
    async for turns in slices:
        batch = timer.feed(turns)
        if batch:
            yield batch
    last = timer.finish()
    if last:
        yield last


# --- WebVTT -----------------------------------------------------------------------------------

_VTT_HEADER = "WEBVTT\n"


def _vtt_timestamp(milliseconds: int) -> str:
    seconds, ms = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"


def _vtt_caption(turn: _Turn) -> Caption:
    escaped = [html.escape(line, quote=False) for line in _lines(turn.text)] or [""]
    escaped[0] = f"<v {turn.label}>{escaped[0]}"
    return Caption(_vtt_timestamp(turn.start_ms), _vtt_timestamp(turn.end_ms), escaped)


def _vtt_header(record: SessionRecord) -> str:
    return _VTT_HEADER


def _vtt_batch(batch: list[_Turn]) -> str:
    # webvtt-py writes whole documents: each batch is one, less its header line, so the
    # chunks join into what it would write for all cues at once (and it validates each cue).
    document = vtt_to_str([_vtt_caption(turn) for turn in batch], [], [], [])
    if not document.startswith(_VTT_HEADER):
        raise RuntimeError("webvtt-py wrote an unexpected document header")
    return document[len(_VTT_HEADER) :]


# --- SubRip -----------------------------------------------------------------------------------

_WORD_JOINER = "\u2060"
# srt's own patterns: its reader ends a cue's text at a line that is only an index when the
# next line starts with a timestamp.
_SRT_INDEX_LINE = re.compile(rf"{srt.RGX_INDEX}\s*")
_SRT_TIMESTAMP = re.compile(srt.RGX_TIMESTAMP)


def _srt_content(label: str, text: str) -> str:
    # Line-oriented players take any line with the timing arrow for the start of a cue.
    lines = [line.replace("-->", f"--{_WORD_JOINER}>") for line in _lines(text)] or [""]
    lines[0] = f"{label}: {lines[0]}"
    for index, line in enumerate(lines[:-1]):
        if _SRT_INDEX_LINE.fullmatch(line) and _SRT_TIMESTAMP.match(lines[index + 1]):
            lines[index] = line + _WORD_JOINER
    return "\n".join(lines)


def _srt_batch(batch: list[_Turn]) -> str:
    subtitles = [
        srt.Subtitle(
            index=turn.index + 1,
            start=timedelta(milliseconds=turn.start_ms),
            end=timedelta(milliseconds=turn.end_ms),
            content=_srt_content(turn.label, turn.text),
        )
        for turn in batch
    ]
    # reindex=False: srt would sort and renumber each batch on its own. strict=True finds
    # nothing to fix (the blank lines are gone), so srt never logs the text it would fix.
    chunk: str = srt.compose(subtitles, reindex=False, strict=True)
    return chunk


# --- Plain text -------------------------------------------------------------------------------


def _txt_batch(batch: list[_Turn]) -> str:
    parts = []
    for turn in batch:
        lines = _lines(turn.text) or [""]
        parts.append(f"{turn.label}: {lines[0]}\n")
        parts.extend(f"  {line}\n" for line in lines[1:])
    return "".join(parts)


# --- Markdown ---------------------------------------------------------------------------------

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the characters that
# start inline syntax anywhere in a line (emphasis, code, links, HTML, entities, GFM tables and
# strikethrough), and those that start a block at the beginning of a line.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>&|~])")
_MD_BLOCK_START = re.compile(r"^(?:([#+=-])|(\d+)([.)]))")


def _md_escape(line: str) -> str:
    line = _MD_INLINE.sub(r"\\\1", line.strip())
    return _MD_BLOCK_START.sub(
        lambda match: f"\\{match[1]}" if match[1] else f"{match[2]}\\{match[3]}", line
    )


def _clock(milliseconds: int) -> str:
    minutes, seconds = divmod(milliseconds // 1000, 60)
    if minutes < 60:
        return f"{minutes:02d}:{seconds:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _utc(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _md_header(record: SessionRecord) -> str:
    duration = record.duration_ms
    return (
        f"# Transcript: {_md_escape(record.character_name)}\n\n"
        f"- Session: {_md_escape(record.session_id)}\n"
        f"- Started: {_utc(record.created_at)}\n"
        f"- Duration: {_clock(duration) if duration is not None else 'in progress'}\n"
    )


def _md_batch(batch: list[_Turn]) -> str:
    parts = []
    for turn in batch:
        note = " (interrupted)" if turn.interrupted else ""
        lines = [_md_escape(line) for line in _lines(turn.text)] or [""]
        # A backslash at the end of a line is CommonMark's hard line break.
        body = "\\\n".join(lines)
        parts.append(f"\n**[{_clock(turn.start_ms)}] {turn.label}{note}:** {body}".rstrip())
        parts.append("\n")
    return "".join(parts)


# --- JSON Lines -------------------------------------------------------------------------------


def _jsonl_batch(batch: list[_Turn]) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "role": turn.role,
                "text": turn.text,
                "turn_index": turn.turn_index,
                "ts": turn.ts,
                "speaking_duration_seconds": turn.duration,
                "was_interrupted": turn.interrupted,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for turn in batch
    )


# Each format: what comes before the first turn (from the session), and each batch of turns.
_HEADERS: dict[ExportFormat, Callable[[SessionRecord], str]] = {
    "vtt": _vtt_header,
    "md": _md_header,
}
_WRITERS: dict[ExportFormat, Callable[[list[_Turn]], str | bytes]] = {
    "vtt": _vtt_batch,
    "srt": _srt_batch,
    "txt": _txt_batch,
    "md": _md_batch,
    "jsonl": _jsonl_batch,
}


def _encoded(chunk: str | bytes) -> bytes:
    return chunk.encode() if isinstance(chunk, str) else chunk


def _written(
    record: SessionRecord, fmt: ExportFormat, batches: Iterator[list[_Turn]]
) -> Iterator[bytes]:
    header = _HEADERS.get(fmt)
    if header is not None:
        yield header(record).encode()
    write = _WRITERS[fmt]
    for batch in batches:
        chunk = _encoded(write(batch))
        if chunk:
            yield chunk


def iter_export(
    record: SessionRecord,
    fmt: ExportFormat,
    *,
    transform: TextTransform | None = None,
    chunk_turns: int = CHUNK_TURNS,
) -> Iterator[bytes]:
    """The export body in UTF-8 chunks of ``chunk_turns`` turns each.

    ``transform`` is applied to each turn's text before anything else (e.g. PII redaction).
    Raises ``ValueError`` at once for an unknown format, a record whose transcript was not
    loaded, or a ``chunk_turns`` below 1.
    """
    export_spec(fmt)
    if chunk_turns < 1:
        raise ValueError("chunk_turns must be at least 1")
    # Read here, so a transcript that was not loaded fails before a response starts.
    turns = record.transcript
    return _written(record, fmt, _batches(turns, record.duration_seconds, transform, chunk_turns))


def aiter_export(
    record: SessionRecord,
    fmt: ExportFormat,
    slices: AsyncIterable[Turns],
    *,
    transform: TextTransform | None = None,
) -> AsyncIterator[bytes]:
    """The export body of ``record`` whose turns arrive in ``slices`` (in turn order), one
    UTF-8 chunk per slice: what a route streams while it reads the transcript a batch at a
    time, so memory holds one batch however long the transcript. ``ValueError`` at once for
    an unknown format."""
    export_spec(fmt)
    header = _HEADERS.get(fmt)
    write = _WRITERS[fmt]

    async def chunks() -> AsyncIterator[bytes]:
        if header is not None:
            yield header(record).encode()
        async for batch in _abatches(slices, record.duration_seconds, transform):
            chunk = _encoded(write(batch))
            if chunk:
                yield chunk

    return chunks()


def render_export(
    record: SessionRecord, fmt: ExportFormat, *, transform: TextTransform | None = None
) -> bytes:
    """The whole export at once, for small transcripts, ETags and tests."""
    return b"".join(iter_export(record, fmt, transform=transform))
