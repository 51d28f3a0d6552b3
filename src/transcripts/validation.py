"""Turn pydantic's validation errors into field-level messages that never echo the input,
and find the values in a JSON body that the service could not store and give back."""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from transcripts.errors import BadRequest

__all__ = ["as_utc", "field_errors", "unstorable_values"]

_LOCATIONS = {"path", "query", "header", "body", "cookie"}

# Messages for error types whose pydantic text quotes part of the submitted value.
_MESSAGES = {
    "uuid_parsing": "Must be a valid UUID.",
    "uuid_type": "Must be a valid UUID.",
    "uuid_version": "Must be a valid UUID.",
    "json_invalid": "The body is not valid JSON.",
    "extra_forbidden": "Unknown field: not accepted here.",
}


def field_errors(errors: Sequence[Any]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            # Its location is a character offset into the body, not a field.
            field = "body"
        elif error.get("type") == "extra_forbidden" and not _FIELD_NAME.fullmatch(location[-1]):
            # A name chosen by the client is echoed only when it looks like a field's.
            field = ".".join(location[1:-1]) or location[0]
        elif location and location[0] in _LOCATIONS:
            field = ".".join(location[1:]) or location[0]
        else:
            field = ".".join(location) or "detail"
        message = _MESSAGES.get(error.get("type", ""), error.get("msg", "Invalid value."))
        result.setdefault(field, []).append(message)
    return result


# PostgreSQL text cannot hold U+0000, and no UTF-8 encoder takes a lone surrogate (Python's
# JSON parser lets both through, from \u escapes and, for surrogates, from raw bytes too).
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
_INT64 = range(-(2**63), 2**63)
# Locations name at most two levels ("0.text", "metadata"), and only with names that look
# like a schema's fields: a key chosen by the client is never echoed back.
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_MAX_LOCATION_DEPTH = 2

_TEXT = "Must not contain the character U+0000 (NUL) or an unpaired surrogate."
_INTEGER = f"Integers must be between {_INT64.start} and {_INT64.stop - 1}."
_NUMBER = "Must be a finite number."


def unstorable_values(body: bytes) -> dict[str, list[str]]:
    """Field-level errors for values JSON can carry but the service cannot keep unchanged:
    the text above, integers beyond 64 bits (the JSON columns' encoder refuses them) and
    NaN or Infinity (not JSON, though Python's parser accepts them).

    A body that does not parse is left to the route's own validation to report.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    problems: dict[str, list[str]] = {}
    # Iterative, so nesting as deep as the parser allows cannot exhaust the stack here;
    # breadth first, so the errors come in the body's order.
    pending: deque[tuple[Any, str, int]] = deque([(document, "body", 0)])
    while pending:
        value, location, depth = pending.popleft()
        problem = None
        if isinstance(value, str):
            problem = _TEXT if _UNSTORABLE_CHARACTERS.search(value) else None
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            problem = None if value in _INT64 else _INTEGER
        elif isinstance(value, float):
            problem = None if math.isfinite(value) else _NUMBER
        elif isinstance(value, dict):
            for key, item in value.items():
                if _UNSTORABLE_CHARACTERS.search(key):
                    _add(problems, location, _TEXT)
                pending.append((item, *_child(location, key, depth)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                pending.append((item, *_child(location, index, depth)))
        if problem is not None:
            _add(problems, location, problem)
    return problems


def _child(location: str, part: str | int, depth: int) -> tuple[str, int]:
    """The location of a member and its depth; past the naming limit, the location stays."""
    if depth >= _MAX_LOCATION_DEPTH or (isinstance(part, str) and not _FIELD_NAME.fullmatch(part)):
        return location, _MAX_LOCATION_DEPTH
    name = str(part)
    return (name if location == "body" else f"{location}.{name}"), depth + 1


def _add(problems: dict[str, list[str]], location: str, message: str) -> None:
    messages = problems.setdefault(location, [])
    if message not in messages:
        messages.append(message)


def as_utc(moment: datetime | None, field: str) -> datetime | None:
    """``moment`` in UTC, the zone every stored time is in; without an offset it is read as
    UTC. A moment whose UTC date falls outside years 1 to 9999 is a 400, not an overflow
    deep in a database driver."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise BadRequest(
            f"Invalid {field}.", {field: ["Out of range once converted to UTC."]}
        ) from None
