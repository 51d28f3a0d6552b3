"""Domain errors. Each carries its HTTP status; each dialect renders it in its own body.

    TranscriptsError                 500  anything unexpected we chose to name
    ├── BadRequest                   400  malformed id, parameter or body (field-level errors)
    ├── NotAuthenticated             401  missing, invalid, expired or revoked credentials
    ├── Forbidden                    403  e.g. a widget origin not on the allow-list
    ├── NotFound                     404  missing, or not the caller's: the two are one answer
    ├── MethodNotAllowed             405
    ├── RequestTimeout               408  a request head not complete in time (the server's)
    ├── Conflict                     409  a rewrite of a stored turn, a write after finalize
    ├── PayloadTooLarge              413
    ├── RateLimited                  429
    ├── HeadersTooLarge              431  a header block or a credential over its limit
    └── ServiceUnavailable           503  the database cannot be reached

Repositories and services raise these; none of them knows about HTTP responses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "SESSION_NOT_FOUND",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "HeadersTooLarge",
    "MethodNotAllowed",
    "NotAuthenticated",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "ServiceUnavailable",
    "TranscriptsError",
]

FieldErrors = Mapping[str, Sequence[str]]

SESSION_NOT_FOUND = "Session not found."


class TranscriptsError(Exception):
    status_code = 500
    default_message = "The server could not complete the request."

    def __init__(self, message: str | None = None, errors: FieldErrors | None = None) -> None:
        self.message = message or self.default_message
        self.errors: dict[str, list[str]] = (
            {field: list(messages) for field, messages in errors.items()}
            if errors
            else {"detail": [self.message]}
        )
        super().__init__(self.message)


class BadRequest(TranscriptsError):
    status_code = 400
    default_message = "The request is invalid."


class NotAuthenticated(TranscriptsError):
    status_code = 401
    default_message = "Authentication credentials were not provided."


class Forbidden(TranscriptsError):
    status_code = 403
    default_message = "You do not have permission to perform this action."


class NotFound(TranscriptsError):
    status_code = 404
    default_message = "Not found."


class Conflict(TranscriptsError):
    status_code = 409
    default_message = "The request conflicts with stored data."


class RequestTimeout(TranscriptsError):
    status_code = 408
    default_message = "The request head did not arrive in time."


class PayloadTooLarge(TranscriptsError):
    status_code = 413
    default_message = "The request body is too large."


class HeadersTooLarge(TranscriptsError):
    status_code = 431
    default_message = "The request headers are too large."


class RateLimited(TranscriptsError):
    """Over a rate limit or a concurrency limit; ``retry_after`` is the client's wait, in
    seconds (the dialects send it as ``Retry-After``)."""

    status_code = 429
    default_message = "Request was throttled."

    def __init__(
        self,
        message: str | None = None,
        errors: FieldErrors | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, errors)
        self.retry_after = retry_after


class ServiceUnavailable(TranscriptsError):
    status_code = 503
    default_message = "The service is temporarily unavailable; try again shortly."


class MethodNotAllowed(TranscriptsError):
    status_code = 405
    default_message = "Method not allowed."
