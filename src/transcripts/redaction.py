"""PII redaction of transcript text: e-mail addresses, phone numbers, payment cards, IBANs and
national ids are replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]`` and ``[ID]``.

Transcripts are speech turned into text, so the same number reaches us written
("(415) 555-2671", "4111-1111-1111-1111"), dictated ("five five five, one two three four",
"oh seven seven double four...") or mixed ("555 one two three, 4567"). A pattern over the
characters cannot see the spoken forms, and a pattern loose enough to see them also swallows
times, prices, dates and order numbers. So every candidate is *validated* by the library that
knows the numbering scheme, never accepted on its shape alone:

- phone numbers: ``phonenumbers`` (``PhoneNumberMatcher`` for written numbers, then
  ``is_valid_number``; ``parse`` + ``is_possible_number_with_reason`` / ``is_valid_number``
  for the dictated ones);
- cards: ``stdnum.luhn`` plus the issuer prefix and length of a card brand;
- IBANs: ``stdnum.iban.is_valid`` (ISO 7064 check and the country's BBAN structure; not the
  national bank-code checks, whose registries lag behind real banks);
- national ids: ``stdnum`` (US SSN, Spanish DNI/NIE, Italian codice fiscale, Dutch BSN,
  Canadian SIN, German IdNr, Polish PESEL, Danish CPR, Swedish personnummer, Belgian national
  number, French NIR, Indian Aadhaar). ``stdnum`` has no UK National Insurance number; its
  allocation rules (HMRC's excluded letters and prefixes) are a regex here.

Detectors
    Each proposes spans of the original text; overlapping spans are resolved longest first,
    and the text outside the kept spans is copied unchanged.

    1. E-mail, written (``dana@northwind.com``) and spoken (``dana at northwind dot com``,
       ``j dot smith at contoso dot co dot uk``). The spoken form needs a domain ending in
       ``dot <known top-level domain>`` and one sign that it is a mailbox, not a thing at a
       website ("prices at walmart dot com", "the FAQ at contoso dot com"): an e-mail word
       before it ("email", "send", "write", "it's"...), a mail-provider domain (gmail,
       outlook...) or a local part shaped like one ("j dot smith", "mike_r", "dana123").
    2. IBANs and the ids whose written format is their own (dashed SSN ``536-90-4399``, NINO
       ``AB 12 34 56 C``, DNI ``12345678Z``, NIE, codice fiscale): regex, then checksum.
    3. Written phone numbers: ``PhoneNumberMatcher`` (which already declines dates, times and
       prices), kept when the number is valid.
    4. Numbers, written and spoken. The text is tokenised; digit groups and number words become
       *atoms* (``zero/oh/o/nought``, ``one``..``nine``, ``ten``..``nineteen``,
       ``twenty``..``ninety`` with an optional unit, ``X hundred [and] Y``, ``X thousand
       ...``, ``double``/``triple`` X), ``plus``/``+`` marks an international number. Atoms
       separated only by spaces, commas, dashes, periods, parentheses or the words a caller
       puts between groups ("and", "then", "dash", "uh", "um") form a *run*; any other word
       ends it, as do numbers glued to letters ("DE89", "5pm"), written amounts and dates
       ("1,299.99", "2:30", "12/05/2024") and currency signs. Every slice of a run holding 7 to
       19 digits is classified, best first: a national id (only after an id word), a card, a
       phone number valid for the region or in international form, a number merely possible
       for the region but grouped as phone numbers are or introduced as one, then a national
       number of a frequent foreign country (with its trunk 0, or after a phone word). The best
       slices are kept without overlap; a slice may not split a written group sequence
       ("3704 0044 0532": one number) and prefers not to split a breath of spoken digits.
    5. Spelled characters: capitals said one by one and digits ("G B two nine, N W B K...",
       "P X four three...") checked as an IBAN, or after an id word as a NINO, DNI or NIE.

Context
    The nearest known phrase among the words in the 48 characters before a number decides what
    it may be. "order / ticket / booking / tracking / flight / zip / version / IBAN..." and
    "customer / member / account / case... number|ID|code" forbid every number tag; an id
    phrase ("social security", "national insurance", "ID number", "BSN", "DNI"...) allows only
    an id, so a bare 9-digit SSN or BSN is an id only when introduced as one; a phone phrase
    ("call", "reach", "my number", "mobile", "area code"...) admits local numbers and numbers
    that are merely possible. A number followed by a unit ("dollars", "percent", "people") is
    a quantity. A phone number's span includes its extension when the matcher reads one
    ("ext. 23"), as libphonenumber treats it as part of the number.

Speed
    Pure Python, compiled regexes and two LRU caches on the phone checks; no model, no I/O.
    Turns without a digit, a number word, "@" or "at" return after a few cheap tests; the
    phone checks run only on texts that can hold 7 digits. ``region`` is the ISO 3166 code of
    the country whose national formats are understood without a country code
    (``DEFAULT_REGION`` "US"); international numbers are found whatever the region.
"""

from __future__ import annotations

import bisect
import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import Leniency, PhoneMetadata, PhoneNumberMatcher, ValidationResult
from stdnum import iban, luhn
from stdnum.be import nn as be_nn
from stdnum.ca import sin as ca_sin
from stdnum.de import idnr as de_idnr
from stdnum.dk import cpr as dk_cpr
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.fr import nir as fr_nir
from stdnum.in_ import aadhaar as in_aadhaar
from stdnum.it import codicefiscale as it_codicefiscale
from stdnum.nl import bsn as nl_bsn
from stdnum.pl import pesel as pl_pesel
from stdnum.se import personnummer as se_personnummer
from stdnum.us import ssn as us_ssn

