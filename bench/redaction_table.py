"""Precision and recall of the PII redactor over the hand-written corpus, as a Markdown table.

    .venv/bin/python -m bench.redaction_table [corpus.jsonl]

An entity is found when the redactor puts the expected tag over exactly the expected span of
the original text. The expected spans are recovered from the corpus's ``expected`` string: the
text outside the tags is the original's, so aligning the two gives each tag's span. The tests
(`tests/test_redaction.py`) assert on the same figures; this module also times the redactor,
which the tests never do.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from transcripts.redaction import PiiKind, find_pii, redact_pii

__all__ = [
    "CORPUS",
    "Example",
    "Score",
    "expected_spans",
    "load_corpus",
    "markdown_table",
    "score",
]

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_corpus.jsonl"

Span = tuple[int, int, PiiKind]
_TAG = re.compile(r"\[(" + "|".join(kind.value for kind in PiiKind) + r")\]")


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    expected: str


@dataclass(slots=True)
class Score:
    true_positives: dict[PiiKind, int] = field(default_factory=dict)
    expected: dict[PiiKind, int] = field(default_factory=dict)
    found: dict[PiiKind, int] = field(default_factory=dict)
    sentences: int = 0
    sentences_right: int = 0
    lookalikes: int = 0
    lookalikes_kept: int = 0
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # text, expected, got

    def precision(self, kind: PiiKind | None = None) -> float:
        found = self._total(self.found, kind)
        return self._total(self.true_positives, kind) / found if found else 1.0

    def recall(self, kind: PiiKind | None = None) -> float:
        expected = self._total(self.expected, kind)
        return self._total(self.true_positives, kind) / expected if expected else 1.0

    @staticmethod
    def _total(counts: dict[PiiKind, int], kind: PiiKind | None) -> int:
        return sum(counts.values()) if kind is None else counts.get(kind, 0)


def load_corpus(path: Path = CORPUS) -> list[Example]:
    with path.open(encoding="utf-8") as lines:
        return [Example(**json.loads(line)) for line in lines if line.strip()]


def expected_spans(text: str, expected: str) -> list[Span]:
    """The spans of ``text`` that ``expected`` replaces by tags."""
    pieces = _TAG.split(expected)  # literal, tag, literal, tag, ..., literal
    literals, tags = pieces[0::2], [PiiKind(tag) for tag in pieces[1::2]]
    pattern = "(.+?)".join(re.escape(literal) for literal in literals)
    match = re.fullmatch(pattern, text, re.DOTALL)
    if match is None:
        raise ValueError(f"expected text does not align with the original: {expected!r}")
    return [(*match.span(k + 1), kind) for k, kind in enumerate(tags)]


def score(examples: Iterable[Example]) -> Score:
    result = Score()
    for example in examples:
        want = set(expected_spans(example.text, example.expected))
        got = {(m.start, m.end, m.kind) for m in find_pii(example.text)}
        for _, _, kind in want:
            result.expected[kind] = result.expected.get(kind, 0) + 1
        for _, _, kind in got:
            result.found[kind] = result.found.get(kind, 0) + 1
        for _, _, kind in want & got:
            result.true_positives[kind] = result.true_positives.get(kind, 0) + 1
        result.sentences += 1
        redacted = redact_pii(example.text)
        if redacted == example.expected:
            result.sentences_right += 1
        else:
            result.misses.append((example.text, example.expected, redacted))
        if not want:
            result.lookalikes += 1
            result.lookalikes_kept += redacted == example.text
    return result


def markdown_table(result: Score) -> str:
    rows = [
        "| Tag | Entities | Redacted | Correct | Precision | Recall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in PiiKind:
        rows.append(
            f"| `{kind.tag}` | {result.expected.get(kind, 0)} | {result.found.get(kind, 0)} "
            f"| {result.true_positives.get(kind, 0)} | {result.precision(kind):.3f} "
            f"| {result.recall(kind):.3f} |"
        )
    rows.append(
        f"| **all** | {sum(result.expected.values())} | {sum(result.found.values())} "
        f"| {sum(result.true_positives.values())} | {result.precision():.3f} "
        f"| {result.recall():.3f} |"
    )
    rows.append("")
    rows.append(
        f"{result.sentences} utterances, {result.sentences_right} redacted exactly as expected; "
        f"{result.lookalikes_kept} of {result.lookalikes} look-alikes (times, prices, dates, "
        "order and ticket numbers, versions...) left unchanged."
    )
    return "\n".join(rows)


# Turns as most of a transcript reads: words, a few small numbers, rarely an identifier.
_PLAIN_TURNS = (
    "Thanks for calling Northwind, my name is Sam, how can I help you today?",
    "Hi, I ordered a pair of boots last week and they still haven't arrived.",
    "I'm sorry to hear that. Let me pull up your account, one moment please.",
    "Sure, no problem, take your time.",
    "Okay, I can see two orders here, one from Monday and one from the twelfth.",
    "It's the one from Monday, the brown ones, size nine and a half.",
    "Right, those shipped on Tuesday and should be with you by Friday at the latest.",
    "Great, and if they don't show up, should I call back or send an email?",
    "Either is fine, we're open from eight to six, seven days a week.",
    "Perfect, thank you so much for your help, have a good day.",
)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    examples = load_corpus(path)
    result = score(examples)
    print(markdown_table(result))
    for text, expected, got in result.misses:
        print(f"\n- text:     {text}\n  expected: {expected}\n  got:      {got}", file=sys.stderr)
    texts = [example.text for example in examples]
    # CPU time of this process: the figure holds on a machine shared with other work.
    rounds = 20
    began = time.process_time()
    for _ in range(rounds):
        for text in texts:
            redact_pii(text)
    per_text = (time.process_time() - began) / (rounds * len(texts))
    began = time.process_time()
    for _ in range(rounds * 10):
        for text in _PLAIN_TURNS:
            redact_pii(text)
    per_plain = (time.process_time() - began) / (rounds * 10 * len(_PLAIN_TURNS))
    print(
        f"\nredact_pii, CPU time: {per_text * 1e6:.0f} µs per corpus utterance (nearly all "
        f"hold numbers), {per_plain * 1e6:.0f} µs per ordinary turn."
    )


if __name__ == "__main__":
    main()
