"""The PII redactor: precision and recall over the hand-written corpus, and its edge cases.

The corpus (`tests/data/pii_corpus.jsonl`) pairs each utterance with the redaction a person
would write from its meaning; `bench/redaction_table.py` scores it and prints the table.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.redaction_table import Score, expected_spans, load_corpus, markdown_table, score
from transcripts.redaction import (
    DEFAULT_REGION,
    PII_TAGS,
    PiiKind,
    PiiMatch,
    _runs,
    _tokens,
    find_pii,
    redact_many,
    redact_pii,
)

EXAMPLES = load_corpus()
# Below this many entities a per-tag ratio says little; every tag of the corpus is above it.
PER_TAG_SAMPLE = 20


@pytest.fixture(scope="module")
def corpus_score() -> Score:
    return score(EXAMPLES)


def _misses(result: Score) -> str:
    return "\n".join(
        f"{text!r}\n  want {want!r}\n  got  {got!r}" for text, want, got in result.misses
    )


# --- The corpus ------------------------------------------------------------------------------


def test_the_corpus_is_large_varied_and_aligned() -> None:
    assert len(EXAMPLES) >= 200
    assert len({example.text for example in EXAMPLES}) == len(EXAMPLES)
    lookalikes = [example for example in EXAMPLES if example.text == example.expected]
    assert len(lookalikes) >= 80
    # expected_spans raises if an expected text is not the original with tags put in.
    kinds = {kind for ex in EXAMPLES for _, _, kind in expected_spans(ex.text, ex.expected)}
    assert kinds == set(PiiKind)


def test_overall_precision_and_recall(corpus_score: Score) -> None:
    assert corpus_score.precision() >= 0.95, _misses(corpus_score)
    assert corpus_score.recall() >= 0.95, _misses(corpus_score)


@pytest.mark.parametrize("kind", list(PiiKind))
def test_precision_and_recall_per_tag(corpus_score: Score, kind: PiiKind) -> None:
    assert corpus_score.expected[kind] >= PER_TAG_SAMPLE
    assert corpus_score.precision(kind) >= 0.95, _misses(corpus_score)
    assert corpus_score.recall(kind) >= 0.95, _misses(corpus_score)


def test_lookalikes_are_left_alone(corpus_score: Score) -> None:
    assert corpus_score.lookalikes_kept / corpus_score.lookalikes >= 0.95, _misses(corpus_score)


def test_the_markdown_table_has_a_row_per_tag(corpus_score: Score) -> None:
    table = markdown_table(corpus_score)
    for tag in PII_TAGS:
        assert f"| `{tag}` |" in table
    assert "| **all** |" in table


def test_expected_spans_are_read_from_the_expected_text() -> None:
    spans = expected_spans("call 555 1234 or mail a@b.co", "call [PHONE] or mail [EMAIL]")
    assert spans == [(5, 13, PiiKind.PHONE), (22, 28, PiiKind.EMAIL)]
    with pytest.raises(ValueError, match="does not align"):
        expected_spans("call 555 1234", "phone [PHONE]")


# --- The public API --------------------------------------------------------------------------


def test_tags_and_default_region() -> None:
    assert PII_TAGS == ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[ID]")
    assert [kind.tag for kind in PiiKind] == list(PII_TAGS)
    assert DEFAULT_REGION == "US"


def test_find_pii_gives_sorted_disjoint_spans_that_redact_pii_replaces() -> None:
    text = "Mail dana@northwind.com, card 4111 1111 1111 1111, call (415) 555-2671."
    matches = find_pii(text)
    assert matches == [
        PiiMatch(5, 23, PiiKind.EMAIL),
        PiiMatch(30, 49, PiiKind.CARD),
        PiiMatch(56, 70, PiiKind.PHONE),
    ]
    assert redact_pii(text) == "Mail [EMAIL], card [CARD], call [PHONE]."


def test_redact_many_keeps_order_and_length() -> None:
    turns = ["Hello.", "My number is 415-555-2671.", "", "Thanks, bye."]
    assert redact_many(turns) == ["Hello.", "My number is [PHONE].", "", "Thanks, bye."]
    assert redact_many([]) == []


@pytest.mark.parametrize("text", ["", " ", "\n\n", "[PHONE] [EMAIL] [ID]", "ok"])
def test_texts_without_pii_come_back_identical(text: str) -> None:
    assert redact_pii(text) == text


def test_redaction_is_idempotent_over_the_corpus() -> None:
    for example in EXAMPLES:
        once = redact_pii(example.text)
        assert redact_pii(once) == once


def test_an_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown phone region"):
        redact_pii("call 612 345 678", region="XX")


def test_the_region_decides_national_formats() -> None:
    # A Spanish national number: a phone number in Spain, a bare number elsewhere, unless the
    # caller calls it one.
    assert redact_pii("It's 612 345 678.", region="ES") == "It's [PHONE]."
    assert redact_pii("It's 612 345 678.", region="es") == "It's [PHONE]."
    assert redact_pii("It's 612 345 678.") == "It's 612 345 678."
    assert redact_pii("Call me at 612 345 678.") == "Call me at [PHONE]."
    assert redact_pii("The office is 020 7946 0958.", region="GB") == "The office is [PHONE]."


# --- Text outside the spans ------------------------------------------------------------------

# Characters that cannot spell a number word, a context word or a spelled capital.
_INERT = st.text(alphabet="xyzqjkv ,;!?\n\téü—🙂", max_size=40)


@settings(max_examples=200, deadline=None)
@given(prefix=_INERT, suffix=_INERT)
def test_text_around_a_number_is_kept_byte_for_byte(prefix: str, suffix: str) -> None:
    text = f"{prefix} (415) 555-2671 {suffix}"
    assert redact_pii(text) == f"{prefix} [PHONE] {suffix}"
    spoken = f"{prefix} four one five, five five five, two six seven one {suffix}"
    assert redact_pii(spoken) == f"{prefix} [PHONE] {suffix}"


@settings(max_examples=200, deadline=None)
@given(text=_INERT)
def test_inert_text_is_untouched(text: str) -> None:
    assert redact_pii(text) == text


def test_non_ascii_text_and_newlines_survive() -> None:
    text = "Café ☕ — +33 1 42 68 53 00 — merci\nmy number is\n415 555 2671\nbye 🙂"
    assert redact_pii(text) == "Café ☕ — [PHONE] — merci\nmy number is\n[PHONE]\nbye 🙂"


# --- Spoken numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "digits"),
    [
        ("double four", "44"),
        ("triple oh", "000"),
        ("oh seven seven", "077"),
        ("zero nought o", "000"),
        ("forty-two", "42"),
        ("fifty fifty", "5050"),
        ("twenty two hundred", "2200"),
        ("eight hundred", "800"),
        ("five hundred and twelve", "512"),
        ("five hundred twelve", "512"),
        ("one eight hundred five five five", "1800555"),
        ("two thousand nineteen", "2019"),
        ("four thousand", "4000"),
        ("nineteen eighty five", "1985"),
        ("415 five five five 2671", "4155552671"),
        ("five five five, uh, one two three - four", "5551234"),
        ("five five five dash one two three four", "5551234"),
        ("area code six one seven then five five five", "617555"),
    ],
)
def test_number_words_become_digits(words: str, digits: str) -> None:
    runs = _runs(words, _tokens(words))
    assert ["".join(atom.digits for atom in run) for run in runs][-1] == digits


@pytest.mark.parametrize(
    "text",
    [
        "at 2:30",
        "four thirty",
        "$1,299.99",
        "twenty five dollars",
        "12/05/2024",
        "version 3.2.1",
        "192.168.1.254",
        "a 5pm call",
    ],
)
def test_amounts_times_and_codes_make_no_long_run(text: str) -> None:
    runs = _runs(text, _tokens(text))
    assert all(sum(len(atom.digits) for atom in run) < 7 for run in runs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It's oh seven seven double four, one two three, four five six.", "It's [PHONE]."),
        ("It's triple five, one two three, four five six seven.", "It's [PHONE]."),
        ("Reach me at five five five, one two three four.", "Reach me at [PHONE]."),
        ("My number is 555 123 4567.", "My number is [PHONE]."),
        ("Plus four four, seven nine one one, one two three four five six.", "[PHONE]."),
        (
            "Dial double oh four four, seven nine one one, one two three four five six.",
            "Dial [PHONE].",
        ),
        ("Oh, 555 123 4567 is mine.", "Oh, [PHONE] is mine."),
        ("It's (555) 123-4567.", "It's [PHONE]."),
        ("Try 212 555 0143 or 212 555 0178.", "Try [PHONE] or [PHONE]."),
    ],
)
def test_phone_numbers_written_and_spoken(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


# --- Context and validity --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Caller ID showed 415-555-2671.", "Caller ID showed [PHONE]."),
        ("Ticket ID 415-555-2671.", "Ticket ID 415-555-2671."),
        ("My order number is 4155552671.", "My order number is 4155552671."),
        ("My number is 4155552671.", "My number is [PHONE]."),
        ("We sold 4155552671 units.", "We sold 4155552671 units."),
        ("It came to $4155552671.", "It came to $4155552671."),
        ("Call me at 555-1234.", "Call me at [PHONE]."),
        ("Room 555-1234.", "Room 555-1234."),
        # A number introduced as an id is an id, or nothing: never a phone number.
        ("My ID number is 415-555-2671.", "My ID number is 415-555-2671."),
    ],
)
def test_context_words_decide_what_a_number_may_be(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("536-90-4399", "[ID]"),
        ("536904399", "536904399"),
        ("SSN 536904399", "SSN [ID]"),
        ("SSN 666-90-4399", "SSN 666-90-4399"),
        ("SSN 900-12-3456", "SSN 900-12-3456"),
        ("SSN 536-00-4399", "SSN 536-00-4399"),
        ("SSN 536-90-0000", "SSN 536-90-0000"),
        ("SSN 078-05-1120", "SSN 078-05-1120"),
        ("NI number AB 12 34 56 C", "NI number [ID]"),
        ("NI number QQ 12 34 56 C", "NI number QQ 12 34 56 C"),
        ("NI number GB 12 34 56 A", "NI number GB 12 34 56 A"),
        ("NI number AB 12 34 56 E", "NI number AB 12 34 56 E"),
        ("DNI 12345678Z", "DNI [ID]"),
        ("DNI 12345678A", "DNI 12345678A"),
        ("BSN 111222333", "BSN [ID]"),
        ("BSN 111222334", "BSN 111222334"),
        ("111222333", "111222333"),
    ],
)
def test_national_ids_follow_their_validity_rules(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111 1111 1111 1111", "[CARD]"),
        ("4111-1111-1111-1111", "[CARD]"),
        ("4111111111111111", "[CARD]"),
        ("4111 1111 1111 1111 003", "[CARD]"),
        ("3782 822463 10005", "[CARD]"),
        ("4111 1111 1111 1112", "4111 1111 1111 1112"),
        # Luhn-valid, but no card network issues numbers starting with 1.
        ("1234 5678 9012 3452", "1234 5678 9012 3452"),
        # Luhn-valid Visa digits of a length Visa does not issue.
        ("4111 1111 1111 111", "4111 1111 1111 111"),
    ],
)
def test_cards_need_luhn_a_network_prefix_and_its_length(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IBAN GB82 WEST 1234 5698 7654 32 ABC", "IBAN [IBAN] ABC"),
        ("IBAN GB82WEST12345698765432.", "IBAN [IBAN]."),
        ("IBAN gb82 west 1234 5698 7654 32", "IBAN [IBAN]"),
        ("IBAN GB82 WEST 1234 5698 7654 33", "IBAN GB82 WEST 1234 5698 7654 33"),
        # Belgium's bank-code registry does not know 539; the ISO 7064 check passes.
        ("BE68 5390 0754 7034", "[IBAN]"),
        (
            "It's G B eight two, W E S T, one two three four, five six nine eight, seven six five four, three two.",
            "It's [IBAN].",
        ),
    ],
)
def test_ibans_are_checked_by_their_checksum(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write to dana@northwind.com.", "Write to [EMAIL]."),
        ("It's dana at northwind dot com.", "It's [EMAIL]."),
        ("dana at gmail dot com", "[EMAIL]"),
        ("j dot smith at contoso dot co dot uk", "[EMAIL]"),
        ("Email: dana at northwind dot com dot au", "Email: [EMAIL]"),
        ("Prices at walmart dot com are lower.", "Prices at walmart dot com are lower."),
        ("I work at northwind dot com.", "I work at northwind dot com."),
        ("Check the FAQ at contoso dot com.", "Check the FAQ at contoso dot com."),
        ("I'm at home at 5.", "I'm at home at 5."),
    ],
)
def test_spoken_email_needs_a_sign_of_a_mailbox(text: str, expected: str) -> None:
    assert redact_pii(text) == expected