__all__ = [
    "DEFAULT_REGION",
    "PII_TAGS",
    "PiiKind",
    "PiiMatch",
    "find_pii",
    "redact_many",
    "redact_pii",
]

DEFAULT_REGION = "US"


class PiiKind(enum.StrEnum):
    """What a redacted span was; its ``tag`` is the text that replaces it."""

    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CARD = "CARD"
    IBAN = "IBAN"
    ID = "ID"

    @property
    def tag(self) -> str:
        return f"[{self.value}]"


PII_TAGS: tuple[str, ...] = tuple(kind.tag for kind in PiiKind)


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One span of PII in the original text: ``text[start:end]`` is replaced by ``kind.tag``."""

    start: int
    end: int
    kind: PiiKind


def find_pii(text: str, region: str = DEFAULT_REGION) -> list[PiiMatch]:
    """The PII spans of ``text``, sorted and non-overlapping.

    ``region``: ISO 3166 code of the country whose national phone formats are understood
    without a country code; ``ValueError`` if libphonenumber does not know it.
    """
    region = region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region: {region!r}")
    # Cheap gates first: most turns hold no digit, no "@" and no "at".
    words = _WORD.findall(text.lower())
    number_words = sum(word in _NUMBER_WORDS for word in words)
    digits = len(_DIGIT.findall(text))
    candidates: list[PiiMatch] = []
    if "@" in text or "at" in words:
        candidates += _emails(text)
    if digits:
        candidates += _formatted_ids_and_ibans(text)
    # The shortest number worth a look has 7 digits and no number word stands for more than 3
    # ("thousand"): below that, no phone, card or id can hide in the text.
    if digits + 3 * number_words >= 7:
        tokens = _tokens(text)
        contexts = _Contexts(text)
        if digits >= 7:
            candidates += _written_phones(text, region, contexts)
        candidates += _numbers(text, tokens, region, contexts)
        if _SPELLED_LETTERS.search(text):
            candidates += _spelled(text, tokens, contexts)
    return _without_overlaps(candidates)


def redact_pii(text: str, region: str = DEFAULT_REGION) -> str:
    """``text`` with every PII span replaced by its tag; the rest is left byte for byte."""
    matches = find_pii(text, region)
    if not matches:
        return text
    parts: list[str] = []
    cursor = 0
    for match in matches:
        parts.append(text[cursor : match.start])
        parts.append(match.kind.tag)
        cursor = match.end
    parts.append(text[cursor:])
    return "".join(parts)


def redact_many(texts: Sequence[str], region: str = DEFAULT_REGION) -> list[str]:
    """``redact_pii`` over many texts (the turns of a transcript), in order."""
    return [redact_pii(text, region) for text in texts]


def _word_set(spec: str) -> frozenset[str]:
    return frozenset(spec.split())


# --- Vocabulary ------------------------------------------------------------------------------

_ZEROS = {"zero": 0, "oh": 0, "o": 0, "nought": 0, "naught": 0}
_UNITS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_DIGIT_WORDS = {**_ZEROS, **_UNITS}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_REPEATS = {"double": 2, "triple": 3, "treble": 3}
# Words a caller says between the groups of a number they dictate.
_FILLERS = frozenset(
    {"and", "then", "dash", "hyphen", "uh", "um", "umm", "er", "erm", "ah", "eh", "hmm", "mm"}
)
_NUMBER_WORDS = frozenset([*_DIGIT_WORDS, *_TEENS, *_TENS, *_REPEATS, "hundred", "thousand"])
# A number followed by one of these counts something: it is a quantity, not an identifier.
_UNIT_WORDS = _word_set(
    "dollars dollar bucks cents euros euro pounds pound pence quid yen rupees pesos francs "
    "percent per cent % times people persons items pieces units boxes bags packs kilos kg "
    "grams lbs miles mi km kilometers kilometres meters metres feet ft inches degrees "
    "calories points minutes mins seconds hours days weeks months years gb mb tb"
)
_CURRENCY_SIGNS = frozenset("$€£¥₹")

_WORD = re.compile(r"[a-z]+")
_DIGIT = re.compile(r"\d")
# A capital said on its own or a short run of capitals ("G B", "NWBK"), other than "I" and "A".
_SPELLED_LETTERS = re.compile(r"\b(?![AI]\b)[A-Z]{1,4}\b")

# Callers' other frequent countries. A national number valid in one of them is a phone number
# even when the service's region is another: without a phone word only when it carries a
# trunk 0 ("07911 123456", "020 7946 0958"), with one in any form ("call me at 612 345 678").
_FOREIGN_REGIONS = (
    *("GB", "IE", "FR", "DE", "NL", "BE", "ES", "IT", "PT", "CH", "AT", "SE", "NO", "DK"),
    *("FI", "PL", "AU", "NZ", "IN", "ZA", "MX", "BR", "US", "CA"),
)


# --- E-mail ----------------------------------------------------------------------------------

_WRITTEN_EMAIL = re.compile(
    r"(?<![\w.+%-])[a-z0-9](?:[a-z0-9._%+-]*[a-z0-9_%+-])?"
    r"@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}\b",
    re.IGNORECASE,
)
_TLDS = _word_set(
    "com net org edu gov mil int info biz io co ai app dev me tv us uk ca au nz ie de fr es it "
    "nl be ch at se no dk fi pl pt cz gr hu ro ru ua tr il in jp cn kr sg hk tw mx br ar cl "
    "za eu email online store shop tech cloud"
)
_NUMBER_WORD_ALTERNATIVES = "|".join(sorted([*_DIGIT_WORDS, *_TEENS, *_TENS, "hundred"]))
_SPOKEN_EMAIL = re.compile(
    r"""
    (?<![\w'@.+-])
    (?P<local>[a-z0-9]+(?:(?:\s*[._-]\s*|\s+(?:dot|underscore|dash|hyphen)\s+)[a-z0-9]+)*
      (?:\s+(?:NUMBER_WORDS))*)
    (?:\s+(?:at(?:\s+(?:sign|symbol))?)\s+|\s*@\s*)
    (?P<domain>[a-z0-9]+(?:(?:-|\s+(?:dash|hyphen)\s+)[a-z0-9]+)*
      (?:(?:\s+dot\s+|\.)[a-z0-9]+(?:(?:-|\s+(?:dash|hyphen)\s+)[a-z0-9]+)*)*?
      (?:\s+dot\s+|\.)(?:TLDS))
    (?![\w-]|\s+dot\s+[a-z]|\.[a-z])
    """.replace("NUMBER_WORDS", _NUMBER_WORD_ALTERNATIVES).replace("TLDS", "|".join(sorted(_TLDS))),
    re.IGNORECASE | re.VERBOSE,
)
# Words that precede "at" in ordinary speech ("look at", "me at", "I work at"): not a mailbox.
_NOT_A_MAILBOX = _word_set(
    "a an the i me you him her us them it this that these those we they he she is are was "
    "were be been am look looking looked see seen here there home work works working worked "
    "stay staying stayed live lives living lived shop shopping shopped buy bought order "
    "ordered sign signed log logged online available email mail reach contact find found "
    "visit visited check go went get got listed posted sold hosted registered booked "
    "arrive arrived stop stopped left right or and but so just even only also still it's "
    "im i'm"
)
# "X at Y dot com" is as often a thing at a website ("prices at walmart dot com") as a mailbox.
# Spoken, it is read as an address when an e-mail word comes before it, when the domain is a
# mail provider, or when the local part is shaped like one ("j dot smith", "mike_r", "dana123").
_EMAIL_CUE = re.compile(
    r"\b(?:e-?mail(?:ed|ing|s)?|mail|address|inbox|send|sent|write|cc|bcc|forward|reach|contact"
    r"|gmail|username|login|account)\b"
    # or the caller is giving it: "it's dana at...", "that's dana at..."
    r"|\b(?:it['\u2019]?s|it\s+is|that['\u2019]?s|that\s+is|is|was)\s+$",
    re.IGNORECASE,
)
_MAIL_PROVIDERS = re.compile(
    r"^(?:gmail|googlemail|yahoo|ymail|outlook|hotmail|live|msn|icloud|me|mac|aol|proton"
    r"|protonmail|pm|gmx|web|mail|yandex|zoho|fastmail|hey|qq|163|naver|hanmail|orange|free"
    r"|btinternet|sky|comcast|verizon|att|sbcglobal|rediffmail)\b",
    re.IGNORECASE,
)
_STRUCTURED_LOCAL = re.compile(r"[._\-\d\s]")
# "the FAQ at contoso dot com", "my boss at northwind dot com": a noun phrase, not a mailbox.
_DETERMINER_BEFORE = re.compile(
    r"\b(?:the|a|an|my|our|your|their|his|her|its|this|that)\s+$", re.IGNORECASE
)


def _emails(text: str) -> list[PiiMatch]:
    found: list[PiiMatch] = []
    if "@" in text:
        found += [
            PiiMatch(m.start(), m.end(), PiiKind.EMAIL) for m in _WRITTEN_EMAIL.finditer(text)
        ]
    if " dot " in text.lower() or "." in text:
        for m in _SPOKEN_EMAIL.finditer(text):
            local = m.group("local")
            if local.lower() in _NOT_A_MAILBOX or _DETERMINER_BEFORE.search(
                text, max(0, m.start() - 8), m.start()
            ):
                continue
            if not (
                _STRUCTURED_LOCAL.search(local)
                or _MAIL_PROVIDERS.match(m.group("domain"))
                or _EMAIL_CUE.search(text, max(0, m.start() - 60), m.start())
            ):
                continue
            found.append(PiiMatch(m.start(), m.end(), PiiKind.EMAIL))
    return found


# --- IBAN and ids with a format of their own -------------------------------------------------

_IBAN_CANDIDATE = re.compile(
    r"(?<![\w-])[a-z]{2}\d{2}(?:[ -]?[a-z0-9]){11,32}(?![\w-])", re.IGNORECASE
)
_DASHED_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
# HMRC: no D, F, I, Q, U, V first; no D, F, I, O, Q, U, V second; BG GB KN NK NT TN ZZ unused.
_NINO = re.compile(
    r"(?<![\w-])(?!(?:BG|GB|KN|NK|NT|TN|ZZ))[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r"(?:\s?\d{2}){3}\s?[A-D](?![\w-])",
    re.IGNORECASE,
)
_DNI = re.compile(r"(?<![\w-])\d{8}[ -]?[a-z](?![\w-])", re.IGNORECASE)
_NIE = re.compile(r"(?<![\w-])[xyz][ -]?\d{7}[ -]?[a-z](?![\w-])", re.IGNORECASE)
_CODICE_FISCALE = re.compile(
    r"(?<![\w-])[a-z]{6}[0-9lmnp-v]{2}[a-z][0-9lmnp-v]{2}[a-z][0-9lmnp-v]{3}[a-z](?![\w-])",
    re.IGNORECASE,
)
_FORMATTED_IDS: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    (_DASHED_SSN, us_ssn.is_valid),
    (_NINO, lambda _: True),
    (_DNI, es_dni.is_valid),
    (_NIE, es_nie.is_valid),
    (_CODICE_FISCALE, it_codicefiscale.is_valid),
)


def _formatted_ids_and_ibans(text: str) -> list[PiiMatch]:
    found: list[PiiMatch] = []
    for m in _IBAN_CANDIDATE.finditer(text):
        # The greedy candidate may run into the next word ("... 0130 00 OK"): the IBAN is its
        # longest valid prefix that ends at a word boundary.
        candidate = m.group()
        for end in range(len(candidate), 14, -1):
            if end < len(candidate) and candidate[end].isalnum():
                continue
            if iban.is_valid(candidate[:end], check_country=False):
                found.append(PiiMatch(m.start(), m.start() + end, PiiKind.IBAN))
                break
    for pattern, is_valid in _FORMATTED_IDS:
        found += [
            PiiMatch(m.start(), m.end(), PiiKind.ID)
            for m in pattern.finditer(text)
            if is_valid(m.group().replace(" ", "").replace("-", "").upper())
        ]
    return found


# --- Context ---------------------------------------------------------------------------------

_CONTEXT_WINDOW = 48


class _Context(enum.Enum):
    NONE = enum.auto()
    NOT_PII = enum.auto()
    ID = enum.auto()
    PHONE = enum.auto()
    CARD = enum.auto()


def _phrases(spec: str) -> list[tuple[str, ...]]:
    return [tuple(phrase.split()) for phrase in spec.split(",") if phrase.strip()]


# Nouns that turn a thing into a number about it: "order number", "member ID", "case no."
_NUMBER_NOUNS = _phrases("number, no, num, nr, id, code, reference, ref")
_NOT_PII_ALONE = _phrases(
    "order, ticket, booking, reservation, confirmation, tracking, invoice, receipt,"
    "transaction, claim, policy, serial, model, sku, flight, train, room, seat, gate, zip,"
    "postcode, postal code, pin, otp, extension, ext, version, build, release, routing,"
    "sort code, voucher, coupon, promo, gift card, parcel, package, shipment, batch, lot, page,"
    "chapter, quote, job, item, part, product, reference, ref, iban, bic, swift, bank account,"
    "apartment, apt, suite, unit, floor, bus, route, bay, locker, year, isbn"
)
_NOT_PII_WITH_NOUN = _phrases(
    "customer, member, membership, account, acct, loyalty, reward, rewards, employee, student,"
    "patient, session, case, caller reference, device, vehicle, license, licence, registration,"
    "plate, agent, store, branch, table, meter, contract, certificate"
)
_ID_PHRASES = _phrases(
    "id, social, social number, social security, social security number, ssn, sin,"
    "social insurance, social insurance number, national insurance, national insurance number,"
    "ni number, nino, national id, national identity, national id number,"
    "national identity number, national id card number, id number, id card number,"
    "identity number, identity card number, identity document number,"
    "identification number, personal id, bsn, burgerservicenummer, dni, nie, nif, passport,"
    "passport number, tax id, tax identification, tax code, tax number, tin, itin,"
    "personnummer, personal number, national number, national register number, pesel,"
    "codice fiscale, fiscal code, steuer id, steuerid, steueridentifikationsnummer, idnr,"
    "aadhaar, aadhar, cpr, cpr number, nir, insee, rijksregisternummer"
)
_PHONE_PHRASES = _phrases(
    "caller id, phone, telephone, tel, cell, cellphone, mobile, landline, fax, whatsapp, call,"
    "calls, calling, called, ring, text, reach, dial, callback, area code"
) + [
    (owner, "number")
    for owner in sorted(
        _word_set(
            "my the your contact home work office direct best cell mobile phone daytime evening "
            "callback"
        )
    )
]
_CARD_PHRASES = _phrases(
    "card, visa, mastercard, master card, amex, american express, discover, diners, jcb,"
    "maestro, unionpay, credit, debit"
)
# Later entries win: a phrase kept for one kind ("gift card", "ticket id") overrides the same
# words' sense in another ("card", "id").
_CONTEXT_PHRASES: dict[tuple[str, ...], _Context] = {
    **{phrase: _Context.CARD for phrase in _CARD_PHRASES},
    **{phrase: _Context.PHONE for phrase in _PHONE_PHRASES},
    **{phrase: _Context.ID for phrase in _ID_PHRASES},
    **{phrase: _Context.NOT_PII for phrase in _NOT_PII_ALONE},
    **{
        thing + noun: _Context.NOT_PII
        for thing in _NOT_PII_ALONE + _NOT_PII_WITH_NOUN
        for noun in _NUMBER_NOUNS
    },
}
_LONGEST_PHRASE = max(len(phrase) for phrase in _CONTEXT_PHRASES)
_CONTEXT_WORD = re.compile(r"[^\W\d_]+")


class _Contexts:
    """The context words of one text, read when first asked for.

    Walking back from a candidate, the first word that ends a known phrase decides, the
    longest phrase ending there winning: "my order number" is an order number (not "my
    number"), "ticket ID" a ticket, "caller ID" a phone, "social security number" an id.
    """

    __slots__ = ("_ends", "_text", "_words")

    def __init__(self, text: str) -> None:
        self._text = text
        self._ends: list[int] | None = None
        self._words: list[str] = []

    def before(self, start: int) -> _Context:
        return self.phrase_before(start)[0]

    def phrase_before(self, start: int) -> tuple[_Context, tuple[str, ...]]:
        """The nearest phrase ending before ``start`` within the window, and its kind."""
        if self._ends is None:
            found = list(_CONTEXT_WORD.finditer(self._text))
            self._ends = [m.end() for m in found]
            self._words = [m.group().lower() for m in found]
        last = bisect.bisect_right(self._ends, start) - 1
        for j in range(last, -1, -1):
            if self._ends[j] <= start - _CONTEXT_WINDOW:
                break
            for length in range(min(_LONGEST_PHRASE, j + 1), 0, -1):
                phrase = tuple(self._words[j - length + 1 : j + 1])
                kind = _CONTEXT_PHRASES.get(phrase)
                if kind is not None:
                    return kind, phrase
        return _Context.NONE, ()


# --- Written phone numbers (phonenumbers' own matcher) ---------------------------------------


def _written_phones(text: str, region: str, contexts: _Contexts) -> list[PiiMatch]:
    # The matcher at POSSIBLE leniency finds the candidates; their validity is checked here
    # through a cache, because is_valid_number is the dearest call of all (a NANP number is
    # tried against each of the 25 NANP regions) and transcripts repeat their numbers.
    found = []
    for m in PhoneNumberMatcher(text, region, leniency=Leniency.POSSIBLE):
        number = m.number
        if not _is_valid_e164(
            f"+{number.country_code}{phonenumbers.national_significant_number(number)}"
        ):
            continue
        if contexts.before(m.start) in (_Context.NOT_PII, _Context.ID):
            continue
        if _followed_by_unit(text, m.end) or text[: m.start].rstrip()[-1:] in _CURRENCY_SIGNS:
            continue
        found.append(PiiMatch(m.start, m.end, PiiKind.PHONE))
    return found


@lru_cache(maxsize=4096)
def _is_valid_e164(e164: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(e164))


# --- Numbers, written and spoken -------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<num>\d+(?:[.,:/]\d+)*)|(?P<word>[^\W\d_]+(?:['\u2019][^\W\d_]+)*)|(?P<other>\S)"
)
_SOFT_SEPARATORS = frozenset(",-.()\u2013\u2014\u2026")  # en dash, em dash, ellipsis
# "555.123.4567": dotted groups as phone numbers are written; "3.2.1" and "1,299.99" are not.
_DOTTED_GROUPS = re.compile(r"\d{2,4}(?:\.\d{2,4}){2,3}")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "word" or "other"
    start: int
    end: int
    text: str  # lower-cased


@dataclass(slots=True)
class _Atom:
    start: int
    end: int
    digits: str
    spoken: bool
    plus_start: int | None = None  # where "+" / "plus" before this atom starts
    sep_before: str = ""  # "space", "hyphen" or "soft": what separates it from the previous


def _tokens(text: str) -> list[_Token]:
    return [
        _Token(str(m.lastgroup), m.start(), m.end(), m.group().lower())
        for m in _TOKEN.finditer(text)
    ]


def _word(tokens: list[_Token], i: int) -> str | None:
    if i < len(tokens) and tokens[i].kind == "word":
        return tokens[i].text
    return None


def _joined(tokens: list[_Token], i: int) -> int:
    """Index of the token after ``i`` if it follows by a space or one hyphen ("twenty-one")."""
    j = i + 1
    if j < len(tokens) and tokens[j].text == "-" and tokens[j].start == tokens[i].end:
        j += 1
    return j


def _small(tokens: list[_Token], i: int) -> tuple[int, int] | None:
    """1..99 in words: "seven", "fourteen", "forty", "forty-two"."""
    w = _word(tokens, i)
    if w in _TENS:
        j = _joined(tokens, i)
        unit = _word(tokens, j)
        if unit in _UNITS:
            return _TENS[w] + _UNITS[unit], j + 1
        return _TENS[w], i + 1
    if w in _TEENS:
        return _TEENS[w], i + 1
    if w in _UNITS:
        return _UNITS[w], i + 1
    return None


def _below_thousand(tokens: list[_Token], i: int) -> tuple[int, int] | None:
    small = _small(tokens, i)
    if small is None:
        return None
    value, j = small
    if _word(tokens, j) == "hundred":
        value, j = value * 100, j + 1
        k = j + 1 if _word(tokens, j) == "and" else j
        rest = _small(tokens, k)
        # "eight hundred five five five" is 800 555 as dictated, "five hundred twelve" is 512.
        if rest is not None and (k > j or _word(tokens, k) not in _UNITS):
            value, j = value + rest[0], rest[1]
    return value, j


def _cardinal(tokens: list[_Token], i: int) -> tuple[int, int] | None:
    head = _below_thousand(tokens, i)
    if head is None:
        return None
    value, j = head
    if _word(tokens, j) == "thousand":
        value, j = value * 1000, j + 1
        k = j + 1 if _word(tokens, j) == "and" else j
        rest = _below_thousand(tokens, k)
        if rest is not None:
            value, j = value + rest[0], rest[1]
    return value, j


def _spoken_atom(tokens: list[_Token], i: int) -> tuple[str, int] | None:
    """The digits a number phrase starting at token ``i`` stands for, and the next index."""
    w = _word(tokens, i)
    if w in _REPEATS:
        j = _joined(tokens, i)
        if j < len(tokens):
            nxt = tokens[j]
            if nxt.kind == "word" and nxt.text in _DIGIT_WORDS:
                return str(_DIGIT_WORDS[nxt.text]) * _REPEATS[w], j + 1
            if nxt.kind == "num" and len(nxt.text) == 1:
                return nxt.text * _REPEATS[w], j + 1
        return None
    if w in _ZEROS:
        return "0", i + 1
    cardinal = _cardinal(tokens, i)
    if cardinal is None:
        return None
    return str(cardinal[0]), cardinal[1]


def _written_atom(text: str, token: _Token) -> str | None:
    before = text[token.start - 1] if token.start else " "
    after = text[token.end] if token.end < len(text) else " "
    if before.isalpha() or after.isalpha() or before in _CURRENCY_SIGNS:
        return None  # "DE89", "5pm", "2nd", "$120": part of a code or an amount
    if token.text.isdigit():
        return token.text
    if _DOTTED_GROUPS.fullmatch(token.text) and len(token.text) >= 11:
        return token.text.replace(".", "")
    return None


def _runs(text: str, tokens: list[_Token]) -> list[list[_Atom]]:
    """Maximal sequences of number atoms joined only by separators."""
    runs: list[list[_Atom]] = []
    run: list[_Atom] = []
    plus_start: int | None = None

    def close() -> None:
        nonlocal run, plus_start
        if run:
            runs.append(run)
        run, plus_start = [], None

    i = 0
    while i < len(tokens):
        token = tokens[i]
        atom: tuple[str, int] | None = None
        spoken = False
        if token.kind == "num":
            digits = _written_atom(text, token)
            atom = (digits, i + 1) if digits is not None else None
        elif token.kind == "word":
            atom = _spoken_atom(tokens, i)
            spoken = True
        if atom is not None:
            digits, nxt = atom
            last = tokens[nxt - 1]
            if run:
                gap = text[run[-1].end : token.start]
                kind = "space" if not gap.strip() else "hyphen" if gap == "-" else "soft"
            else:
                kind = ""
            run.append(_Atom(token.start, last.end, digits, spoken, plus_start, kind))
            plus_start = None
            i = nxt
            continue
        if token.text == "+" or token.text == "plus":
            close()
            plus_start = token.start
        elif not run or not (
            (token.kind == "other" and token.text in _SOFT_SEPARATORS)
            or (token.kind == "word" and token.text in _FILLERS)
        ):
            close()
        i += 1
    close()
    return runs


_NANP = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])


@lru_cache(maxsize=4096)
def _phone_tier(
    digits: str, international: bool, region: str, shaped: bool, wanted: bool, local: bool
) -> int:
    """How sure we are that ``digits`` is a phone number: 3 valid, 2 possible, 1 weak, 0 not.

    ``shaped``: grouped as phone numbers are said or written; ``wanted``: a phone word is near;
    ``local``: a number without its area code is acceptable.
    """
    if not international:
        if digits.startswith("00"):
            digits, international = digits[2:], True
        elif digits.startswith("011") and region in _NANP:
            digits, international = digits[3:], True
    try:
        number = phonenumbers.parse(("+" + digits) if international else digits, region)
    except phonenumbers.NumberParseException:
        return 0
    # The length test is cheap and is_valid_number is not: it goes first.
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == ValidationResult.IS_POSSIBLE:
        if phonenumbers.is_valid_number(number):
            return 3
        if (shaped or wanted) and _fits_plan(number):
            return 2
    if international:
        return 0
    if reason == ValidationResult.IS_POSSIBLE_LOCAL_ONLY and local:
        return 1
    if wanted or (digits.startswith("0") and len(digits) >= 10):
        for other in _FOREIGN_REGIONS:
            if other == region:
                continue
            try:
                abroad = phonenumbers.parse(digits, other)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_possible_number(abroad) and phonenumbers.is_valid_number(abroad):
                return 1
    return 0


def _fits_plan(number: phonenumbers.PhoneNumber) -> bool:
    """Whether the number has the shape of its country's numbers (a US number starts 2-9), even
    if its area code or range is not allocated (555, which callers give and films use)."""
    code = number.country_code
    if code is None or number.italian_leading_zero:
        return False
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code)
    )
    general = metadata.general_desc if metadata is not None else None
    pattern = general.national_number_pattern if general is not None else None
    if pattern is None:
        return False
    return re.fullmatch(pattern, phonenumbers.national_significant_number(number)) is not None


# Issuer prefixes and lengths of the card brands (ISO/IEC 7812 ranges the networks publish);
# Luhn alone would pass one random digit string in ten.
_CARD_RANGES: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),  # Visa
    (51, 55, frozenset({16})),  # Mastercard
    (2221, 2720, frozenset({16})),  # Mastercard 2-series
    (34, 34, frozenset({15})),  # American Express
    (37, 37, frozenset({15})),
    (300, 305, frozenset({14, 16, 17, 18, 19})),  # Diners Club
    (36, 36, frozenset({14, 16, 17, 18, 19})),
    (38, 39, frozenset({14, 16, 17, 18, 19})),
    (3528, 3589, frozenset({16, 17, 18, 19})),  # JCB
    (6011, 6011, frozenset({16, 17, 18, 19})),  # Discover
    (644, 649, frozenset({16, 17, 18, 19})),
    (65, 65, frozenset({16, 17, 18, 19})),
    (62, 62, frozenset({16, 17, 18, 19})),  # UnionPay
    (2200, 2204, frozenset({16, 17, 18, 19})),  # Mir
    (50, 50, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),  # Maestro
    (56, 69, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
)


def _is_card(digits: str) -> bool:
    if not 13 <= len(digits) <= 19 or not luhn.is_valid(digits):
        return False
    return any(
        low <= int(digits[: len(str(low))]) <= high and len(digits) in lengths
        for low, high, lengths in _CARD_RANGES
    )


# National ids of digits only: ambiguous with any other number, so only after an id word.
_DIGIT_IDS: dict[int, tuple[Callable[[str], bool], ...]] = {
    9: (us_ssn.is_valid, nl_bsn.is_valid, ca_sin.is_valid),
    10: (dk_cpr.is_valid, se_personnummer.is_valid),
    11: (de_idnr.is_valid, pl_pesel.is_valid, be_nn.is_valid),
    12: (in_aadhaar.is_valid, se_personnummer.is_valid),
    15: (fr_nir.is_valid,),
}


# An id word that names its scheme admits that scheme only: after "SSN" a number must be a
# valid SSN, not merely a valid BSN. Generic words ("ID number", "passport") admit any.
_SCHEME_OF_PHRASE: dict[tuple[str, ...], Callable[[str], bool]] = {
    **dict.fromkeys(
        _phrases("social, social number, social security, social security number, ssn"),
        us_ssn.is_valid,
    ),
    **dict.fromkeys(_phrases("sin, social insurance, social insurance number"), ca_sin.is_valid),
    **dict.fromkeys(_phrases("bsn, burgerservicenummer"), nl_bsn.is_valid),
    **dict.fromkeys(_phrases("pesel"), pl_pesel.is_valid),
    **dict.fromkeys(_phrases("cpr, cpr number"), dk_cpr.is_valid),
    **dict.fromkeys(_phrases("personnummer"), se_personnummer.is_valid),
    **dict.fromkeys(_phrases("aadhaar, aadhar"), in_aadhaar.is_valid),
    **dict.fromkeys(_phrases("nir, insee"), fr_nir.is_valid),
    **dict.fromkeys(
        _phrases("steuer id, steuerid, steueridentifikationsnummer, idnr"), de_idnr.is_valid
    ),
    **dict.fromkeys(
        _phrases("rijksregisternummer, national number, national register number"),
        be_nn.is_valid,
    ),
}


def _is_digit_id(digits: str, phrase: tuple[str, ...]) -> bool:
    scheme = _SCHEME_OF_PHRASE.get(phrase)
    if scheme is not None:
        return scheme(digits)
    return any(is_valid(digits) for is_valid in _DIGIT_IDS.get(len(digits), ()))


def _followed_by_unit(text: str, end: int) -> bool:
    rest = text[end : end + 16].lstrip()
    if rest.startswith("%"):
        return True
    word = re.match(r"[^\W\d_]+", rest)
    return word is not None and word.group().lower() in _UNIT_WORDS


def _groups(atoms: Sequence[_Atom]) -> list[int]:
    """Digit counts of the groups a speaker or writer made (spoken digits said in one breath
    form one group; written digit groups are groups of their own)."""
    sizes: list[int] = []
    for k, atom in enumerate(atoms):
        same_breath = k > 0 and atom.spoken and atoms[k - 1].spoken and atom.sep_before == "space"
        if same_breath:
            sizes[-1] += len(atom.digits)
        else:
            sizes.append(len(atom.digits))
    return sizes


class _Cut(enum.Enum):
    """What lies between two atoms of a run, were a candidate to start or end there."""

    PAUSE = enum.auto()  # punctuation, a filler, the end of the run: a number may end here
    BREATH = enum.auto()  # spoken digits said in one go: a number rarely ends inside them
    GROUP = enum.auto()  # written digit groups apart by a space: "3704 0044" is one number


def _cut(run: Sequence[_Atom], left: int, right: int) -> _Cut:
    if left < 0 or right >= len(run) or run[right].sep_before != "space":
        return _Cut.PAUSE
    if run[left].spoken and run[right].spoken:
        return _Cut.BREATH
    if not run[left].spoken and not run[right].spoken:
        return _Cut.GROUP
    return _Cut.PAUSE


def _phone_shaped(atoms: Sequence[_Atom]) -> bool:
    if all(atom.spoken and len(atom.digits) <= 2 for atom in atoms):
        return True  # dictated digit by digit
    sizes = _groups(atoms)
    if sizes and sizes[0] == 1:
        sizes = sizes[1:]  # the "1" of a NANP number
    return len(sizes) >= 2 and all(2 <= size <= 4 for size in sizes)


@dataclass(frozen=True, slots=True)
class _Candidate:
    first: int
    last: int
    tier: int
    kind: PiiKind
    aligned: bool  # starts and ends between the groups the speaker made, not inside one


def _classify(
    text: str, run: list[_Atom], first: int, last: int, region: str, contexts: _Contexts
) -> _Candidate | None:
    atoms = run[first : last + 1]
    cuts = (_cut(run, first - 1, first), _cut(run, last, last + 1))
    if _Cut.GROUP in cuts:
        return None  # a slice of a longer written number (an IBAN's digits, a tracking number)
    aligned = cuts == (_Cut.PAUSE, _Cut.PAUSE)
    digits = "".join(atom.digits for atom in atoms)
    start = atoms[0].start if atoms[0].plus_start is None else atoms[0].plus_start
    context, phrase = contexts.phrase_before(start)
    if context is _Context.NOT_PII or _followed_by_unit(text, atoms[-1].end):
        return None
    if context is _Context.ID:
        if not _is_digit_id(digits, phrase):
            return None
        return _Candidate(first, last, 5, PiiKind.ID, aligned)
    international = atoms[0].plus_start is not None
    if not international and _is_card(digits):
        return _Candidate(first, last, 4, PiiKind.CARD, aligned)
    if not 7 <= len(digits) <= 15:
        return None
    dashed = [len(atom.digits) for atom in atoms] == [3, 2, 4] and all(
        atom.sep_before == "hyphen" for atom in atoms[1:]
    )
    if dashed and not any(atom.spoken for atom in atoms) and us_ssn.is_valid(digits):
        return _Candidate(first, last, 4, PiiKind.ID, aligned)
    wanted = context is _Context.PHONE
    # A local number ("555 1234") only when introduced as one or dictated in its 3-4 grouping.
    local = wanted or (all(atom.spoken for atom in atoms) and _groups(atoms) == [3, 4])
    tier = _phone_tier(digits, international, region, _phone_shaped(atoms), wanted, local)
    return _Candidate(first, last, tier, PiiKind.PHONE, aligned) if tier else None


def _numbers(text: str, tokens: list[_Token], region: str, contexts: _Contexts) -> list[PiiMatch]:
    found: list[PiiMatch] = []
    for run in _runs(text, tokens):
        candidates: list[_Candidate] = []
        for first in range(len(run)):
            length = 0
            for last in range(first, len(run)):
                length += len(run[last].digits)
                if length > 19:
                    break
                if length >= 7:
                    candidate = _classify(text, run, first, last, region, contexts)
                    if candidate is not None:
                        candidates.append(candidate)
        candidates.sort(key=lambda c: (not c.aligned, -c.tier, c.first - c.last, c.first))
        taken: list[_Candidate] = []
        for candidate in candidates:
            if all(candidate.last < t.first or candidate.first > t.last for t in taken):
                taken.append(candidate)
        for candidate in taken:
            head, tail = run[candidate.first], run[candidate.last]
            start = head.start if head.plus_start is None else head.plus_start
            end = tail.end
            # "(555) 123-4567": the opening parenthesis belongs to the number.
            if start and text[start - 1] == "(" and ")" in text[start:end]:
                start -= 1
            found.append(PiiMatch(start, end, candidate.kind))
    return found


# --- Spelled letters and digits: IBANs and ids dictated character by character --------------

_NINO_COMPACT = re.compile(r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]")
_IBAN_COMPACT = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int
    end: int
    chars: str


def _spelled_sequences(text: str, tokens: list[_Token]) -> list[list[_Unit]]:
    """Runs of spelled characters: capital letters said one by one ("G B", "P X") or in
    capitals ("NWBK"), digits written or spoken, between the separators of number runs."""
    sequences: list[list[_Unit]] = []
    sequence: list[_Unit] = []
    has_letter = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        raw = text[token.start : token.end]
        unit: _Unit | None = None
        nxt = i + 1
        if token.kind == "num" and token.text.isdigit():
            unit = _Unit(token.start, token.end, token.text)
        elif token.kind == "word" and raw.isupper() and raw.isalpha() and len(raw) <= 4:
            unit = _Unit(token.start, token.end, raw)
            has_letter = True
        elif token.kind == "word" and (spoken := _spoken_atom(tokens, i)) is not None:
            unit = _Unit(token.start, tokens[spoken[1] - 1].end, spoken[0])
            nxt = spoken[1]
        if unit is not None:
            sequence.append(unit)
        elif not (
            sequence
            and (
                (token.kind == "other" and token.text in _SOFT_SEPARATORS)
                or (token.kind == "word" and token.text in _FILLERS)
            )
        ):
            if has_letter and len(sequence) > 1:
                sequences.append(sequence)
            sequence, has_letter = [], False
        i = nxt
    if has_letter and len(sequence) > 1:
        sequences.append(sequence)
    return sequences


def _spelled_kind(contexts: _Contexts, start: int, chars: str) -> PiiKind | None:
    if _IBAN_COMPACT.fullmatch(chars) and iban.is_valid(chars, check_country=False):
        return PiiKind.IBAN
    if len(chars) != 9 or contexts.before(start) is not _Context.ID:
        return None
    if _NINO_COMPACT.fullmatch(chars) or es_dni.is_valid(chars) or es_nie.is_valid(chars):
        return PiiKind.ID
    return None


def _spelled(text: str, tokens: list[_Token], contexts: _Contexts) -> list[PiiMatch]:
    found: list[PiiMatch] = []
    for sequence in _spelled_sequences(text, tokens):
        first = 0
        while first < len(sequence):
            best: tuple[int, PiiKind] | None = None
            chars = ""
            for last in range(first, len(sequence)):
                chars += sequence[last].chars
                if len(chars) > 34:
                    break
                kind = _spelled_kind(contexts, sequence[first].start, chars)
                if kind is not None:
                    best = (last, kind)
            if best is None:
                first += 1
                continue
            found.append(PiiMatch(sequence[first].start, sequence[best[0]].end, best[1]))
            first = best[0] + 1
    return found


# --- Resolution ------------------------------------------------------------------------------

_PRIORITY = {PiiKind.EMAIL: 0, PiiKind.IBAN: 1, PiiKind.CARD: 2, PiiKind.ID: 3, PiiKind.PHONE: 4}


def _without_overlaps(candidates: list[PiiMatch]) -> list[PiiMatch]:
    """The longest spans win; on equal length, the more specific kind."""
    kept: list[PiiMatch] = []
    for match in sorted(candidates, key=lambda m: (m.start - m.end, _PRIORITY[m.kind], m.start)):
        if all(match.end <= k.start or match.start >= k.end for k in kept):
            kept.append(match)
    return sorted(kept, key=lambda m: m.start)


if __name__ == "__main__":
    import sys

    for line in sys.stdin:
        sys.stdout.write(redact_pii(line))
