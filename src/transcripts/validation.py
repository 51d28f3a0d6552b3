"""Turn pydantic's validation errors into field-level messages that never echo the input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["field_errors"]

_LOCATIONS = {"path", "query", "header", "body", "cookie"}

# Messages for error types whose pydantic text quotes part of the submitted value.
_MESSAGES = {
    "uuid_parsing": "Must be a valid UUID.",
    "uuid_type": "Must be a valid UUID.",
    "uuid_version": "Must be a valid UUID.",
    "json_invalid": "The body is not valid JSON.",
}


def field_errors(errors: Sequence[Any]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            # Its location is a character offset into the body, not a field.
            field = "body"
        elif location and location[0] in _LOCATIONS:
            field = ".".join(location[1:]) or location[0]
        else:
            field = ".".join(location) or "detail"
        message = _MESSAGES.get(error.get("type", ""), error.get("msg", "Invalid value."))
        result.setdefault(field, []).append(message)
    return result
